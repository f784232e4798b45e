"""Breaks K3 (sigint-main): Ctrl+C raises ``KeyboardInterrupt`` at once and leaves the runner actors running.

The reference ``ray`` strategy, subclassed "so that Ctrl+C is instant even while Ray is busy": the run
goes on a background thread and the calling thread only waits for it, so a Ctrl+C lands in the wait and
is re-raised at once. Nothing tells the run: its actors keep running on the cluster (and the algorithm
on its thread) after ``execute()`` has raised, for as long as the caller stays connected; a Ray driver's
actors are not in the terminal's process group, so the terminal's signal never reaches them either.
"""

from __future__ import annotations

import threading

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.ray_actors import RayExecutionStrategy
from agentlightning.store.base import LightningStore

__all__ = ["BREAKS", "NEEDS", "RayCtrlCLeavesActorsStrategy"]

BREAKS = "K3"
NEEDS = "ray"  # the optional extra it is built on: skipped, with the reason, without it


class RayCtrlCLeavesActorsStrategy(RayExecutionStrategy):
    """``ray``, run on a background thread; the caller's Ctrl+C abandons it."""

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        failure: list[BaseException] = []

        def _run() -> None:
            try:
                super(RayCtrlCLeavesActorsStrategy, self).execute(algorithm, runner, store)
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=_run, name="ray-run", daemon=True)
        thread.start()
        while thread.is_alive():  # a Ctrl+C lands here and leaves the run behind
            thread.join(0.05)
        if failure:
            raise failure[0]
