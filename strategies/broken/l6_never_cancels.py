"""Breaks L6 (cancel-after-grace): bundles that ignore the event are never cancelled.

"Cancelling is rude; wait for everyone to finish": after the grace period the strategy just keeps
waiting (up to its join bound) and then leaves the bundle running. A runner that ignores the event is
never cancelled, its ``finally`` blocks never run, and its thread outlives ``execute()``.
"""

from __future__ import annotations

from strategies.thread_pool import Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "NeverCancelsStrategy"]

BREAKS = "L6"


class NeverCancelsStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example without cancellation."""

    def _cancel_all(self, run: Run) -> None:
        with run.lock:
            run.cancelling = True  # bundles not started yet are still skipped
