"""Breaks G1 (buildable): building the strategy starts a thread.

"Warm up the pool in the constructor so the first run starts faster": ``__init__`` creates a thread pool
and submits a no-op to it, which starts a worker thread. Merely building the strategy (from a config, in
a registry lookup, in a test) now starts threads that nothing will ever shut down.
"""

from __future__ import annotations

import concurrent.futures

from strategies.thread_pool import ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "StartsThreadsInInitStrategy"]

BREAKS = "G1"


class StartsThreadsInInitStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example with a pre-warmed pool made in the constructor."""

    def __init__(
        self,
        n_runners: int = 1,
        graceful_delay: float = 1.0,
        join_timeout: float = 5.0,
        managed_store: bool = True,
    ) -> None:
        super().__init__(n_runners, graceful_delay, join_timeout, managed_store)
        self._warm_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="warm-pool")
        self._warm_pool.submit(lambda: None).result()
