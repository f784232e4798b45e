"""Breaks K5 (second-sigint): a second Ctrl+C during shutdown is ignored; the grace period is sat out.

The first Ctrl+C starts a graceful shutdown (set the event, give bundles ``graceful_delay`` = 3 s to
return, then cancel); later ones are dropped ("already shutting down, please wait"). A user pressing
Ctrl+C again because a bundle ignores the event still waits the full grace period.
"""

from __future__ import annotations

from strategies.thread_pool import Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "SecondSigintIgnoredStrategy"]

BREAKS = "K5"


class SecondSigintIgnoredStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, with a graceful first Ctrl+C and deaf to the next ones."""

    def __init__(self, n_runners: int = 1, graceful_delay: float = 3.0, **options: object) -> None:
        super().__init__(n_runners, graceful_delay, **options)  # type: ignore[arg-type]

    def _on_sigint(self, run: Run) -> None:
        with run.lock:
            if run.interrupted:
                return  # "already shutting down"
            run.interrupted = True
            run.failures.append(("SIGINT", KeyboardInterrupt()))
        run.event.set()  # graceful: no hurry_up(), bundles get the full grace period
