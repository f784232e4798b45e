"""Breaks R6 (repeat-stable): every ``execute()`` keeps a 4 MiB trace buffer in a class-level list.

"Keep the last run's trace for post-mortem debugging" — but the list is never trimmed: each run adds
4 MiB, so a process that calls ``execute()`` many times (a sweep, a long-lived service) grows without
bound. One run on its own looks clean.
"""

from __future__ import annotations

from typing import ClassVar

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.events import ExecutionEvent
from agentlightning.store.base import LightningStore
from strategies.thread_pool import Bundle, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "TraceBuffersAccumulateStrategy"]

BREAKS = "R6"

_TRACE_BYTES = 4 * 1024 * 1024


class TraceBuffersAccumulateStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example plus a per-run trace buffer that is never dropped."""

    traces: ClassVar[list[bytes]] = []

    def _bundles(
        self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore, event: ExecutionEvent
    ) -> list[Bundle]:
        self.traces.append(b"\0trace" * (_TRACE_BYTES // 6))  # written, so the pages are really resident
        return super()._bundles(algorithm, runner, store, event)
