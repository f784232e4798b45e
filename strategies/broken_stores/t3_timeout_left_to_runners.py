"""Breaks T3 (retry-policy): ``timeout_seconds`` is never enforced; only silence (unresponsive) is detected.

"A long task is fine as long as its runner sends heartbeats; timing it out is the runner's job": the
store drops ``timeout_seconds`` from every config it keeps. An attempt whose runner is gone, on a rollout
that only sets a timeout, stays claimed forever and the rollout never ends.
"""

from __future__ import annotations

from typing import Any

from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import Rollout, RolloutConfig, RolloutMode, TaskInput

__all__ = ["BREAKS", "TimeoutLeftToRunnersStore"]

BREAKS = "T3"


class TimeoutLeftToRunnersStore(InMemoryLightningStore):
    """The reference store, forgetting the timeout of every enqueued rollout."""

    async def enqueue_rollout(
        self,
        input: TaskInput,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Rollout:
        if config is not None:
            config = config.model_copy(update={"timeout_seconds": None})
        return await super().enqueue_rollout(input, mode, resources_id, config, metadata)
