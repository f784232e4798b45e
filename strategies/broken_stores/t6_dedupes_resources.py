"""Breaks T6 (resources): publishing resources equal to an earlier snapshot returns that old snapshot.

"Do not store the same resources twice": a rollback to an earlier model gets the earlier version back,
with its old id and create_time, instead of a new version. The latest version went backwards, and the
rollback is not what ``get_latest_resources`` returns.
"""

from __future__ import annotations

import json

from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import NamedResources, ResourcesUpdate

__all__ = ["BREAKS", "DedupesResourcesStore"]

BREAKS = "T6"


class DedupesResourcesStore(InMemoryLightningStore):
    """The reference store, answering a repeated snapshot with the version first published for it."""

    async def add_resources(self, resources: NamedResources) -> ResourcesUpdate:
        seen: dict[str, str] = self.__dict__.setdefault("_by_content", {})
        key = json.dumps(resources, sort_keys=True, default=str)
        if key in seen:
            earlier = await self.get_resources_by_id(seen[key])
            if earlier is not None:
                return earlier
        update = await super().add_resources(resources)
        seen[key] = update.resources_id
        return update
