"""Breaks L5 (event-protocol): the event's ``clear()`` does nothing.

"A stop event is one-shot, nobody clears it": the strategy's event class implements ``clear()`` as a
no-op to satisfy the protocol. A bundle that clears the event to reuse it (or a test that does) finds it
still set.
"""

from __future__ import annotations

from agentlightning.execution.events import ExecutionEvent, ThreadingEvent
from strategies.thread_pool import ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "ClearIsNoopStrategy"]

BREAKS = "L5"


class _OneShotEvent(ThreadingEvent):
    __slots__ = ()

    def clear(self) -> None:
        return None


class ClearIsNoopStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, with an event that cannot be cleared."""

    def _make_event(self) -> ExecutionEvent:
        return _OneShotEvent()
