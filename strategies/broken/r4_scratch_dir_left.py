"""Breaks R4 (no-ipc-leak): a scratch directory is created per run under the temp dir and never removed.

The strategy spills bundle logs to ``tempfile.mkdtemp(prefix="thread-pool-")`` and forgets the
``shutil.rmtree``: every ``execute()`` leaves a directory behind in ``$TMPDIR``.
"""

from __future__ import annotations

import os
import tempfile

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.events import ExecutionEvent
from agentlightning.store.base import LightningStore
from strategies.thread_pool import Bundle, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "ScratchDirLeftStrategy"]

BREAKS = "R4"


class ScratchDirLeftStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example plus a scratch directory nobody removes."""

    def _bundles(
        self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore, event: ExecutionEvent
    ) -> list[Bundle]:
        scratch = tempfile.mkdtemp(prefix="thread-pool-")
        with open(os.path.join(scratch, "bundles.log"), "w", encoding="utf-8") as log:
            log.write(f"algorithm and {self.n_runners} runner(s)\n")
        return super()._bundles(algorithm, runner, store, event)
