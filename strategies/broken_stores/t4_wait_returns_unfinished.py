"""Breaks T4 (wait): on timeout ``wait_for_rollouts`` returns every rollout asked for, finished or not.

"Give the caller what we have": when the wait times out, the store hands back the rollouts as they stand,
queued and running ones included. A caller that treats the result as "these are done" collects work
that has not happened.
"""

from __future__ import annotations

from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import Rollout

__all__ = ["ALSO_BREAKS", "BREAKS", "WaitReturnsUnfinishedStore"]

BREAKS = "T4"
ALSO_BREAKS = ("T9",)  # the defect shows in the history of any client that meets it


class WaitReturnsUnfinishedStore(InMemoryLightningStore):
    """The reference store, returning unfinished rollouts from a wait that timed out."""

    async def wait_for_rollouts(
        self, *, rollout_ids: list[str], timeout: float | None = None
    ) -> list[Rollout]:
        done = await super().wait_for_rollouts(rollout_ids=rollout_ids, timeout=timeout)
        if len(done) == len(rollout_ids):
            return done
        by_id = {
            rollout.rollout_id: rollout for rollout in await self.query_rollouts(rollout_ids=rollout_ids)
        }
        return [by_id[rid] for rid in rollout_ids if rid in by_id]
