"""Breaks T4 (wait): ``wait_for_rollouts`` polls with ``time.sleep``, blocking the caller's event loop.

"Polling is simple and a 10 ms sleep is cheap": but it is a blocking sleep inside a coroutine. Nothing
else on the caller's loop runs while it waits: not its heartbeats, not its other requests, not (served
over HTTP) any other client of the store.
"""

from __future__ import annotations

import time

from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import Rollout

__all__ = ["BREAKS", "WaitBlocksTheLoopStore"]

BREAKS = "T4"

_POLL = 0.01


class WaitBlocksTheLoopStore(InMemoryLightningStore):
    """The reference store, waiting by sleeping in the caller's thread."""

    async def wait_for_rollouts(
        self, *, rollout_ids: list[str], timeout: float | None = None
    ) -> list[Rollout]:
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            done = await super().wait_for_rollouts(rollout_ids=rollout_ids, timeout=0)
            if len(done) == len(rollout_ids) or (give_up is not None and time.monotonic() >= give_up):
                return done
            time.sleep(_POLL)
