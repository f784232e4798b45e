"""Breaks E5 (startup-error): a runner that fails at once hangs ``execute()``.

"Start the runners first and wait until every one of them is up, so the algorithm never enqueues work
for nobody": the strategy waits for each runner's event loop to be running before it starts the
algorithm. A runner that fails immediately has already closed its loop, is never seen "up", and the
wait goes on forever (it does not watch the event, nor the runner's end).
"""

from __future__ import annotations

import asyncio
import concurrent.futures

from strategies.thread_pool import Bundle, Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "WaitsForRunnersReadyStrategy"]

BREAKS = "E5"

_READY_POLL = 0.01


class WaitsForRunnersReadyStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, starting the algorithm only once every runner's loop runs."""

    async def _start(
        self, run: Run, pool: concurrent.futures.ThreadPoolExecutor, bundles: list[Bundle]
    ) -> dict[asyncio.Future[None], Bundle]:
        algorithm, runners = bundles[0], bundles[1:]
        running = await super()._start(run, pool, runners)
        for bundle in runners:
            while bundle.loop is None or not bundle.loop.is_running():
                await asyncio.sleep(_READY_POLL)
        running.update(await super()._start(run, pool, [algorithm]))
        return running
