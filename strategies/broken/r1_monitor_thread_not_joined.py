"""Breaks R1 (no-thread-leak): a progress-monitor thread is started and never joined.

The strategy starts a helper thread that logs progress every few seconds while the run lasts. It checks
the event only between its sleeps and ``execute()`` never joins it, so it outlives every ``execute()``
by up to one tick (5 s): a caller running ``execute()`` in a loop accumulates them.
"""

from __future__ import annotations

import logging
import threading
import time

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.events import ExecutionEvent
from agentlightning.store.base import LightningStore
from strategies.thread_pool import Bundle, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "MonitorThreadNotJoinedStrategy"]

BREAKS = "R1"

logger = logging.getLogger(__name__)

_TICK = 5.0


def _monitor(event: ExecutionEvent) -> None:
    started = time.monotonic()
    while True:
        time.sleep(_TICK)
        if event.is_set():
            return
        logger.info("run in progress for %.0f s", time.monotonic() - started)


class MonitorThreadNotJoinedStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example plus a progress monitor thread nobody joins."""

    def _bundles(
        self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore, event: ExecutionEvent
    ) -> list[Bundle]:
        threading.Thread(target=_monitor, args=(event,), name="progress-monitor", daemon=True).start()
        return super()._bundles(algorithm, runner, store, event)
