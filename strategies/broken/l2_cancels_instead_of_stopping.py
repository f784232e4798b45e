"""Breaks L2 (normal-completion): when the algorithm returns, the runners are cancelled (after the grace
period) instead of being told to stop: the event is never set.

"The runners are done once the algorithm is" — so the strategy cancels them, and forgets ``event.set()``.
A runner that watches the event to flush its last results never sees it, and ends in ``CancelledError``
instead of returning.
"""

from __future__ import annotations

from strategies.thread_pool import Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "CancelsInsteadOfStoppingStrategy"]

BREAKS = "L2"


class CancelsInsteadOfStoppingStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example; the algorithm's return schedules a cancellation, never sets the event."""

    def _algorithm_returned(self, run: Run) -> None:
        supervisor = run.supervisor
        if supervisor is not None:
            supervisor.call_soon_threadsafe(supervisor.call_later, self.graceful_delay, self._cancel_all, run)
