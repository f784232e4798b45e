"""``ReplayTable``: answers of recent writes by request id, bounded by age and by count."""

from __future__ import annotations

import asyncio

import pytest

from agentlightning.store.http.replays import ReplayTable


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _answer(table: ReplayTable, key: str, body: bytes) -> None:
    async def serve() -> None:
        from agentlightning.store.http.replays import _Answer

        table.begin(key)
        table.finish(key, _Answer({"type": "http.response.start", "status": 200}, body, table.now()))

    asyncio.run(serve())


def test_answers_are_kept_for_their_retention_and_at_most_max_entries() -> None:
    clock = _Clock()
    table = ReplayTable(retention_seconds=60.0, max_entries=3, clock=clock)
    for index in range(3):
        _answer(table, f"k{index}", b"%d" % index)
    assert len(table) == 3 and table.get("k0") is not None
    _answer(table, "k3", b"3")  # over the count: the oldest goes
    assert table.get("k0") is None and len(table) == 3
    clock.now = 61.0
    _answer(table, "k4", b"4")  # the others are older than the retention now
    assert [key for key in ("k1", "k2", "k3", "k4") if table.get(key) is not None] == ["k4"]


def test_a_copy_waits_for_the_first_and_nothing_is_kept_without_an_answer() -> None:
    async def scenario() -> list[str]:
        table = ReplayTable()
        seen: list[str] = []
        table.begin("k")

        async def copy() -> None:
            running = table.running("k")
            assert running is not None
            await running
            seen.append("woke")

        waiter = asyncio.ensure_future(copy())
        await asyncio.sleep(0)
        table.finish("k", None)  # a 5xx or a failure: nothing to replay
        await waiter
        seen.append(f"kept={table.get('k') is not None}")
        return seen

    assert asyncio.run(scenario()) == ["woke", "kept=False"]


@pytest.mark.parametrize(("retention", "entries"), [(0.0, 10), (10.0, 0)])
def test_bad_bounds_are_named(retention: float, entries: int) -> None:
    with pytest.raises(ValueError, match="retention_seconds must be > 0 and max_entries >= 1"):
        ReplayTable(retention_seconds=retention, max_entries=entries)
