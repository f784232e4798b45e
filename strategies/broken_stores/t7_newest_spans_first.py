"""Breaks T7 (spans): ``query_spans`` returns the newest span first.

"Dashboards want the latest span on top": the store reverses the order of what it returns. Callers that
rebuild a trace from the spans in order get it backwards.
"""

from __future__ import annotations

from typing import Literal

from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import Span

__all__ = ["BREAKS", "NewestSpansFirstStore"]

BREAKS = "T7"


class NewestSpansFirstStore(InMemoryLightningStore):
    """The reference store, answering span queries newest first."""

    async def query_spans(
        self, rollout_id: str, attempt_id: str | Literal["latest"] | None = None
    ) -> list[Span]:
        return list(reversed(await super().query_spans(rollout_id, attempt_id)))
