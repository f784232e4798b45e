"""The Ctrl+C ladder: what each further SIGINT during an ``execute()`` does, decided in one place.

Every strategy that runs bundles under a ``threads.SigintRelay`` climbs the same ladder (K3-K5):

1. First Ctrl+C: stop with grace. A ``KeyboardInterrupt`` is recorded (``execute()`` raises it once
   everything has stopped) and the stop event is set: every bundle gets its usual grace.
2. Second: skip to force. The grace still running is skipped: bundles are cancelled at once and worker
   processes move to the next step of their escalation (SIGINT, then SIGTERM, then SIGKILL).
3. Third and later: abandon. Nothing is waited for any more (a bundle stuck in blocking code on the
   main thread is left behind, its loop closed with the shortest bound).

What "stop", "force" and "abandon" mean is the strategy's (threads for ``shm``, processes for ``ipc`` and
``cs``, actors for ``ray``); when each applies is this module's. The relay only counts signals (its handler
may take no lock); the ladder is climbed later, from protected code on the calling thread, by
``catch_up(relay.count)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agentlightning.execution.failures import FailureCollector

__all__ = ["CtrlCLadder"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

_log = logging.getLogger(__name__)

_STOP, _FORCE = 1, 2  # the rungs; every later Ctrl+C abandons


class CtrlCLadder:
    """Climbs one rung per Ctrl+C: ``stop`` (with grace), then ``force``, then ``abandon``.

    ``stop()`` is called on every rung (setting an event twice is harmless; a rung must never depend on
    an earlier one having run), ``force()`` from the second rung on, ``abandon()`` from the third.
    ``escaped()`` counts a ``KeyboardInterrupt`` that was raised in our own code instead of being relayed
    (one that tripped just as the relay was removed): it hurries the stop like a relayed one.
    """

    def __init__(
        self,
        failures: FailureCollector,
        *,
        stop: Callable[[], None],
        force: Callable[[], None] = lambda: None,
        abandon: Callable[[], None] = lambda: None,
        grace: float = 0.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self._failures = failures
        self._stop = stop
        self._force = force
        self._abandon = abandon
        self._grace = grace
        self._log = logger or _log
        self.handled = 0
        """Ctrl+Cs acted upon (relayed ones; see ``catch_up``)."""
        self.escaped_count = 0
        """Ctrl+Cs that arrived as a ``KeyboardInterrupt`` in our own code."""

    def catch_up(self, count: int) -> None:
        """Climb one rung for each Ctrl+C counted (``count``, the relay's) and not acted upon yet."""
        while self.handled < count:
            self.handled += 1
            self._climb(self.handled)

    def escaped(self) -> None:
        """A ``KeyboardInterrupt`` was raised in our own code: recorded, and the stop hurries by one step."""
        self.escaped_count += 1
        self._failures.record_interrupt("SIGINT")

    @property
    def interrupted(self) -> bool:
        """Whether any Ctrl+C came (relayed or escaped)."""
        return self.handled + self.escaped_count > 0

    @property
    def urgency(self) -> int:
        """Escalation steps to skip: every Ctrl+C after the first skips one (K5)."""
        return max(0, self.handled + self.escaped_count - 1)

    def _climb(self, rung: int) -> None:
        if rung == _STOP:
            self._log.info("SIGINT: stopping every bundle (grace %.3gs)", self._grace)
            self._failures.record_interrupt("SIGINT")
            self._stop()
        elif rung == _FORCE:
            self._log.warning("second SIGINT: stopping every bundle now, without grace")
            self._stop()
            self._force()
        else:
            self._log.warning("SIGINT #%d: no longer waiting for bundles", rung)
            self._stop()
            self._force()
            self._abandon()
