"""Breaks T5 (values): ``get_rollout_by_id`` returns the stored metadata dict itself, not a copy.

"Reads are the hot path; skip the copy": the rollout handed out shares its ``metadata`` with the store.
A caller that adds a key to what it read has written to the store, with no call and no check.
"""

from __future__ import annotations

from agentlightning.store.memory import InMemoryLightningStore, _rollout_out
from agentlightning.types import Rollout

__all__ = ["ALSO_BREAKS", "BREAKS", "LiveMetadataReturnedStore"]

BREAKS = "T5"
ALSO_BREAKS = ("T9",)  # the defect shows in the history of any client that meets it


class LiveMetadataReturnedStore(InMemoryLightningStore):
    """The reference store, sharing each rollout's live metadata with ``get_rollout_by_id``'s callers."""

    async def get_rollout_by_id(self, rollout_id: str) -> Rollout | None:
        with self._lock:
            record = self._rollouts.get(rollout_id)
            if record is None:
                return None
            if record.metadata is None:  # the store keeps no dict for empty metadata: make the live one
                record.metadata = {}
            rollout = _rollout_out(record)
            rollout.metadata = record.metadata
            return rollout
