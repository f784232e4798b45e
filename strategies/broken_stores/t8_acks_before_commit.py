"""Breaks T8 (durable): a write is acknowledged before its commit; its commit rides on the next write.

"Never make a caller wait for its own commit": each write call commits what the calls before it left
pending and returns, its own change left for the next call's transaction. Throughput looks the same and
nothing is lost while the process lives, but when it is killed the last acknowledged write is gone.
"""

from __future__ import annotations

from agentlightning.store.sqlite import SqliteLightningStore

__all__ = ["BREAKS", "AcksBeforeCommitStore"]

BREAKS = "T8"


class AcksBeforeCommitStore(SqliteLightningStore):
    """The SQLite store, committing each write one call late."""

    def _persist(self) -> None:
        with self._lock:
            ready = self._assigned  # what earlier calls left pending: committed now
            self._snapshot()  # this call's change: left for the next call
        if self._committed < ready:
            self._commit_through(ready)
