"""Breaks S3 (caller-store-updated): bundles work on a private copy of the store, not the caller's.

"Isolate each run: give the bundles a fresh store of the same type" — everything works during the run
(the algorithm and the runners share the copy), but the store the caller passed to ``execute()`` is
untouched afterwards: every rollout, span and resource the run produced is lost, although the manifest
says ``shares_caller_store: True``.
"""

from __future__ import annotations

from collections.abc import Callable

from agentlightning.store.base import LightningStore
from strategies.thread_pool import ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "PrivateStoreCopyStrategy"]

BREAKS = "S3"


class PrivateStoreCopyStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, handing bundles a fresh store instead of the caller's."""

    def _bundle_store(self, store: LightningStore) -> tuple[LightningStore, Callable[[], None] | None]:
        return super()._bundle_store(type(store)())
