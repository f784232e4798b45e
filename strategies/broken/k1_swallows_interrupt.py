"""Breaks K1 (ki-in-algorithm): a ``KeyboardInterrupt`` raised in the algorithm is swallowed, and
``execute()`` returns normally.

"Ctrl+C in the training loop means: stop training" — so the strategy catches ``KeyboardInterrupt`` from
the algorithm, stops the runners cleanly and returns ``None``. The caller can no longer tell an
interrupted run from a finished one, and a script meant to exit on Ctrl+C carries on.
"""

from __future__ import annotations

from strategies.thread_pool import Bundle, Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "SwallowsInterruptStrategy"]

BREAKS = "K1"


class SwallowsInterruptStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, treating the algorithm's KeyboardInterrupt as a normal end."""

    def _bundle_failed(self, run: Run, bundle: Bundle, exc: BaseException) -> None:
        if bundle.name == "algorithm" and isinstance(exc, KeyboardInterrupt):
            self._algorithm_returned(run)
            return
        super()._bundle_failed(run, bundle, exc)
