"""Breaks E5 (startup-error): a runner that fails at once hangs ``execute()``.

"Start the runners first and wait until every one of them is at work, so the algorithm never enqueues
work for nobody": the strategy starts the algorithm only once each runner's bundle has got past its first
step and is still running. A runner that fails at once never gets there, and the wait goes on forever: it
watches neither the event nor the runner's end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from strategies.thread_pool import Bundle, Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "WaitsForRunnersReadyStrategy"]

BREAKS = "E5"

_READY_POLL = 0.01


class WaitsForRunnersReadyStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, starting the algorithm only once every runner is at work."""

    async def _start(
        self, run: Run, pool: concurrent.futures.ThreadPoolExecutor, bundles: list[Bundle]
    ) -> dict[asyncio.Future[None], Bundle]:
        algorithm, runners = bundles[0], bundles[1:]
        self._at_work = {bundle.name: threading.Event() for bundle in runners}
        running = await super()._start(run, pool, runners)
        for bundle in runners:
            while not self._at_work[bundle.name].is_set():
                await asyncio.sleep(_READY_POLL)
        running.update(await super()._start(run, pool, [algorithm]))
        return running

    async def _guarded(self, run: Run, bundle: Bundle) -> None:
        at_work = getattr(self, "_at_work", {}).get(bundle.name)
        task = asyncio.current_task()
        if at_work is not None and task is not None:
            # Queued behind this task's first step: by then the bundle either waits on something (at
            # work) or has already finished.
            asyncio.get_running_loop().call_soon(lambda: task.done() or at_work.set())
        await super()._guarded(run, bundle)
