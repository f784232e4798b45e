"""Breaks R7 (caller-state-restored): ``ray.shutdown()`` after every run, of a connection the caller opened.

The reference ``ray`` strategy, subclassed to "leave no Ray state behind for the next run" by calling
``ray.shutdown()`` once ``execute()`` is done, whoever connected. When the caller had called
``ray.init()`` itself (a training script whose other parts use Ray too), that closes the caller's
connection under it, and when the caller's ``ray.init()`` had started a local cluster, it stops that
cluster: the caller's next Ray call fails or silently starts a new cluster. Only what ``execute()``
started is its to undo.
"""

from __future__ import annotations

import ray

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.ray_actors import RayExecutionStrategy
from agentlightning.store.base import LightningStore

__all__ = ["BREAKS", "NEEDS", "RayShutdownNotItsOwnStrategy"]

BREAKS = "R7"
NEEDS = "ray"  # the optional extra it is built on: skipped, with the reason, without it


class RayShutdownNotItsOwnStrategy(RayExecutionStrategy):
    """``ray``, with an unconditional ``ray.shutdown()`` after each run."""

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        try:
            super().execute(algorithm, runner, store)
        finally:
            ray.shutdown()
