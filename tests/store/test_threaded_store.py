"""``ThreadedLightningStore``: one store from several threads, each with its own loop, on both paths.

The store contracts through the wrapper (its ``threaded`` access path) are the kit's store suite's;
here, what is the wrapper's own: the direct and owner-thread paths, cancellation, closing.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from agentlightning.store.base import LightningStore
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.threaded import OWNER_THREAD_NAME, ThreadedLightningStore
from agentlightning.types import Span

_HANG_BOUND = 20.0


class LoopBoundStore(InMemoryLightningStore):
    """A store that is *not* thread-safe: it records, and insists on, the one loop that calls it."""

    thread_safe = False

    def __init__(self) -> None:
        super().__init__()
        self.loops: set[int] = set()
        self.threads: set[str] = set()
        self.closed_on: str | None = None

    def _note(self) -> None:
        self.loops.add(id(asyncio.get_running_loop()))
        self.threads.add(threading.current_thread().name)
        if len(self.loops) > 1:
            raise AssertionError("LoopBoundStore used from more than one event loop")

    async def enqueue_rollout(self, *args: Any, **kwargs: Any) -> Any:
        self._note()
        return await super().enqueue_rollout(*args, **kwargs)

    async def dequeue_rollout(self) -> Any:
        self._note()
        return await super().dequeue_rollout()

    async def update_attempt(self, *args: Any, **kwargs: Any) -> Any:
        self._note()
        return await super().update_attempt(*args, **kwargs)

    async def wait_for_rollouts(self, *, rollout_ids: list[str], timeout: float | None = None) -> Any:
        self._note()
        return await super().wait_for_rollouts(rollout_ids=rollout_ids, timeout=timeout)

    async def close(self) -> None:
        self.closed_on = threading.current_thread().name


def run_in_threads(n: int, body: Callable[[int], Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run ``body(i)`` in ``n`` threads, each on its own event loop, started together; re-raise errors."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def target(i: int) -> None:
        async def main() -> Any:
            barrier.wait(_HANG_BOUND)
            return await body(i)

        try:
            results[i] = asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,), name=f"test-loop-{i}") for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(_HANG_BOUND)
    assert not any(t.is_alive() for t in threads), "a test thread hung"
    if errors:
        raise errors[0]
    return results


def cycle_body(store: LightningStore, per_thread: int) -> Callable[[int], Coroutine[Any, Any, list[str]]]:
    async def body(i: int) -> list[str]:
        done: list[str] = []
        for n in range(per_thread):
            await store.enqueue_rollout({"thread": i, "n": n})
            attempted = await store.dequeue_rollout()
            assert attempted is not None
            await store.update_attempt(attempted.rollout_id, attempted.attempt.attempt_id, status="succeeded")
            finished = await store.wait_for_rollouts(rollout_ids=[attempted.rollout_id], timeout=_HANG_BOUND)
            assert [r.status for r in finished] == ["succeeded"]
            done.append(attempted.rollout_id)
        return done

    return body


def test_a_thread_safe_store_is_called_directly_with_no_owner_thread() -> None:
    # Exactly-once claims and waits through the wrapper, from many threads and loops, are the store
    # suite's (T2, T4 on the threaded path); here, only that the direct path starts nothing.
    inner = InMemoryLightningStore()
    store = ThreadedLightningStore(inner)
    assert store.direct and store.inner is inner
    results = run_in_threads(2, cycle_body(store, 5))
    assert len({rid for per_thread in results for rid in per_thread}) == 10
    assert store.owner_thread is None
    asyncio.run(store.close())


@pytest.mark.parametrize("n_threads", [2, 4])
def test_owner_thread_path_confines_the_store_to_one_loop(n_threads: int) -> None:
    inner = LoopBoundStore()
    store = ThreadedLightningStore(inner)
    assert not store.direct
    assert store.owner_thread is None  # started lazily
    results = run_in_threads(n_threads, cycle_body(store, 30))
    claimed = [rid for per_thread in results for rid in per_thread]
    assert len(claimed) == len(set(claimed)) == 30 * n_threads
    assert inner.threads == {OWNER_THREAD_NAME} and len(inner.loops) == 1
    owner = store.owner_thread
    assert owner is not None and owner.is_alive() and owner.daemon
    asyncio.run(store.close())
    assert not owner.is_alive() and owner not in threading.enumerate()
    assert inner.closed_on is None  # close_inner defaults to False: the caller owns the store


def test_cross_thread_wait_wakes_through_the_owner_thread() -> None:
    inner = LoopBoundStore()
    store = ThreadedLightningStore(inner)
    rollout = asyncio.run(store.enqueue_rollout("a"))
    waiting = threading.Event()
    seen: list[Any] = []

    async def waiter() -> None:
        task = asyncio.ensure_future(
            store.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=_HANG_BOUND)
        )
        while not inner._waiters:  # registered on the owner loop
            await asyncio.sleep(0)
        waiting.set()
        seen.extend(await task)

    thread = threading.Thread(target=lambda: asyncio.run(waiter()), name="test-waiter")
    thread.start()
    assert waiting.wait(_HANG_BOUND)

    async def complete() -> None:
        attempted = await store.dequeue_rollout()
        assert attempted is not None
        await store.update_attempt(attempted.rollout_id, "latest", status="succeeded")

    asyncio.run(complete())
    thread.join(_HANG_BOUND)
    assert not thread.is_alive()
    assert [r.status for r in seen] == ["succeeded"]
    owner = store.owner_thread
    store.close_sync()
    assert owner is not None and not owner.is_alive()


def test_cancelling_a_call_cancels_it_on_the_owner_loop() -> None:
    inner = LoopBoundStore()
    store = ThreadedLightningStore(inner)

    async def scenario() -> None:
        rollout = await store.enqueue_rollout("a")
        task = asyncio.create_task(store.wait_for_rollouts(rollout_ids=[rollout.rollout_id]))
        while not inner._waiters:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancellation crosses to the owner loop; once it lands, the inner waiter is gone.
        probe = await store.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=0)
        assert probe == []
        while inner._waiters:
            await asyncio.sleep(0)
        await store.close()

    asyncio.run(scenario())
    assert store.owner_thread is not None and not store.owner_thread.is_alive()


def test_close_inner_closes_the_wrapped_store_on_its_owner_loop() -> None:
    inner = LoopBoundStore()
    store = ThreadedLightningStore(inner, close_inner=True)
    asyncio.run(store.enqueue_rollout("a"))
    asyncio.run(store.close())
    assert inner.closed_on == OWNER_THREAD_NAME
    assert store.owner_thread is not None and not store.owner_thread.is_alive()


def test_close_sync_and_calls_after_close() -> None:
    inner = LoopBoundStore()
    store = ThreadedLightningStore(inner)
    asyncio.run(store.enqueue_rollout("a"))
    owner = store.owner_thread
    assert owner is not None
    store.close_sync()
    store.close_sync()  # idempotent
    asyncio.run(store.close())
    assert not owner.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(store.enqueue_rollout("b"))
    direct = ThreadedLightningStore(InMemoryLightningStore())
    direct.close_sync()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(direct.dequeue_rollout())


def test_close_without_any_call_starts_no_thread() -> None:
    store = ThreadedLightningStore(LoopBoundStore())
    asyncio.run(store.close())
    assert store.owner_thread is None


def test_unclosed_wrapper_stops_its_thread_when_collected() -> None:
    store = ThreadedLightningStore(LoopBoundStore())
    asyncio.run(store.enqueue_rollout("a"))
    owner = store.owner_thread
    assert owner is not None
    del store
    gc.collect()
    owner.join(_HANG_BOUND)
    assert not owner.is_alive()


def test_every_method_is_delegated_on_the_owner_path() -> None:
    inner = InMemoryLightningStore()
    inner.thread_safe = False  # type: ignore[misc]  # force the owner-thread path on a real store
    store = ThreadedLightningStore(inner)
    assert not store.direct

    async def scenario() -> None:
        started = await store.start_rollout("s")
        queued = await store.enqueue_rollout("q")
        claimed = await store.start_attempt(queued.rollout_id)
        assert claimed.attempt.sequence_id == 1
        span = await store.add_span(
            Span(rollout_id=started.rollout_id, attempt_id=started.attempt.attempt_id, span_id="x")
        )
        assert span.sequence_id == 1
        assert [s.span_id for s in await store.query_spans(started.rollout_id, "latest")] == ["x"]
        assert (await store.get_latest_attempt(started.rollout_id)).status == "running"  # type: ignore[union-attr]
        assert len(await store.query_attempts(started.rollout_id)) == 1
        await store.update_attempt(started.rollout_id, "latest", worker_id="w")
        await store.update_rollout(queued.rollout_id, status="cancelled")
        assert [r.rollout_id for r in await store.query_rollouts(status=["cancelled"])] == [queued.rollout_id]
        assert (await store.get_rollout_by_id(started.rollout_id)).status == "running"  # type: ignore[union-attr]
        update = await store.add_resources({"k": 1})
        assert await store.get_latest_resources() == update
        assert await store.get_resources_by_id(update.resources_id) == update
        assert await store.dequeue_rollout() is None
        assert [r.rollout_id for r in await store.wait_for_rollouts(rollout_ids=[queued.rollout_id])] == [
            queued.rollout_id
        ]
        with pytest.raises(ValueError, match="ro-ghost"):  # errors cross the thread boundary intact
            await store.start_attempt("ro-ghost")
        await store.close()

    asyncio.run(scenario())
    assert store.owner_thread is not None and not store.owner_thread.is_alive()


def test_bad_construction_is_rejected() -> None:
    with pytest.raises(TypeError, match="store"):
        ThreadedLightningStore(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="close_inner"):
        ThreadedLightningStore(InMemoryLightningStore(), close_inner="yes")  # type: ignore[arg-type]


def test_close_inner_on_the_direct_path() -> None:
    closed: list[str] = []

    class Tracked(InMemoryLightningStore):
        async def close(self) -> None:
            closed.append(threading.current_thread().name)

    asyncio.run(ThreadedLightningStore(Tracked(), close_inner=True).close())
    ThreadedLightningStore(Tracked(), close_inner=True).close_sync()
    assert closed == [threading.current_thread().name] * 2
    assert "direct" in repr(ThreadedLightningStore(InMemoryLightningStore()))


def test_close_cancels_calls_still_in_flight_on_the_owner_loop() -> None:
    inner = LoopBoundStore()
    store = ThreadedLightningStore(inner)

    async def scenario() -> None:
        rollout = await store.enqueue_rollout("a")
        pending = asyncio.ensure_future(store.wait_for_rollouts(rollout_ids=[rollout.rollout_id]))
        while not inner._waiters:
            await asyncio.sleep(0)
        await store.close()
        with pytest.raises(RuntimeError, match="closed while this call was in flight"):
            await pending
        assert inner._waiters == {}

    asyncio.run(scenario())
    assert store.owner_thread is not None and not store.owner_thread.is_alive()


def test_a_slow_call_never_blocks_the_callers_loop() -> None:
    gate: asyncio.Event | None = None
    gate_ready = threading.Event()

    class SlowStore(LoopBoundStore):
        async def get_latest_resources(self) -> Any:
            nonlocal gate
            gate = asyncio.Event()  # created on, and only awaited by, the owner loop
            owner_loop = asyncio.get_running_loop()
            gate_ready.set()
            await gate.wait()
            assert asyncio.get_running_loop() is owner_loop
            return await super().get_latest_resources()

    store = ThreadedLightningStore(SlowStore())

    async def scenario() -> None:
        slow = asyncio.ensure_future(store.get_latest_resources())
        ticks = 0
        while not gate_ready.is_set() or ticks < 100:  # the caller's loop keeps running other work
            await asyncio.sleep(0)
            ticks += 1
        assert not slow.done()
        owner = store.owner_thread
        assert owner is not None and gate is not None
        store_loop = store._owner.loop  # type: ignore[union-attr]
        store_loop.call_soon_threadsafe(gate.set)
        assert await asyncio.wait_for(slow, _HANG_BOUND) is None
        await store.close()

    asyncio.run(scenario())
