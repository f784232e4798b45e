"""Breaks S1 (exactly-once): the store proxy handed to bundles memoises argument-less calls for 200 ms.

"Cut store traffic: cache what a call returns for a moment" — applied to every call without arguments,
``dequeue_rollout()`` included. Two runners dequeuing within 200 ms of each other get the same rollout:
it is worked on twice, and the one really dequeued second is never looked at until the cache expires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

from agentlightning.store.base import LightningStore
from strategies.thread_pool import ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "MemoisedStoreCallsStrategy"]

BREAKS = "S1"

_TTL = 0.2


class _MemoisingStore:
    """Forwards every attribute to the store; argument-less coroutine calls are cached for ``_TTL``."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._cache: dict[str, tuple[float, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            if args or kwargs:
                return await attribute(*args, **kwargs)
            cached = self._cache.get(name)
            if cached is not None and time.monotonic() - cached[0] < _TTL:
                return cached[1]
            value = await attribute()
            self._cache[name] = (time.monotonic(), value)
            return value

        return call


class MemoisedStoreCallsStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, handing bundles a memoising store proxy."""

    def _bundle_store(self, store: LightningStore) -> tuple[LightningStore, Callable[[], None] | None]:
        inner, close = super()._bundle_store(store)
        return cast(LightningStore, _MemoisingStore(inner)), close
