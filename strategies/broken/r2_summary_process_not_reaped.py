"""Breaks R2 (no-process-leak): a helper process started at the end of each run is never reaped (a zombie).

A process strategy (the reference ``ipc``, subclassed) that, after the run, forks a short-lived process
(``fork``: "the fastest start for a tiny helper") to write a run summary ("so the caller does not wait
for the disk") and never joins it. The helper
exits at once, but nobody waits for it: it stays a zombie in the process table until the caller exits.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.inter_process import InterProcessExecutionStrategy
from agentlightning.store.base import LightningStore

__all__ = ["BREAKS", "SummaryProcessNotReapedStrategy"]

BREAKS = "R2"

_helpers: list[Any] = []  # kept referenced: an unreferenced Process object would be reaped when collected


def _write_summary(n_runners: int) -> None:
    """A real summary writer would write a file here; the defect is that nobody reaps this process."""
    os.getpid()


class SummaryProcessNotReapedStrategy(InterProcessExecutionStrategy):
    """``ipc`` plus a fire-and-forget summary process per run."""

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        try:
            super().execute(algorithm, runner, store)
        finally:
            helper = multiprocessing.get_context("fork").Process(
                target=_write_summary, args=(self.n_runners,), name="run-summary"
            )
            helper.start()
            _helpers.append(helper)
