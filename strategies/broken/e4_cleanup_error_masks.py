"""Breaks E4 (cleanup-error-no-mask): a runner's error raised while it shuts down masks the algorithm's
original error.

"Runner errors are the informative ones": the strategy raises a runner's failure in preference to the
algorithm's. When the algorithm fails and a runner then fails in its own cleanup (closing a client,
flushing a buffer), the caller sees the cleanup error and never the cause.
"""

from __future__ import annotations

from strategies.thread_pool import Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "CleanupErrorMasksStrategy"]

BREAKS = "E4"


class CleanupErrorMasksStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, preferring runner failures over the algorithm's."""

    def _raise_outcome(self, run: Run) -> None:
        from_runners = [(origin, exc) for origin, exc in run.failures if origin.startswith("runner ")]
        others = [(origin, exc) for origin, exc in run.failures if not origin.startswith("runner ")]
        run.failures = from_runners + others
        super()._raise_outcome(run)
