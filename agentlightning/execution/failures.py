"""Which failure an ``execute()`` raises when bundles, signals and cleanup fail, possibly together.

Every strategy records what went wrong into one ``FailureCollector`` and ends with ``raise_first()``.
The rules, in one place so all strategies agree (and the conformance oracle can predict them):

- E3: among failures of the same rank, the first is raised; the later ones are attached to it as
  exception notes (Python 3.11+) or logged (3.10), never replacing it. "First" is when it happened:
  ``record(..., at=t)`` gives a failure reported late (from another process) its own time
  (``time.monotonic()``, system-wide); without ``at`` it is the moment of recording.
- K1-K5, E6: ``KeyboardInterrupt``, ``SystemExit`` and any other ``BaseException`` that is not an
  ``Exception`` outrank ordinary errors (as in ``asyncio.TaskGroup``): the user asked the process to stop,
  so an earlier ``ValueError`` is attached to the interrupt instead of hiding it. They are never swallowed.
- E4: an error while cleaning up (closing a store, stopping a server) is raised only when nothing else
  failed; otherwise it is attached like any later failure.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["FailureCollector", "RecordedFailure"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

_log = logging.getLogger(__name__)

_RANK_CLEANUP = 0
_RANK_ERROR = 1
_RANK_BASE = 2  # KeyboardInterrupt, SystemExit and other non-Exception BaseExceptions


@dataclass(frozen=True)
class RecordedFailure:
    """One failure and where it came from (``"algorithm"``, ``"runner 1"``, ``"SIGINT"``, ...)."""

    exc: BaseException
    origin: str
    rank: int
    at: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        text = str(self.exc)
        return f"{self.origin}: {type(self.exc).__qualname__}" + (f": {text}" if text else "")


class FailureCollector:
    """Thread-safe record of an ``execute()``'s failures; decides which one is raised.

    Safe to call from any thread. Not safe to call from a signal handler (it takes a lock): a handler
    should only note the signal and let ordinary code call ``record_interrupt()``.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or _log
        self._lock = threading.Lock()
        self._failures: list[RecordedFailure] = []
        self._raised = False

    def record(self, exc: BaseException, origin: str, at: float | None = None) -> None:
        """Record a bundle's failure (any exception type). The same object recorded twice counts once.

        ``at``: when it happened (``time.monotonic()``), for a failure heard of later than it happened.
        """
        rank = _RANK_ERROR if isinstance(exc, Exception) else _RANK_BASE
        self._add(RecordedFailure(exc, origin, rank, time.monotonic() if at is None else at))

    def record_interrupt(self, origin: str = "SIGINT") -> None:
        """Record a ``KeyboardInterrupt`` for a signal, unless one is already the failure to raise."""
        primary = self.primary
        if isinstance(primary, KeyboardInterrupt):
            return
        interrupt = KeyboardInterrupt()
        _add_note(interrupt, f"{origin} received during execute(); every bundle was stopped")
        self._add(RecordedFailure(interrupt, origin, _RANK_BASE))

    def record_cleanup_error(self, exc: BaseException, what: str) -> None:
        """Record an error raised while cleaning up; it never masks a bundle failure (E4)."""
        rank = _RANK_CLEANUP if isinstance(exc, Exception) else _RANK_BASE
        self._add(RecordedFailure(exc, f"cleanup ({what})", rank))

    @contextlib.contextmanager
    def cleanup(self, what: str) -> Iterator[None]:
        """Run a cleanup step; whatever it raises (``KeyboardInterrupt`` too) is recorded, not propagated."""
        try:
            yield
        except BaseException as exc:  # recorded; raise_first() raises it
            self.record_cleanup_error(exc, what)

    @property
    def failures(self) -> list[RecordedFailure]:
        """Every failure recorded, in arrival order."""
        with self._lock:
            return list(self._failures)

    @property
    def primary(self) -> BaseException | None:
        """The exception ``raise_first()`` would raise, or ``None``."""
        chosen = self._choose(self.failures)
        return None if chosen is None else chosen.exc

    @property
    def interrupted(self) -> bool:
        """Whether a ``KeyboardInterrupt`` was recorded (from a bundle or a signal)."""
        return any(isinstance(f.exc, KeyboardInterrupt) for f in self.failures)

    def raise_first(self) -> None:
        """Raise the chosen failure with its original type and traceback, the others attached; or return."""
        with self._lock:
            self._raised = True
            failures = list(self._failures)
        chosen = self._choose(failures)
        if chosen is None:
            return
        for other in failures:
            if other is chosen:
                continue
            if sys.version_info >= (3, 11):
                chosen.exc.add_note(f"also failed: {other.summary()}")
                self._log.debug("also failed: %s", other.summary(), exc_info=other.exc)
            else:
                self._log.error("also failed (not raised): %s", other.summary(), exc_info=other.exc)
        raise chosen.exc

    def _add(self, failure: RecordedFailure) -> None:
        with self._lock:
            if any(f.exc is failure.exc for f in self._failures):
                return
            late = self._raised
            if not late:
                self._failures.append(failure)
        if late:
            # A straggler thread (L7) may fail after execute() has returned: nobody can raise it now.
            self._log.error("failed after execute() returned: %s", failure.summary(), exc_info=failure.exc)

    @staticmethod
    def _choose(failures: list[RecordedFailure]) -> RecordedFailure | None:
        best: RecordedFailure | None = None
        for failure in failures:  # a higher rank, or the same rank earlier, displaces
            if (
                best is None
                or failure.rank > best.rank
                or (failure.rank == best.rank and failure.at < best.at)
            ):
                best = failure
        return best


def _add_note(exc: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        exc.add_note(note)
