"""Breaks T3 (retry-policy): ``max_attempts`` is read as the number of retries, so one attempt too many runs.

"max_attempts=3 means: try three more times", an off-by-one that every retry loop invites. The store
keeps each rollout's config with one more attempt than asked: a rollout that fails on every attempt is
handed out ``max_attempts + 1`` times before it fails.
"""

from __future__ import annotations

from typing import Any

from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import Rollout, RolloutConfig, RolloutMode, TaskInput

__all__ = ["ALSO_BREAKS", "BREAKS", "CountsRetriesNotAttemptsStore"]

BREAKS = "T3"
ALSO_BREAKS = ("T9",)  # the defect shows in the history of any client that meets it


class CountsRetriesNotAttemptsStore(InMemoryLightningStore):
    """The reference store, granting every enqueued rollout one attempt more than its config says."""

    async def enqueue_rollout(
        self,
        input: TaskInput,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Rollout:
        if config is not None:
            config = config.model_copy(update={"max_attempts": config.max_attempts + 1})
        return await super().enqueue_rollout(input, mode, resources_id, config, metadata)
