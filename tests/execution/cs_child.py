"""Child process for the ``cs`` tests that involve signals or several ``execute()`` processes.

SIGINT must never reach pytest, and the multi-machine shape needs two processes, so those scenarios run
here: ``python cs_child.py SCENARIO JOURNAL_DIR [ARGS...]``. A helper thread waits for a handshake (journal
entries, or a log message of the strategy) and only then delivers the signal. The last stdout line is a
JSON report: how ``execute()`` ended, and which threads and worker processes were left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import psutil
from claims_bundles import AwaitGivenUp, ClaimThenDie
from cs_bundles import HANG, Journal, ScriptedAlgorithm, ScriptedRunner

from agentlightning.execution.client_server import ClientServerExecutionStrategy
from agentlightning.store.memory import InMemoryLightningStore

WAIT_EVENT_STEPS = (("wait_event",),)
SHARED_TOKEN = "two-machines-shared-token"  # what the algorithm and runner sides both configure


class _LogGate(logging.Handler):
    """Sets ``seen`` when the strategy logs a message containing ``needle``; keeps the message."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.seen = threading.Event()
        self.message = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.needle in message:
            self.message = message
            self.seen.set()


def _sigint_when(condition: Any, times: int = 1, between: Any = None) -> threading.Thread:
    def deliver() -> None:
        condition()
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(times - 1):
            if between is not None:
                between()
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=deliver, name="test-sigint", daemon=True)
    thread.start()
    return thread


def _leftovers() -> dict[str, Any]:
    threads = [
        t.name for t in threading.enumerate() if t is not threading.main_thread() and t.name != "test-sigint"
    ]
    children = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
            if "forkserver" in cmdline or "resource_tracker" in cmdline:
                continue  # multiprocessing's own helpers, kept for the life of the interpreter
            children.append(f"{child.pid} {child.status()} {cmdline[:80]}")
        except psutil.NoSuchProcess:
            continue
    return {"threads": threads, "children": children}


def _run(strategy: ClientServerExecutionStrategy, algorithm: Any, runner: Any, store: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        strategy.execute(algorithm, runner, store)
        outcome = "returned"
    except KeyboardInterrupt:
        outcome = "KeyboardInterrupt"
    except BaseException as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    return {"outcome": outcome, "seconds": time.monotonic() - started, **_leftovers()}


def main() -> None:
    scenario, directory = sys.argv[1], sys.argv[2]
    journal = Journal(directory)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    gate = _LogGate("cs: serving the store at")
    logging.getLogger("agentlightning").addHandler(gate)
    store = InMemoryLightningStore()
    n = 2
    wait_all = (("wait_journal", "runner 0", "start"), ("wait_journal", "runner 1", "start"))
    cooperative_runner = ScriptedRunner(journal, (("wait_event",),))
    report: dict[str, Any]

    if scenario == "sigint_running":  # K3: every bundle runs
        strategy = ClientServerExecutionStrategy(n_runners=n, graceful_timeout=10)
        _sigint_when(
            lambda: [journal.wait_for_sync(who, "start") for who in ("algorithm", "runner 0", "runner 1")]
        )
        report = _run(strategy, ScriptedAlgorithm(journal, (("wait_event",),)), cooperative_runner, store)
    elif scenario == "sigint_before_start":  # K3: server up, no bundle started yet
        strategy = ClientServerExecutionStrategy(n_runners=n, graceful_timeout=10)
        _sigint_when(lambda: gate.seen.wait(HANG))
        report = _run(strategy, ScriptedAlgorithm(journal, (("wait_event",),)), cooperative_runner, store)
    elif scenario == "sigint_shutdown":  # K3: the algorithm returned, runners linger past the event
        strategy = ClientServerExecutionStrategy(n_runners=n, graceful_timeout=20)
        lingering = ScriptedRunner(journal, (("sleep", 60),))
        _sigint_when(lambda: journal.wait_for_sync("algorithm", "end"))
        report = _run(strategy, ScriptedAlgorithm(journal, wait_all), lingering, store)
    elif scenario == "sigint_event_set":  # K3: the event is already set, the algorithm is in its grace
        strategy = ClientServerExecutionStrategy(n_runners=n, graceful_timeout=2)
        algorithm = ScriptedAlgorithm(journal, (*wait_all, ("set_event",), ("sleep", 60)))
        _sigint_when(lambda: journal.wait_for_sync("algorithm", "set event"))
        report = _run(strategy, algorithm, cooperative_runner, store)
    elif scenario == "second_sigint":  # K5: nobody cooperates, grace is long; two Ctrl+C end it fast
        strategy = ClientServerExecutionStrategy(n_runners=n, graceful_timeout=30)
        gate2 = _LogGate("SIGINT: stopping every bundle")
        logging.getLogger("agentlightning").addHandler(gate2)
        _sigint_when(
            lambda: journal.wait_for_sync("runner 1", "start"),
            times=2,
            between=lambda: gate2.seen.wait(HANG),
        )
        report = _run(
            strategy,
            ScriptedAlgorithm(journal, (*wait_all, ("sleep", 60))),
            ScriptedRunner(journal, (("sleep", 60),)),
            store,
        )
    elif scenario == "third_sigint":  # K5: the algorithm swallows every cancellation; the third abandons it
        strategy = ClientServerExecutionStrategy(n_runners=n, graceful_timeout=30)
        first = _LogGate("SIGINT: stopping every bundle")
        logging.getLogger("agentlightning").addHandler(first)
        waits = [
            lambda: first.seen.wait(HANG),  # the first is handled: the stop with grace began
            lambda: journal.wait_for_sync("algorithm", "swallowed a cancellation"),  # the second cancelled
        ]

        def next_wait() -> None:
            waits.pop(0)()

        _sigint_when(lambda: journal.wait_for_sync("algorithm", "swallowing"), times=3, between=next_wait)
        report = _run(
            strategy,
            ScriptedAlgorithm(journal, (*wait_all, ("swallow_cancellation", HANG))),
            ScriptedRunner(journal, (("sleep", 60),)),
            store,
        )
    elif scenario in ("group", "parent_death"):  # K4 / F4: the test signals us from outside
        strategy = ClientServerExecutionStrategy(n_runners=n, graceful_timeout=10)

        def announce() -> None:
            journal.wait_for_sync("runner 0", "start")
            journal.wait_for_sync("runner 1", "start")
            print("READY", flush=True)

        threading.Thread(target=announce, name="test-sigint", daemon=True).start()
        steps = (("wait_event",),) if scenario == "group" else (("block", 60),)
        report = _run(strategy, ScriptedAlgorithm(journal, steps), ScriptedRunner(journal, steps), store)
    elif scenario == "algorithm_role":  # the multi-machine shape, algorithm side: tell the test our URL
        strategy = ClientServerExecutionStrategy(
            role="algorithm", server_port=0, graceful_timeout=5, server_token=SHARED_TOKEN
        )

        def announce() -> None:
            gate.seen.wait(HANG)
            print("SERVING", gate.message.split()[5], flush=True)

        threading.Thread(target=announce, name="test-sigint", daemon=True).start()
        scripts = {
            "work": (("enqueue_and_wait", 20),),
            "l3": (
                ("wait_journal", "runner 0", "end"),
                ("wait_journal", "runner 1", "end"),
                ("event_state",),
            ),
            "l4": (("wait_event",),),
        }
        algorithm: Any
        if sys.argv[3] == "t3":  # wait until the claim of the runner that dies over there is given up
            algorithm = AwaitGivenUp(directory)
        else:
            algorithm = ScriptedAlgorithm(journal, scripts[sys.argv[3]])
        report = _run(strategy, algorithm, None, store)
        report["statuses"] = sorted({r.status for r in asyncio.run(store.query_rollouts())})
    elif scenario == "runner_role":
        strategy = ClientServerExecutionStrategy(
            role="runner", server_port=int(sys.argv[3]), n_runners=n, server_token=SHARED_TOKEN
        )
        runners = {
            "work": ScriptedRunner(journal, (("work",),)),
            "l3": ScriptedRunner(journal, ()),
            "l4": ScriptedRunner(journal, WAIT_EVENT_STEPS, per_worker={1: (("set_event",),)}),
            "t3": ClaimThenDie(directory, "sigkill"),
        }
        report = _run(strategy, None, runners[sys.argv[4]], None)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
