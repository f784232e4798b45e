"""Breaks T8 (durable): on reopening, every rollout with an attempt is requeued, finished ones included.

"Recover the dead run at once instead of waiting for its attempts' unresponsive window": on open, every
rollout that has an attempt not ``completed`` is requeued. But no attempt status is called ``completed``
(a finished attempt is ``succeeded``), so the filter keeps nothing out: rollouts the dead run finished
are queued again and run a second time.
"""

from __future__ import annotations

from agentlightning.store.sqlite import SqliteLightningStore

__all__ = ["BREAKS", "ReplaysCompletedStore"]

BREAKS = "T8"


class ReplaysCompletedStore(SqliteLightningStore):
    """The SQLite store, requeuing every rollout with an attempt when it opens."""

    def _load(self) -> None:
        super()._load()
        now = self._clock()
        for record in list(self._rollouts.values()):
            latest = record.latest
            if latest is None or latest.data["status"] == "completed":
                continue
            if latest.data["status"] in ("preparing", "running"):
                self._end_attempt(latest, "failed", now, by_store=True, propagate=False)
            self._set_rollout_status(record, "requeuing", now)
