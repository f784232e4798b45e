"""Breaks G2 (invalid-config): the constructor validates nothing.

Parameters are stored as given: ``n_runners=0`` builds a strategy that runs no runner at all,
``graceful_delay=-1`` one that cancels bundles before the stop, and ``n_runners="x"`` fails only deep
inside ``execute()`` with a ``TypeError`` that names nothing the user wrote.
"""

from __future__ import annotations

from strategies.thread_pool import ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "NoValidationStrategy"]

BREAKS = "G2"


class NoValidationStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example with an unchecked constructor."""

    def __init__(
        self,
        n_runners: int = 1,
        graceful_delay: float = 1.0,
        join_timeout: float = 5.0,
        managed_store: bool = True,
    ) -> None:
        self.n_runners = n_runners
        self.graceful_delay = graceful_delay
        self.join_timeout = join_timeout
        self.managed_store = managed_store
