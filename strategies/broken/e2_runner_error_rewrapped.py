"""Breaks E2 (runner-error): a runner's exception is re-raised as a different type.

"Tell the user which runner failed": the strategy wraps a runner's error in
``RuntimeError(f"runner N failed: {exc}")``. The original type (and so every ``except`` clause the
caller wrote for it) is lost, and so is the message as raised.
"""

from __future__ import annotations

from strategies.thread_pool import Bundle, Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "RunnerErrorRewrappedStrategy"]

BREAKS = "E2"


class RunnerErrorRewrappedStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, wrapping runner errors in RuntimeError."""

    def _bundle_failed(self, run: Run, bundle: Bundle, exc: BaseException) -> None:
        if bundle.name != "algorithm" and isinstance(exc, Exception):
            wrapped = RuntimeError(f"{bundle.name} failed: {exc}")
            wrapped.__cause__ = exc
            exc = wrapped
        super()._bundle_failed(run, bundle, exc)
