"""Breaks T1 (state-machine): ``update_attempt`` swallows a status change it cannot make, instead of
refusing it.

"A runner that retries its report after a lost answer must not crash": so any status change the store
refuses is swallowed and the attempt returned as it is. The caller is told nothing: a runner reporting
``running`` on an attempt that already failed believes it is working on it.
"""

from __future__ import annotations

from typing import Any, Literal

from agentlightning.store.base import UNSET, Unset
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import Attempt, AttemptStatus

__all__ = ["ALSO_BREAKS", "BREAKS", "IgnoresIllegalTransitionsStore"]

BREAKS = "T1"
ALSO_BREAKS = ("T9",)  # the defect shows in the history of any client that meets it


class IgnoresIllegalTransitionsStore(InMemoryLightningStore):
    """The reference store, with refused attempt status changes swallowed."""

    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str | Literal["latest"],
        status: AttemptStatus | Unset = UNSET,
        worker_id: str | Unset | None = UNSET,
        last_heartbeat_time: float | Unset = UNSET,
        metadata: dict[str, Any] | Unset = UNSET,
    ) -> Attempt:
        try:
            return await super().update_attempt(
                rollout_id, attempt_id, status, worker_id, last_heartbeat_time, metadata
            )
        except ValueError as error:
            if "cannot go from" not in str(error):
                raise
            attempts = await self.query_attempts(rollout_id)
            return next(a for a in attempts if attempt_id in (a.attempt_id, "latest"))
