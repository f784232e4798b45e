"""Breaks L4 (stop-propagates): the event's ``wait()`` polls the flag every 2 seconds.

A hand-rolled event ("a flag and a sleep loop, simpler than a condition variable") whose ``wait()``
sleeps in 2-second ticks: a bundle blocked in ``event.wait()`` notices a ``set()`` up to 2 s late.
Timeouts are still honoured, so ``wait(timeout)`` keeps its meaning (L5).
"""

from __future__ import annotations

import time

from agentlightning.execution.events import ExecutionEvent, ThreadingEvent
from strategies.thread_pool import ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "PollingEventStrategy"]

BREAKS = "L4"

_TICK = 2.0


class _PollingEvent(ThreadingEvent):
    __slots__ = ()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if deadline is None:
                time.sleep(_TICK)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(_TICK, remaining))
        return True


class PollingEventStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, with an event whose ``wait()`` polls every 2 s."""

    def _make_event(self) -> ExecutionEvent:
        return _PollingEvent()
