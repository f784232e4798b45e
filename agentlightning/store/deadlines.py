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
compare beyond it. Whether an entry still matters is the owner's to say (``live``): stale entries leave
from the head as they surface (``drop_stale``) and all at once whenever the schedule has doubled since
the last rebuild, so it stays proportional to the live ones. Each operation is one call: the store makes
one or two per claim and per attempt end, its hottest paths.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable

__all__ = ["COMPACT_FROM", "DeadlineSchedule", "Entry"]

Entry = tuple[float, int, str, int]
"""``(deadline, serial, key, token)``."""

COMPACT_FROM = 1024
"""The smallest size at which the schedule is rebuilt without its stale entries."""


class DeadlineSchedule:
    """A min-schedule of deadline entries; ``due`` is the head's deadline (``inf`` when empty)."""

    __slots__ = ("_compact_at", "_compact_from", "_heap", "_live", "_run", "due")

    def __init__(self, live: Callable[[Entry], bool], *, compact_from: int = COMPACT_FROM) -> None:
        self._live = live
        self._run: deque[Entry] = deque()  # non-decreasing
        self._heap: list[Entry] = []
        self._compact_from = compact_from
        self._compact_at = compact_from
        self.due = math.inf

    def __len__(self) -> int:
        return len(self._run) + len(self._heap)

    def push(self, entry: Entry) -> bool:
        """Add ``entry``; whether it is now the head (earlier than every other entry)."""
        run, heap = self._run, self._heap
        if not run or entry >= run[-1]:
            run.append(entry)
        else:
            heapq.heappush(heap, entry)
        if len(run) + len(heap) >= self._compact_at:
            self._compact()
        head = heap[0] if heap and (not run or heap[0] < run[0]) else run[0]
        self.due = head[0]
        return head is entry

    def head(self) -> Entry | None:
        """The earliest entry, left in place."""
        run, heap = self._run, self._heap
        if run:
            return heap[0] if heap and heap[0] < run[0] else run[0]
        return heap[0] if heap else None

    def pop(self) -> Entry:
        """Remove and return the earliest entry, live or not; ``IndexError`` when empty."""
        run, heap = self._run, self._heap
        entry = heapq.heappop(heap) if heap and (not run or heap[0] < run[0]) else run.popleft()
        self._refresh()
        return entry

    def drop_stale(self) -> None:
        """Remove the entries at the head that are no longer live, up to the first live one."""
        run, heap, live = self._run, self._heap, self._live
        dropped = False
        while True:
            if heap and (not run or heap[0] < run[0]):
                if live(heap[0]):
                    break
                heapq.heappop(heap)
            elif run:
                if live(run[0]):
                    break
                run.popleft()
            else:
                break
            dropped = True
        if dropped:
            self._refresh()

    def _compact(self) -> None:
        live = self._live
        kept = [entry for entry in self._run if live(entry)]
        self._run.clear()
        self._run.extend(kept)
        self._heap[:] = [entry for entry in self._heap if live(entry)]
        heapq.heapify(self._heap)
        self._compact_at = max(self._compact_from, 2 * len(self))
        self._refresh()

    def _refresh(self) -> None:
        run, heap = self._run, self._heap
        if run:
            self.due = min(run[0][0], heap[0][0]) if heap else run[0][0]
        else:
            self.due = heap[0][0] if heap else math.inf
