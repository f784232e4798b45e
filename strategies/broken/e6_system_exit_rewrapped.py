"""Breaks E6 (base-exceptions): a bundle's ``SystemExit`` is turned into a ``RuntimeError``.

"A bundle has no business exiting the process": the strategy reports ``sys.exit(3)`` in a bundle as
``RuntimeError("algorithm called sys.exit(3)")``. The caller's ``SystemExit`` handling (and the exit
status the bundle asked for) is lost: the process ends with a traceback and status 1 instead of 3.
"""

from __future__ import annotations

from strategies.thread_pool import Bundle, Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "SystemExitRewrappedStrategy"]

BREAKS = "E6"


class SystemExitRewrappedStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, reporting SystemExit as a RuntimeError."""

    def _bundle_failed(self, run: Run, bundle: Bundle, exc: BaseException) -> None:
        if isinstance(exc, SystemExit):
            exc = RuntimeError(f"{bundle.name} called sys.exit({exc.code!r})")
        super()._bundle_failed(run, bundle, exc)
