"""Breaks T8 (durable): writes are committed sixteen at a time; a kill loses the batch being filled.

"Group commit by count": instead of committing whatever is pending when a caller needs it, pending writes
are held until a batch of sixteen is full (or the store is closed), and the calls return meanwhile. A
clean shutdown flushes the batch, so every test that closes the store passes; a SIGKILL loses up to
fifteen acknowledged writes.
"""

from __future__ import annotations

from agentlightning.store.sqlite import SqliteLightningStore

__all__ = ["BREAKS", "LosesLastBatchStore"]

BREAKS = "T8"

_BATCH = 16


class LosesLastBatchStore(SqliteLightningStore):
    """The SQLite store, committing only full batches (and on close)."""

    def _persist(self) -> None:
        with self._lock:
            target = self._snapshot()
            full = len(self._pending) >= _BATCH or self._closed
        if full and self._committed < target:
            self._commit_through(target)

    async def close(self) -> None:
        if not self._closed and self._failure is None:
            with self._lock:
                target = self._snapshot()
            if self._committed < target:
                self._commit_through(target)
        await super().close()
