"""Breaks R4 (no-ipc-leak): a named multiprocessing semaphore is created per run and never released.

The strategy limits concurrent store writes with a ``multiprocessing`` semaphore ("it will work across
processes too, later"), made with the spawn context, and keeps it in a module-level cache keyed by run:
it is never unlinked, and the resource tracker reports it leaked when the process exits.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.events import ExecutionEvent
from agentlightning.store.base import LightningStore
from strategies.thread_pool import Bundle, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "SemaphoreLeakedStrategy"]

BREAKS = "R4"

_write_limits: list[Any] = []


class SemaphoreLeakedStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example plus a named semaphore that is never unlinked."""

    def _bundles(
        self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore, event: ExecutionEvent
    ) -> list[Bundle]:
        _write_limits.append(multiprocessing.get_context("spawn").Semaphore(4))
        return super()._bundles(algorithm, runner, store, event)
