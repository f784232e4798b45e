"""The collector pause around bulk reads: counted across threads, restoring what it found.

What keeps T4 (``wait_for_rollouts`` returns exactly the finished rollouts) fast over 100k ids without
touching the collector's state for the rest of the process: a pause never leaves it off, whatever ends it.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from agentlightning.store.collection import PAUSE_FROM, collection_paused


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_a_small_read_leaves_the_collector_alone() -> None:
    with collection_paused(PAUSE_FROM - 1):
        assert gc.isenabled()


def test_a_bulk_read_pauses_and_resumes() -> None:
    with collection_paused(PAUSE_FROM):
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_already_off_stays_off() -> None:
    gc.disable()
    with collection_paused(PAUSE_FROM):
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_an_error_in_the_read_still_resumes() -> None:
    with pytest.raises(RuntimeError), collection_paused(PAUSE_FROM):
        raise RuntimeError("the read failed")
    assert gc.isenabled()


def test_overlapping_pauses_resume_once_when_the_last_ends() -> None:
    first_in = threading.Event()
    first_may_leave = threading.Event()
    seen_after_second: list[bool] = []

    def first() -> None:
        with collection_paused(PAUSE_FROM):
            first_in.set()
            assert first_may_leave.wait(10.0)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert first_in.wait(10.0)
        with collection_paused(PAUSE_FROM):
            pass
        seen_after_second.append(gc.isenabled())  # the first pause still holds the collector off
    finally:
        first_may_leave.set()
        thread.join(10.0)
    assert seen_after_second == [False]
    assert gc.isenabled()


def test_bulk_results_are_built_with_the_collector_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's bulk path really pauses: with a threshold that collects on nearly every allocation,
    building 2k models runs a handful of collections (outside the loop), not thousands."""
    import asyncio
    import contextlib

    from agentlightning.store import memory

    size = 4 * PAUSE_FROM

    async def collections_while_reading() -> int:
        store = memory.InMemoryLightningStore()
        for n in range(size):
            await store.enqueue_rollout({"n": n})
        starts: list[int] = []

        def watch(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                starts.append(info["generation"])

        threshold = gc.get_threshold()
        gc.callbacks.append(watch)
        try:
            gc.set_threshold(1)
            rollouts = await store.query_rollouts()
        finally:
            gc.set_threshold(*threshold)
            gc.callbacks.remove(watch)
        assert len(rollouts) == size
        return len(starts)

    paused = asyncio.run(collections_while_reading())
    monkeypatch.setattr(memory, "collection_paused", lambda size: contextlib.nullcontext())
    unpaused = asyncio.run(collections_while_reading())
    assert unpaused > size  # the control: without the pause, the threshold collects per model
    assert paused < 50
