"""Breaks K3 (sigint-main): Ctrl+C stops the run gracefully and ``execute()`` returns ``None``.

"Ctrl+C means: stop now, cleanly" — the SIGINT handler sets the event and cancels the bundles, but
nothing remembers that the user interrupted: ``execute()`` returns as if the run had finished, and
the script goes on to its next step (saving a half-trained model as final, say).
"""

from __future__ import annotations

from strategies.thread_pool import Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "SigintReturnsNormallyStrategy"]

BREAKS = "K3"


class SigintReturnsNormallyStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example whose Ctrl+C ends the run without raising."""

    def _on_sigint(self, run: Run) -> None:
        run.event.set()
        run.hurry_up()
