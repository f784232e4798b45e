"""Breaks F1 (worker-killed): a runner that dies mid-run (its process, or its Ray actor) is reported as a
normal return.

The reference ``ray`` strategy, subclassed on the reasoning that "a lost runner's rollouts are requeued
by their retry policy anyway, so a runner's death is not worth failing the run for": ``WorkerDied``
(``RunnerProcessDied``, ``ActorDied``) is logged and ``execute()`` returns as if all went well. The
caller never learns that a runner (an OOM-killed process, a lost node) is gone, nor which one; with a
policy that does not retry, its rollouts are simply failed without a word.
"""

from __future__ import annotations

import logging

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.processes import WorkerDied
from agentlightning.execution.ray_actors import RayExecutionStrategy
from agentlightning.store.base import LightningStore

__all__ = ["BREAKS", "NEEDS", "RayActorDeathAsSuccessStrategy"]

BREAKS = "F1"
NEEDS = "ray"  # the optional extra it is built on: skipped, with the reason, without it

_log = logging.getLogger(__name__)


class RayActorDeathAsSuccessStrategy(RayExecutionStrategy):
    """``ray``, with a runner's death logged and swallowed."""

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        try:
            super().execute(algorithm, runner, store)
        except WorkerDied as exc:
            _log.warning("a runner died; its rollouts are retried by policy: %s", exc)
