"""``DeadlineSchedule``: the attempt deadlines a store checks, earliest first.

Nearly every attempt gets a deadline (``RolloutConfig`` has a default unresponsive window), and with one
window for all of them, on a clock that moves forward, deadlines arrive in the order they fall due. Such
entries are appended to a FIFO run in O(1), and since attempts mostly end in the order they started, the
stale ones at its head leave in O(1) too; only an entry earlier than the run's tail (a shorter window, a
clock stepped back) goes to a heap. The head of the schedule is the smaller of the two heads. With a heap
alone, every attempt's end paid an O(log n) pop, and a 20k batch ended its attempts about half again as
slowly per attempt as a 1k batch (``python -m bench.store``).

Entries are tuples ``(deadline, serial, key, token)`` of atoms (the collector untracks them at its first
pass); ``serial`` grows with every push, so equal deadlines keep their push order and tuples never
compare beyond it.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable

__all__ = ["DeadlineSchedule", "Entry"]

Entry = tuple[float, int, str, int]
"""``(deadline, serial, key, token)``."""


class DeadlineSchedule:
    """A min-schedule of deadline entries; ``due`` is the head's deadline (``inf`` when empty)."""

    __slots__ = ("_heap", "_run", "due")

    def __init__(self) -> None:
        self._run: deque[Entry] = deque()  # non-decreasing
        self._heap: list[Entry] = []
        self.due = math.inf

    def __len__(self) -> int:
        return len(self._run) + len(self._heap)

    def push(self, entry: Entry) -> None:
        run = self._run
        if not run or entry >= run[-1]:
            run.append(entry)
        else:
            heapq.heappush(self._heap, entry)
        self.due = min(self.due, entry[0])

    def head(self) -> Entry | None:
        """The earliest entry, left in place."""
        run, heap = self._run, self._heap
        if run:
            return heap[0] if heap and heap[0] < run[0] else run[0]
        return heap[0] if heap else None

    def pop(self) -> Entry:
        """Remove and return the earliest entry; ``IndexError`` when empty."""
        run, heap = self._run, self._heap
        entry = heapq.heappop(heap) if heap and (not run or heap[0] < run[0]) else run.popleft()
        self._refresh()
        return entry

    def keep(self, live: Callable[[Entry], bool]) -> None:
        """Drop every entry ``live`` rejects (in place: callers may hold the schedule)."""
        run = [entry for entry in self._run if live(entry)]
        self._run.clear()
        self._run.extend(run)
        self._heap[:] = [entry for entry in self._heap if live(entry)]
        heapq.heapify(self._heap)
        self._refresh()

    def _refresh(self) -> None:
        run, heap = self._run, self._heap
        if run:
            self.due = min(run[0][0], heap[0][0]) if heap else run[0][0]
        else:
            self.due = heap[0][0] if heap else math.inf
