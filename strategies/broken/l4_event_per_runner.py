"""Breaks L4 (stop-propagates): each runner is handed its own event.

The strategy keeps one event per runner "so that it can stop runners one by one"; its own stop sets them
all, so a normal completion looks fine. But a ``set()`` inside a bundle only sets that bundle's event:
nobody else sees it, and the run goes on.
"""

from __future__ import annotations

from agentlightning.execution.events import ExecutionEvent, ThreadingEvent
from strategies.thread_pool import ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "EventPerRunnerStrategy"]

BREAKS = "L4"


class _Broadcast(ThreadingEvent):
    """The strategy's event: setting it also sets every runner's own event (one way only)."""

    __slots__ = ("children",)

    def __init__(self) -> None:
        super().__init__()
        self.children: list[ThreadingEvent] = []

    def set(self) -> None:
        super().set()
        for child in self.children:
            child.set()


class EventPerRunnerStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, with a private event per runner."""

    def _make_event(self) -> ExecutionEvent:
        return _Broadcast()

    def _event_for_runner(self, event: ExecutionEvent, worker_id: int) -> ExecutionEvent:
        own = ThreadingEvent()
        assert isinstance(event, _Broadcast)
        event.children.append(own)
        if event.is_set():
            own.set()
        return own
