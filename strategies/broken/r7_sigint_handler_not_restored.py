"""Breaks R7 (caller-state-restored): the SIGINT handler installed by ``execute()`` is left in place.

The strategy installs its own SIGINT handler for the run and never puts the caller's back. After
``execute()`` returns, Ctrl+C in the caller's program calls into a finished run instead of raising
``KeyboardInterrupt`` (or running the caller's own handler).
"""

from __future__ import annotations

from collections.abc import Callable

from strategies.thread_pool import Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "SigintHandlerNotRestoredStrategy"]

BREAKS = "R7"


class SigintHandlerNotRestoredStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, forgetting to restore the caller's SIGINT handler."""

    def _install_sigint(self, run: Run) -> Callable[[], None]:
        super()._install_sigint(run)
        return lambda: None
