"""Child process for the example strategies' SIGINT tests: runs one scenario, prints one JSON line, exits.

Each scenario delivers a first SIGINT while every bundle runs, then a second one at the worst moment of the
strategy's teardown (K5): while ``single_loop`` closes its event loop, while ``thread_pool`` joins its
pool. The second signal is sent from inside the teardown call itself, so the moment is exact, not timed.
Usage: ``python examples_child.py single-loop|thread-pool``.
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
from agentlightning.execution.events import wait_async
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


def main(which: str) -> dict[str, Any]:
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
