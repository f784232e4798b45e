"""Breaks L1 (bundles-called): ``n_runners`` is accepted and stored, but only one runner is ever started.

The constructor validates ``n_runners`` and the repr shows it, yet ``execute()`` starts a single runner
(worker id 0): a user asking for four runners silently gets a quarter of the throughput.
"""

from __future__ import annotations

from strategies.thread_pool import ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "IgnoresNRunnersStrategy"]

BREAKS = "L1"


class IgnoresNRunnersStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, always with one runner whatever ``n_runners`` says."""

    def _worker_ids(self) -> range:
        return range(1)
