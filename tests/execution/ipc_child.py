"""Child script for the ``ipc`` SIGINT and parent-death tests (K3, K4, K5, F4): signals never reach pytest.

Usage: ``python ipc_child.py MODE START_METHOD DIRECTORY``. It runs one ``execute()`` with the bundles of
``ipc_bundles``; a helper thread waits for a journal handshake, then delivers the signal. The last stdout
line is a JSON result: how ``execute()`` ended, seconds from the signal, leftover child processes and
threads. Modes:

- ``before-start``: SIGINT while ``execute()`` is starting up, before any bundle runs.
- ``while-running``: SIGINT to this process once every bundle runs.
- ``group``: SIGINT to the whole process group once every bundle runs (a terminal's Ctrl+C).
- ``event-set``: SIGINT after a runner set the event, while the others still run.
- ``during-shutdown``: SIGINT after the algorithm returned, while runners ignore the stop.
- ``second``: runners ignore the stop under a 60 s grace; a second SIGINT must hurry the shutdown.
- ``parent-death``: nothing is signalled here; the test SIGKILLs this process (F4).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

import psutil
from ipc_bundles import Algorithm, Runner, read_journal

from agentlightning.execution.inter_process import InterProcessExecutionStrategy
from agentlightning.store.ipc import IpcStoreServer
from agentlightning.store.memory import InMemoryLightningStore

HANG = 60.0
N_RUNNERS = 2


def _await_lines(directory: str, lines: list[str]) -> None:
    deadline = time.monotonic() + HANG
    while not all(line in read_journal(directory) for line in lines):
        if time.monotonic() > deadline:
            os._exit(3)
        time.sleep(0.002)


def _leftover_children() -> list[str]:
    """Live descendants other than multiprocessing's own long-lived helpers."""
    helpers = ("forkserver", "resource_tracker")
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(f"zombie {child.pid}")
            elif not any(h in " ".join(child.cmdline()) for h in helpers):
                found.append(f"{child.pid} {child.cmdline()}")
        except psutil.NoSuchProcess:
            pass
    return found


def main(mode: str, start_method: str, directory: str) -> None:
    grace = HANG if mode == "second" else 1.0
    strategy = InterProcessExecutionStrategy(
        n_runners=N_RUNNERS, graceful_timeout=grace, terminate_timeout=1.0, start_method=start_method
    )
    started = [f"runner {i} started" for i in range(N_RUNNERS)] + [
        "algorithm started pid=" + str(os.getpid())
    ]
    algorithm = Algorithm(directory, "wait", N_RUNNERS)
    runner = Runner(directory)
    sent: list[float] = []

    def send(target: str = "self") -> None:
        sent.append(time.monotonic())
        if target == "group":
            os.killpg(os.getpgrp(), signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGINT)

    def deliver() -> None:
        if mode in ("while-running", "group"):
            _await_lines(directory, started)
            send("group" if mode == "group" else "self")
        elif mode == "event-set":
            _await_lines(directory, [*started, "runner 1 end"])
            send()
        elif mode == "during-shutdown":
            _await_lines(directory, ["algorithm end event=False"])  # it returned; the stop follows
            send()
        elif mode == "second":
            _await_lines(directory, started)
            send()
            # The algorithm is over (returned on the stop, or interrupted where it stood): the stop began.
            _await_lines(directory, ["algorithm finally"])
            send()

    if mode == "event-set":
        runner = Runner(directory, kinds={1: "set"})
    elif mode in ("during-shutdown", "second"):
        runner = Runner(directory, default="ignore")
        if mode == "during-shutdown":
            algorithm = Algorithm(directory, "return", N_RUNNERS)
    elif mode == "before-start":
        original = IpcStoreServer.start

        def start_then_interrupt(self: IpcStoreServer) -> None:
            send()
            original(self)

        IpcStoreServer.start = start_then_interrupt  # type: ignore[method-assign]

    helper = threading.Thread(target=deliver, name="test-sigint", daemon=True)
    if mode != "before-start":
        helper.start()
    threads_before = {t.name for t in threading.enumerate()}
    outcome = "returned"
    try:
        strategy.execute(algorithm, runner, InMemoryLightningStore())
    except KeyboardInterrupt:
        outcome = "KeyboardInterrupt"
    except BaseException as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    ended = time.monotonic()
    if helper.is_alive():
        helper.join(HANG)
    result: dict[str, Any] = {
        "outcome": outcome,
        "seconds_after_signal": [ended - t for t in sent],
        "leftover_children": _leftover_children(),
        "new_threads": sorted({t.name for t in threading.enumerate()} - threads_before - {"test-sigint"}),
        "sigint_handler_restored": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        "journal": read_journal(directory),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
