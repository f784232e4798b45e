"""Breaks S6 (unmanaged-store): ``managed_store=False`` is accepted but ignored: bundles always get a
wrapper.

The option is in the signature (and the manifest declares ``supports_unmanaged_store: True``), but
``execute()`` always wraps the store in a ``ThreadedLightningStore``: a user who passes an already
thread-safe store, and relies on bundles getting that very object, gets a proxy.
"""

from __future__ import annotations

from collections.abc import Callable

from agentlightning.store.base import LightningStore
from agentlightning.store.threaded import ThreadedLightningStore
from strategies.thread_pool import ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "ManagedStoreIgnoredStrategy"]

BREAKS = "S6"


class ManagedStoreIgnoredStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, always wrapping the store."""

    def _bundle_store(self, store: LightningStore) -> tuple[LightningStore, Callable[[], None] | None]:
        wrapped = ThreadedLightningStore(store)
        return wrapped, wrapped.close_sync
