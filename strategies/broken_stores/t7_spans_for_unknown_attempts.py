"""Breaks T7 (spans): a span for an attempt the store does not know is kept instead of refused.

"Spans may arrive before their attempt is registered (clock skew, reordering): keep them for later":
the store accepts spans for any rollout and attempt id, typos and stale ids included, and reports
success. They are never attached to anything, and the runner that sent them is never told.
"""

from __future__ import annotations

from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import Span

__all__ = ["ALSO_BREAKS", "BREAKS", "SpansForUnknownAttemptsStore"]

BREAKS = "T7"
ALSO_BREAKS = ("T9",)  # the defect shows in the history of any client that meets it


class SpansForUnknownAttemptsStore(InMemoryLightningStore):
    """The reference store, parking spans of attempts it does not know instead of refusing them."""

    async def add_span(self, span: Span) -> Span:
        known = {attempt.attempt_id for attempt in await self.query_attempts(span.rollout_id)}
        if span.attempt_id in known:
            return await super().add_span(span)
        parked: list[Span] = self.__dict__.setdefault("_early_spans", [])
        parked.append(span.model_copy(deep=True))
        return span
