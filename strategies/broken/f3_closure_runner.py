"""Breaks F3 (start-methods): the runner handed to worker processes is a local closure.

A process strategy (the reference ``ipc``, subclassed, developed with the ``fork`` start method) that
wraps the runner bundle in a tracing closure before handing it to the worker processes. Under ``fork``
nothing is pickled and it works; under ``spawn`` and ``forkserver`` — which the manifest still claims —
the closure cannot be pickled and no runner ever starts.
"""

from __future__ import annotations

import logging
import time
from typing import cast

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.events import ExecutionEvent
from agentlightning.execution.inter_process import InterProcessExecutionStrategy
from agentlightning.store.base import LightningStore

__all__ = ["BREAKS", "ClosureRunnerStrategy"]

BREAKS = "F3"

logger = logging.getLogger(__name__)


class ClosureRunnerStrategy(InterProcessExecutionStrategy):
    """``ipc`` defaulting to fork, with the runner wrapped in a closure."""

    def __init__(
        self,
        n_runners: int = 1,
        graceful_timeout: float = 1.0,
        terminate_timeout: float = 1.0,
        start_method: str | None = "fork",
    ) -> None:
        super().__init__(n_runners, graceful_timeout, terminate_timeout, start_method)

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        async def traced_runner(runner_store: LightningStore, worker_id: int, event: ExecutionEvent) -> None:
            started = time.monotonic()
            try:
                await runner(runner_store, worker_id, event)
            finally:
                logger.debug("runner %d ran %.3f s", worker_id, time.monotonic() - started)

        super().execute(algorithm, cast(RunnerBundle, traced_runner), store)
