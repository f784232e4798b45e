"""Breaks T2 (exactly-once-claim): ``dequeue_rollout`` looks for a queued rollout, then claims it: two steps.

"Build dequeue from the public API": find the oldest queued rollout with ``query_rollouts``, then
``start_attempt`` on it. Each call is atomic, the pair is not: two clients that look at the same moment
both claim the same rollout, the second superseding the first's attempt while its runner still works.
"""

from __future__ import annotations

from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import AttemptedRollout

__all__ = ["BREAKS", "CheckThenClaimStore"]

BREAKS = "T2"


class CheckThenClaimStore(InMemoryLightningStore):
    """The reference store, with a dequeue made of a query and a claim."""

    async def dequeue_rollout(self) -> AttemptedRollout | None:
        queued = await self.query_rollouts(status=["queuing", "requeuing"])
        if not queued:
            return None
        return await self.start_attempt(queued[0].rollout_id)
