"""The stop event (contract L5 for our own events, L4 across threads and processes)."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import threading
from typing import Any

import pytest

from agentlightning.execution.events import (
    ExecutionEvent,
    MultiprocessingEvent,
    ThreadingEvent,
    wait_async,
)

START_METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


@pytest.fixture(params=["threading", "multiprocessing"])
def event(request: pytest.FixtureRequest) -> Any:
    if request.param == "threading":
        yield ThreadingEvent()
    else:
        evt = MultiprocessingEvent()
        yield evt
        evt.close()


def test_L5_protocol(event: ExecutionEvent) -> None:
    assert isinstance(event, ExecutionEvent)
    assert not event.is_set()
    assert event.wait(0.01) is False
    event.set()
    event.set()  # idempotent
    assert event.is_set()
    assert event.wait(0) is True
    assert event.wait() is True
    event.clear()
    assert not event.is_set()
    assert event.wait(0.01) is False
    event.set()
    assert event.is_set()


def test_L5_wait_async_times_out_then_sees_set(event: ExecutionEvent) -> None:
    async def main() -> tuple[bool, bool]:
        first = await wait_async(event, timeout=0.01)
        event.set()
        return first, await wait_async(event, timeout=0.01)

    assert asyncio.run(main()) == (False, True)


def test_L5_wait_async_does_not_block_the_loop(event: ExecutionEvent) -> None:
    """Another task on the same loop keeps running while one awaits the event, and sets it."""

    async def main() -> bool:
        async def setter() -> None:
            await asyncio.sleep(0)
            event.set()

        task = asyncio.create_task(setter())
        woke = await wait_async(event, timeout=30)
        await task
        return woke

    assert asyncio.run(main()) is True


def test_L4_wait_async_wakes_when_set_from_another_thread(event: ExecutionEvent) -> None:
    waiting = threading.Event()

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        loop.call_soon(waiting.set)
        return await wait_async(event, timeout=30)

    setter = threading.Thread(target=lambda: (waiting.wait(30), event.set()))
    setter.start()
    try:
        assert asyncio.run(main()) is True
    finally:
        setter.join(30)


def test_wait_async_after_clear_waits_again() -> None:
    event = MultiprocessingEvent()
    try:
        event.set()
        event.clear()

        async def main() -> bool:
            return await wait_async(event, timeout=0.02)

        assert asyncio.run(main()) is False
    finally:
        event.close()


def test_wait_async_cancellation_leaves_no_waker() -> None:
    event = ThreadingEvent()

    async def main() -> None:
        task = asyncio.create_task(wait_async(event))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert event._wakers == []


class _ForeignEvent:
    """An ExecutionEvent that is none of ours: wait_async falls back to polling."""

    def __init__(self) -> None:
        self._e = threading.Event()

    def set(self) -> None:
        self._e.set()

    def clear(self) -> None:
        self._e.clear()

    def is_set(self) -> bool:
        return self._e.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._e.wait(timeout)


def test_wait_async_accepts_any_protocol_event() -> None:
    event = _ForeignEvent()

    async def main() -> tuple[bool, bool]:
        first = await wait_async(event, timeout=0.01)
        asyncio.get_running_loop().call_later(0.005, event.set)
        return first, await wait_async(event, timeout=30)

    assert asyncio.run(main()) == (False, True)


def _child_waits_then_sets(event: MultiprocessingEvent, seen: Any) -> None:
    async def main() -> None:
        assert await wait_async(event, timeout=30)
        seen.set()

    asyncio.run(main())
    event.close()


def _child_sets(event: MultiprocessingEvent) -> None:
    event.set()
    event.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_L4_multiprocessing_event_crosses_processes(method: str) -> None:
    ctx = multiprocessing.get_context(method)
    event = MultiprocessingEvent(ctx)
    seen = ctx.Event()
    try:
        waiter = ctx.Process(target=_child_waits_then_sets, args=(event, seen))
        waiter.start()
        setter = ctx.Process(target=_child_sets, args=(event,))
        setter.start()
        setter.join(60)
        assert setter.exitcode == 0
        assert seen.wait(60), "the waiting child never saw the event set by its sibling"
        waiter.join(60)
        assert waiter.exitcode == 0
        assert event.is_set()
    finally:
        event.close()


def test_multiprocessing_event_pickles_only_for_spawning() -> None:
    event = MultiprocessingEvent()
    try:
        with pytest.raises(RuntimeError):
            pickle.dumps(event)
    finally:
        event.close()
    assert event.closed
    event.close()  # idempotent
