"""Breaks D4 (late-store): a runner machine started before the store waits for it forever.

The reference ``cs``, subclassed, that "never gives up on the server": its runner side retries an
unreachable store without a bound, while it still declares the usual ``late_store_seconds``. Started
against a wrong address, or before an algorithm that never comes, it spins silently instead of
failing with the address it could not reach.
"""

from __future__ import annotations

from typing import Any

from agentlightning.execution.client_server import ClientServerExecutionStrategy

__all__ = ["BREAKS", "SpinsOnAbsentStoreStrategy"]

BREAKS = "D4"

_FOREVER = 10.0**9  # seconds


class SpinsOnAbsentStoreStrategy(ClientServerExecutionStrategy):
    """``cs`` whose runner side retries an absent store without end."""

    def __init__(self, **options: Any) -> None:
        declared = float(options.get("connect_timeout", 10.0))
        super().__init__(**options)
        self.declared_wait = declared
        self.connect_timeout = _FOREVER  # every retry loop of the runner side now runs unbounded

    @property
    def capabilities(self) -> dict[str, Any]:
        return {**super().capabilities, "late_store_seconds": self.declared_wait}
