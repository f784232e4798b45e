"""Breaks F1 (worker-killed): a runner process killed by a signal is reported as a bare "a runner failed".

A process strategy (the reference ``ipc``, subclassed) that hides its internal exception types from
users: ``WorkerDied`` (which names the worker, its pid and its exit status) is replaced by
``RuntimeError("a runner process failed")``. The user learns that something died, not which process
nor how (OOM-killed? segfault?).
"""

from __future__ import annotations

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.inter_process import InterProcessExecutionStrategy
from agentlightning.execution.processes import WorkerDied
from agentlightning.store.base import LightningStore

__all__ = ["BREAKS", "WorkerDeathRewrappedStrategy"]

BREAKS = "F1"


class WorkerDeathRewrappedStrategy(InterProcessExecutionStrategy):
    """``ipc``, with worker deaths reported without worker or exit status."""

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        try:
            super().execute(algorithm, runner, store)
        except WorkerDied:
            raise RuntimeError("a runner process failed") from None
