"""Breaks L1 (bundles-called): worker ids count from 1, as humans do, instead of ``0 .. n_runners-1``.

A strategy that names its runners "runner 1", "runner 2", ... and passes that number on as ``worker_id``:
with ``n_runners=2`` the runners get ids 1 and 2, so a runner that shards work by ``worker_id`` skips
shard 0 and reads past the last one.
"""

from __future__ import annotations

from strategies.thread_pool import ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "WorkerIdsFromOneStrategy"]

BREAKS = "L1"


class WorkerIdsFromOneStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, with worker ids ``1 .. n_runners``."""

    def _worker_ids(self) -> range:
        return range(1, self.n_runners + 1)
