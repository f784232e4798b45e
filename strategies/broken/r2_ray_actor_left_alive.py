"""Breaks R2 (no-process-leak): a Ray actor the strategy created is left alive on the cluster after a run.

The reference ``ray`` strategy, subclassed to keep a progress actor ("so a dashboard can ask how far the
run got while it runs"), created by the first run and kept "for the next run on the same strategy, to
save its start-up". Nothing ever kills it: after ``execute()`` returns it stays alive on the cluster for
as long as the caller stays connected, holding a worker process. The strategy reports it honestly
through the kit's ``remote_resources`` hook, as it reports its runners.
"""

from __future__ import annotations

import os
from typing import Any

import psutil
import ray

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.ray_actors import RayExecutionStrategy
from agentlightning.store.base import LightningStore

__all__ = ["BREAKS", "NEEDS", "RayActorLeftAliveStrategy"]

BREAKS = "R2"
NEEDS = "ray"  # the optional extra it is built on: skipped, with the reason, without it


class _Progress:
    """What a run's progress actor would hold; its pid says where it runs."""

    def pid(self) -> int:
        return os.getpid()


_ProgressActor = ray.remote(num_cpus=0)(_Progress)


class RayActorLeftAliveStrategy(RayExecutionStrategy):
    """``ray``, with a progress actor that outlives every run."""

    _progress: Any = None  # the actor's handle (Ray kills an actor once no handle to it is left)
    _progress_pid: Any = None  # its pid, as an ObjectRef until the probe has read it

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_progress": None, "_progress_pid": None}

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        if self._progress is None and ray.is_initialized():  # (a connection the caller holds)
            self._progress = _ProgressActor.remote()
            self._progress_pid = self._progress.pid.remote()
        super().execute(algorithm, runner, store)

    def remote_resources(self) -> list[str]:
        found = super().remote_resources()
        if self._progress_pid is None:
            return found
        if not isinstance(self._progress_pid, int):
            self._progress_pid = ray.get(self._progress_pid, timeout=30)
        if _alive(self._progress_pid):
            found.append(f"Ray actor 'progress' (pid {self._progress_pid}) still running")
        return found


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
