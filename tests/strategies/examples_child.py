"""Child process for the example strategies' SIGINT tests: runs one scenario, prints one JSON line, exits.

Each scenario delivers a first SIGINT while every bundle runs, then a second one at the worst moment of the
strategy's teardown (K5): while ``single_loop`` closes its event loop, while ``thread_pool`` joins its
pool. The second signal is sent from inside the teardown call itself, so the moment is exact, not timed.
``thread-pool-event-lock`` instead delivers one SIGINT while the main thread holds the stop event's own
lock (as ``wait_async`` removes its waker): a handler that takes that lock again would deadlock.
Usage: ``python examples_child.py single-loop|thread-pool|thread-pool-event-lock``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import sys
import threading
from typing import Any

from agentlightning import ExecutionEvent, InMemoryLightningStore
from agentlightning.execution.events import ThreadingEvent, wait_async
from strategies.single_loop import SingleLoopExecutionStrategy
from strategies.thread_pool import ThreadPoolExecutionStrategy

HANG_BOUND = 30.0

second_sent = threading.Event()
loops: list[asyncio.AbstractEventLoop] = []


def _send_second_sigint() -> None:
    if not second_sent.is_set():
        second_sent.set()
        os.kill(os.getpid(), signal.SIGINT)


class _LoopClosingUnderCtrlC(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        loops.append(self)

    def close(self) -> None:
        if not self.is_closed():
            _send_second_sigint()
        super().close()


class _Policy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _LoopClosingUnderCtrlC()


_original_shutdown = concurrent.futures.ThreadPoolExecutor.shutdown


def _shutdown_under_ctrl_c(self: concurrent.futures.ThreadPoolExecutor, *args: Any, **kwargs: Any) -> None:
    if self._thread_name_prefix == "thread-pool":  # the strategy's own pool, not a loop's default executor
        _send_second_sigint()
    _original_shutdown(self, *args, **kwargs)


class _BoundedLock:
    """A lock whose ``with`` gives up after the hang bound: a deadlock fails the scenario, never hangs it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=HANG_BOUND):
            raise RuntimeError(f"deadlock: the event's lock was not released within {HANG_BOUND} s")

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()


class _SigintUnderTheEventLock(ThreadingEvent):
    """Sends SIGINT to this process while the main thread holds this event's lock, once."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = _BoundedLock()  # type: ignore[assignment]
        self.sent = False
        self.main_waits = threading.Event()  # the supervisor (main thread) has registered its waker

    def _add_waker(self, wake: Any) -> bool:
        added = super()._add_waker(wake)
        if added and threading.current_thread() is threading.main_thread():
            self.main_waits.set()
        return added

    def _remove_waker(self, wake: Any) -> None:
        if self.sent or threading.current_thread() is not threading.main_thread():
            super()._remove_waker(wake)
            return
        with self._lock:
            self.sent = True
            signal.raise_signal(signal.SIGINT)  # Python runs the handler here, before the lock is released
            if wake in self._wakers:
                self._wakers.remove(wake)


class _ThreadPoolWithEventLockSigint(ThreadPoolExecutionStrategy):
    def __init__(self) -> None:
        super().__init__(n_runners=2, graceful_delay=HANG_BOUND)
        self.event = _SigintUnderTheEventLock()

    def _make_event(self) -> ThreadingEvent:
        return self.event


def event_lock_scenario() -> dict[str, Any]:
    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        # Returning sets the stop event; the supervisor's wait for it then removes its waker.
        await asyncio.to_thread(strategy.event.main_waits.wait, HANG_BOUND)

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        await wait_async(event, HANG_BOUND)

    strategy = _ThreadPoolWithEventLockSigint()
    before_threads = set(threading.enumerate())
    handler = signal.getsignal(signal.SIGINT)
    raised = "nothing"
    try:
        strategy.execute(algorithm, runner, InMemoryLightningStore())
    except KeyboardInterrupt:
        raised = "KeyboardInterrupt"
    except BaseException as exc:
        raised = f"{type(exc).__name__}: {exc}"
    return {
        "raised": raised,
        "sent": strategy.event.sent,
        "threads_left": [t.name for t in threading.enumerate() if t not in before_threads and t.is_alive()],
        "handler_restored": signal.getsignal(signal.SIGINT) is handler,
    }


def main(which: str) -> dict[str, Any]:
    if which == "thread-pool-event-lock":
        return event_lock_scenario()
    started = threading.Barrier(4)  # three bundles and the sender of the first SIGINT

    async def bundle(event: ExecutionEvent) -> None:
        await asyncio.to_thread(started.wait, HANG_BOUND)
        await wait_async(event, HANG_BOUND)

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        await bundle(event)

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        await bundle(event)

    strategy: Any
    if which == "single-loop":
        asyncio.set_event_loop_policy(_Policy())
        strategy = SingleLoopExecutionStrategy(n_runners=2, graceful_delay=HANG_BOUND)
    else:
        concurrent.futures.ThreadPoolExecutor.shutdown = _shutdown_under_ctrl_c  # type: ignore[method-assign,assignment]
        strategy = ThreadPoolExecutionStrategy(n_runners=2, graceful_delay=HANG_BOUND)
    before_threads = set(threading.enumerate())
    handler = signal.getsignal(signal.SIGINT)
    wakeup_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_fd)

    def first_sigint() -> None:
        started.wait(HANG_BOUND)
        os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=first_sigint, name="first-sigint")
    sender.start()
    raised = "nothing"
    try:
        strategy.execute(algorithm, runner, InMemoryLightningStore())
    except BaseException as exc:
        raised = type(exc).__name__
    sender.join(HANG_BOUND)
    return {
        "raised": raised,
        "second_sent": second_sent.is_set(),
        "loops_open": sum(not loop.is_closed() for loop in loops),
        "threads_left": [t.name for t in threading.enumerate() if t not in before_threads and t.is_alive()],
        "handler_restored": signal.getsignal(signal.SIGINT) is handler,
        "wakeup_fd_restored": signal.set_wakeup_fd(-1) == wakeup_fd,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
