"""Breaks R5 (no-asyncio-leak): a watchdog task is left pending when a bundle's loop closes.

Each bundle's loop also runs a small watchdog task (it would log a bundle that runs for more than an
hour). The loop is then closed with a bare ``loop.close()``: the watchdog is never cancelled, and when
it is garbage-collected asyncio reports "Task was destroyed but it is pending!".
"""

from __future__ import annotations

import asyncio
import logging

from strategies.thread_pool import Bundle, Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "WatchdogTaskPendingStrategy"]

BREAKS = "R5"

logger = logging.getLogger(__name__)


async def _watchdog(name: str) -> None:
    await asyncio.sleep(3600)
    logger.warning("%s has been running for an hour", name)


class WatchdogTaskPendingStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example with a per-loop watchdog and a bare ``loop.close()``."""

    async def _guarded(self, run: Run, bundle: Bundle) -> None:
        watchdog = asyncio.ensure_future(_watchdog(bundle.name))
        logger.debug("watchdog %s armed for %s", watchdog.get_name(), bundle.name)
        await super()._guarded(run, bundle)

    @staticmethod
    def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
        loop.close()
