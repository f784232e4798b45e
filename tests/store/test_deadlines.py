"""``DeadlineSchedule``: earliest entry first whatever the push order, in O(1) for entries that arrive
in order (the common case: one default window for every attempt, a clock moving forward).

What T3's liveness rests on: a deadline the schedule lost or handed out late leaves an attempt claimed
forever; the store-level cases are in ``test_memory_store.py``.
"""

from __future__ import annotations

import asyncio
import math

from hypothesis import given
from hypothesis import strategies as st

from agentlightning.store.deadlines import DeadlineSchedule, Entry
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import RolloutConfig
from tests.store.fakes import FakeClock

# An operation: ("push", deadline) | ("pop", 0) | ("end", k) | ("drop", 0). "end" makes the k-th entry
# pushed so far stale, as an attempt's end makes its entry stale for the store.
_operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(min_value=0, max_value=50)),
        st.tuples(st.just("pop"), st.just(0)),
        st.tuples(st.just("end"), st.integers(min_value=0, max_value=80)),
        st.tuples(st.just("drop"), st.just(0)),
    ),
    max_size=80,
)
_COMPACT_FROM = 6  # small, so that rebuilds happen within a short history


@given(_operations)
def test_the_head_is_always_the_earliest_entry(operations: list[tuple[str, int]]) -> None:
    """Against a sorted model: the head, ``due``, the size, what ``pop`` returns, what ``drop_stale``
    and the rebuilds (each time the schedule doubles) remove, and whether a push made the head."""
    ended: set[int] = set()
    schedule = DeadlineSchedule(lambda e: e[1] not in ended, compact_from=_COMPACT_FROM)
    model: list[Entry] = []
    compact_at = _COMPACT_FROM
    for serial, (operation, value) in enumerate(operations):
        if operation == "push":
            entry: Entry = (float(value), serial, f"at-{serial}", 0)
            model.append(entry)
            if len(model) >= compact_at:
                model = [e for e in model if e[1] not in ended]
                compact_at = max(_COMPACT_FROM, 2 * len(model))
            assert schedule.push(entry) == (min(model) is entry)
        elif operation == "pop" and model:
            earliest = min(model)
            model.remove(earliest)
            assert schedule.pop() == earliest
        elif operation == "end":
            ended.add(value)
        elif operation == "drop":
            schedule.drop_stale()
            while model and min(model)[1] in ended:
                model.remove(min(model))
        assert len(schedule) == len(model)
        assert schedule.head() == (min(model) if model else None)
        assert schedule.due == (min(model)[0] if model else math.inf)


def test_entries_in_deadline_order_never_reach_the_heap() -> None:
    ended: set[int] = set()
    schedule = DeadlineSchedule(lambda e: e[1] not in ended)
    for serial in range(1000):
        schedule.push((100.0 + serial // 10, serial, f"at-{serial}", 0))  # equal deadlines included
    assert not schedule._heap  # the O(1) path: a 20k batch ends its attempts without sifting a heap
    for serial in range(1000):  # attempts end in the order they started
        ended.add(serial)
        schedule.drop_stale()
        assert len(schedule) == 999 - serial
    assert schedule.due == math.inf and schedule.head() is None


def test_an_entry_earlier_than_the_tail_still_comes_out_first() -> None:
    schedule = DeadlineSchedule(lambda e: True)
    assert schedule.push((600.0, 1, "long", 0))
    assert schedule.push((5.0, 2, "short", 0))  # a shorter window pushed after a longer one
    assert not schedule.push((5.0, 3, "tie", 0))  # an equal deadline pushed later is not the head
    assert schedule.due == 5.0
    assert [schedule.pop()[2] for _ in range(3)] == ["short", "tie", "long"]
    assert schedule.due == math.inf


def test_T3_mixed_windows_expire_each_attempt_at_its_own_deadline() -> None:
    """Attempts with a long and a short window, claimed alternately: the short ones' deadlines arrive
    out of order behind the long ones', and each still expires on time, none early."""

    async def scenario() -> None:
        clock = FakeClock()
        store = InMemoryLightningStore(clock=clock)
        short = RolloutConfig(timeout_seconds=5)
        long = RolloutConfig(timeout_seconds=50)
        configs = [long, short] * 20
        for n, config in enumerate(configs):
            await store.enqueue_rollout({"n": n}, config=config)
        claimed = []
        for _ in configs:
            attempted = await store.dequeue_rollout()
            assert attempted is not None
            claimed.append(attempted)
            clock.advance(0.01)
        clock.advance(5)  # every short window has passed, no long one has
        for attempted, config in zip(claimed, configs, strict=True):
            attempt = await store.get_latest_attempt(attempted.rollout_id)
            assert attempt is not None
            assert attempt.status == ("timeout" if config is short else "preparing"), attempted.rollout_id
        clock.advance(45)
        for attempted in claimed:
            attempt = await store.get_latest_attempt(attempted.rollout_id)
            assert attempt is not None and attempt.status == "timeout", attempted.rollout_id

    asyncio.run(scenario())
