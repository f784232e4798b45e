"""Child process for the ``shm`` SIGINT tests: runs one scenario, prints one JSON line, exits.

SIGINT must never reach the pytest process, so every signal scenario runs here. A helper thread waits for
a handshake (bundles report they are running, or the strategy logs that it handled a SIGINT) and only
then delivers the signal. Usage:
``python shm_child.py SCENARIO MAIN_THREAD N_RUNNERS [process|main-thread|other-thread]``.
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

from agentlightning.execution import threads as threads_module
from agentlightning.execution.events import ExecutionEvent, wait_async
from agentlightning.execution.shared_memory import SharedMemoryExecutionStrategy
from agentlightning.store.memory import InMemoryLightningStore

HANG_BOUND = 30.0

journal: list[str] = []
journal_lock = threading.Lock()
all_started = threading.Event()
shutting_down = threading.Event()
release = threading.Event()
swallowed = threading.Event()
started_count = 0


def note(entry: str) -> None:
    with journal_lock:
        journal.append(entry)


def started(n_bundles: int, who: str) -> None:
    global started_count
    note(f"{who} started")
    with journal_lock:
        started_count += 1
        if started_count == n_bundles:
            all_started.set()


class _LogGate(logging.Handler):
    """Sets a threading.Event when the strategy logs a message containing ``needle``."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


MAIN_IDENT = threading.main_thread().ident
HOW = sys.argv[4] if len(sys.argv) > 4 else "process"


def sigint() -> None:
    if HOW == "main-thread":  # as a terminal's Ctrl+C effectively does: the main thread receives it
        signal.pthread_kill(MAIN_IDENT, signal.SIGINT)  # type: ignore[arg-type]
    elif HOW == "other-thread":
        # Received by this helper thread: nothing interrupts the main thread's wait, only the wakeup fd
        # tells it (then the interpreter runs the Python-level handler on the main thread).
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
    else:
        # Process-directed from a thread of this process: Linux (>= 6.4) may hand it to this very
        # thread, so the strategy must wake its main thread by other means (the wakeup fd).
        os.kill(os.getpid(), signal.SIGINT)


def main() -> None:
    scenario, main_thread, n_runners = sys.argv[1], sys.argv[2], int(sys.argv[3])
    n_bundles = 1 + n_runners
    gate = _LogGate("SIGINT: stopping")
    logging.getLogger("agentlightning").addHandler(gate)
    logging.getLogger("agentlightning").setLevel(logging.INFO)
    signal_at: list[float] = []

    async def cooperative(who: str, event: ExecutionEvent) -> None:
        started(n_bundles, who)
        try:
            await wait_async(event, HANG_BOUND)
            note(f"{who} saw stop")
        finally:
            note(f"{who} finally")

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        if scenario == "blocking-main":
            started(n_bundles, "algorithm")
            try:
                # Sync code on the main thread: only Ctrl+C gets it out. Short sleeps, because CPython
                # loses a signal that arrives as a sleep begins until that sleep ends.
                deadline = time.monotonic() + HANG_BOUND
                while time.monotonic() < deadline:
                    time.sleep(0.01)
            except KeyboardInterrupt:
                note("algorithm got KeyboardInterrupt")
                raise
            return
        if scenario in ("shutdown", "second-sigint", "third-sigint"):
            started(n_bundles, "algorithm")
            while not all_started.is_set():
                await asyncio.sleep(0.001)
            note("algorithm returns")
            return
        await cooperative("algorithm", event)

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        who = f"runner {worker_id}"
        if scenario == "shutdown":
            started(n_bundles, who)
            await wait_async(event, HANG_BOUND)
            note(f"{who} stopping")
            shutting_down.set()
            while not release.is_set():  # a slow but cooperative shutdown, held open by the test
                await asyncio.sleep(0.002)
            note(f"{who} stopped")
            return
        if scenario == "second-sigint":
            started(n_bundles, who)
            try:
                await asyncio.sleep(HANG_BOUND)  # ignores the event: only cancellation ends it
            except asyncio.CancelledError:
                note(f"{who} cancelled")
                raise
            finally:
                note(f"{who} finally")
            return
        if scenario == "third-sigint":
            started(n_bundles, who)
            deadline = time.monotonic() + HANG_BOUND
            while time.monotonic() < deadline:  # swallows every cancellation: only abandoning ends the wait
                try:
                    await asyncio.sleep(HANG_BOUND)
                except asyncio.CancelledError:
                    note(f"{who} swallowed a cancellation")
                    swallowed.set()
            return
        await cooperative(who, event)

    def deliver() -> None:
        if scenario == "before-start":
            return
        if not all_started.wait(HANG_BOUND):
            return
        if scenario == "shutdown":
            shutting_down.wait(HANG_BOUND)
        signal_at.append(time.monotonic())
        sigint()
        if scenario == "shutdown":
            gate.seen.wait(HANG_BOUND)  # handled, then let the runners finish their shutdown
            release.set()
        if scenario in ("second-sigint", "third-sigint"):
            gate.seen.wait(HANG_BOUND)
            sigint()
        if scenario == "third-sigint":
            swallowed.wait(HANG_BOUND)
            sigint()

    if scenario == "before-start":
        original_start = threads_module.BundleGroup._start

        def start_after_sigint(self: Any, run: Any) -> None:
            signal_at.append(time.monotonic())
            signal.raise_signal(signal.SIGINT)  # lands in the strategy's own (protected) start-up code
            original_start(self, run)

        threads_module.BundleGroup._start = start_after_sigint  # type: ignore[method-assign]

    grace = 60.0 if scenario in ("second-sigint", "third-sigint") else 10.0
    strategy = SharedMemoryExecutionStrategy(
        n_runners=n_runners, main_thread=main_thread, graceful_delay=grace, join_timeout=10.0
    )
    caller_loop = asyncio.new_event_loop()
    asyncio.set_event_loop(caller_loop)
    handler_before = signal.getsignal(signal.SIGINT)
    threads_before = {t.ident for t in threading.enumerate()}
    helper = threading.Thread(target=deliver, name="sigint-helper", daemon=True)
    helper.start()
    outcome = "returned"
    try:
        strategy.execute(algorithm, runner, InMemoryLightningStore())
    except BaseException as exc:
        outcome = type(exc).__name__
    raised_at = time.monotonic()
    helper.join(HANG_BOUND)
    left = [t.name for t in threading.enumerate() if t.ident not in threads_before and t is not helper]
    result = {
        "outcome": outcome,
        "latency": raised_at - signal_at[0] if signal_at else None,
        "threads_left": left,
        "handler_restored": signal.getsignal(signal.SIGINT) is handler_before,
        "loop_restored": asyncio.get_event_loop_policy().get_event_loop() is caller_loop,
        "journal": journal,
    }
    asyncio.set_event_loop(None)
    caller_loop.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
