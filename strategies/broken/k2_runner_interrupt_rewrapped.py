"""Breaks K2 (ki-in-runner): a runner's ``KeyboardInterrupt`` is re-raised as ``RuntimeError``.

"A KeyboardInterrupt in a worker thread is not the user's Ctrl+C, it is a worker failure": the strategy
wraps it in ``RuntimeError("runner N was interrupted")``. Callers that handle ``KeyboardInterrupt`` (to
save a checkpoint, or to exit quietly) never see one.
"""

from __future__ import annotations

from strategies.thread_pool import Bundle, Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "RunnerInterruptRewrappedStrategy"]

BREAKS = "K2"


class RunnerInterruptRewrappedStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, turning a runner's KeyboardInterrupt into a RuntimeError."""

    def _bundle_failed(self, run: Run, bundle: Bundle, exc: BaseException) -> None:
        if bundle.name != "algorithm" and isinstance(exc, KeyboardInterrupt):
            exc = RuntimeError(f"{bundle.name} was interrupted")
        super()._bundle_failed(run, bundle, exc)
