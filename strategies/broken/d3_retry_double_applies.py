"""Breaks D3 (partition): a write that is slow to answer is sent again, and both copies are applied.

The reference ``cs``, subclassed, whose runner machines "hedge" slow writes: a write not answered
within a second is sent once more on a fresh connection, and the first answer wins. On a healthy link
nothing changes; across a short partition both copies reach the server once the link heals (TCP
delivers the first, the second was queued behind the lost handshake), and the server applies both:
spans recorded twice, attempts updated twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.client_server import ClientServerExecutionStrategy, _Execution
from agentlightning.store.base import LightningStore
from agentlightning.store.http import HttpLightningStore

__all__ = ["BREAKS", "RetryDoubleAppliesStrategy"]

BREAKS = "D3"

_HEDGE_AFTER = 1.0  # seconds


class HedgingHttpStore(HttpLightningStore):
    """A client that sends a write again when its answer is late, without any request id."""

    async def _request(
        self, method: str, body: Any = None, extra_timeout: float = 0.0, *, idempotent: bool
    ) -> bytes:
        first = asyncio.ensure_future(super()._request(method, body, extra_timeout, idempotent=idempotent))
        if idempotent:
            return await first
        done, _ = await asyncio.wait({first}, timeout=_HEDGE_AFTER)
        if done:
            return first.result()
        second = asyncio.ensure_future(super()._request(method, body, extra_timeout, idempotent=idempotent))
        results = await asyncio.gather(first, second, return_exceptions=True)
        for result in results:
            if isinstance(result, bytes):
                return result
        raise results[0]  # type: ignore[misc]


class _HedgingExecution(_Execution):
    def _runner_side_client(self) -> HttpLightningStore:
        client = super()._runner_side_client()
        client.__class__ = HedgingHttpStore  # the same client, hedging its writes
        return client


class RetryDoubleAppliesStrategy(ClientServerExecutionStrategy):
    """``cs`` whose runner machines send slow writes twice."""

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        _HedgingExecution(self, algorithm, runner, store).run()
