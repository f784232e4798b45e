"""Breaks G3 (picklable): the strategy instance holds a ``threading.Lock``, so it cannot be pickled.

A process strategy (the reference ``ipc``, subclassed) that counts its runs under a lock kept on the
instance. Anything that ships the strategy to another process — a launcher that spawns the training
script's main function with its configured strategy, a ``multiprocessing`` pool — fails with
``TypeError: cannot pickle '_thread.lock' object``.
"""

from __future__ import annotations

import threading

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.inter_process import InterProcessExecutionStrategy
from agentlightning.store.base import LightningStore

__all__ = ["BREAKS", "UnpicklableLockStrategy"]

BREAKS = "G3"


class UnpicklableLockStrategy(InterProcessExecutionStrategy):
    """``ipc`` with a run counter guarded by an instance lock."""

    def __init__(
        self,
        n_runners: int = 1,
        graceful_timeout: float = 1.0,
        terminate_timeout: float = 1.0,
        start_method: str | None = None,
    ) -> None:
        super().__init__(n_runners, graceful_timeout, terminate_timeout, start_method)
        self._runs_lock = threading.Lock()
        self.runs = 0

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        with self._runs_lock:
            self.runs += 1
        super().execute(algorithm, runner, store)
