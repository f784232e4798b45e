"""Breaks T5 (values): span attributes JSON cannot carry are turned into strings instead of refused.

"Telemetry is best effort: never fail a span over one odd attribute": ``bytes`` become their repr, a
non-str key becomes its string. The write succeeds, and what reads back is not what was written.
"""

from __future__ import annotations

import json

from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import Span

__all__ = ["BREAKS", "LenientSpanAttributesStore"]

BREAKS = "T5"


class LenientSpanAttributesStore(InMemoryLightningStore):
    """The reference store, coercing span attributes through ``json.dumps(default=str)``."""

    async def add_span(self, span: Span) -> Span:
        coerced = json.loads(json.dumps(span.attributes, default=str))
        return await super().add_span(span.model_copy(update={"attributes": coerced}))
