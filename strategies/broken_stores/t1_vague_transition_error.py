"""Breaks T1 (state-machine): an illegal rollout status change is refused with a message naming nothing.

"Error messages must not leak internal ids": the refusal says ``illegal status change`` and no more. The
change is refused, but whoever reads the log cannot tell which rollout, from which state, to which.
"""

from __future__ import annotations

from typing import Any

from agentlightning.store.base import UNSET, Unset
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import Rollout, RolloutConfig, RolloutMode, RolloutStatus, TaskInput

__all__ = ["BREAKS", "VagueTransitionErrorStore"]

BREAKS = "T1"


class VagueTransitionErrorStore(InMemoryLightningStore):
    """The reference store, with the transition error of ``update_rollout`` stripped of its details."""

    async def update_rollout(
        self,
        rollout_id: str,
        input: TaskInput | Unset = UNSET,
        mode: RolloutMode | Unset | None = UNSET,
        resources_id: str | Unset | None = UNSET,
        status: RolloutStatus | Unset = UNSET,
        config: RolloutConfig | Unset = UNSET,
        metadata: dict[str, Any] | Unset = UNSET,
    ) -> Rollout:
        try:
            return await super().update_rollout(
                rollout_id, input, mode, resources_id, status, config, metadata
            )
        except ValueError as error:
            if "cannot go from" in str(error):
                raise ValueError("illegal status change") from None
            raise
