"""``InMemoryLightningStore``: what is its own beyond the store contracts.

The contracts every store keeps (status machine, exactly-once claims, the retry policy, waits, values
and copies, resources, spans: section T) are checked through every access path by the kit's store
suite, ``python -m conformance --store agentlightning.store.memory.InMemoryLightningStore``. Here: FIFO
order, superseding attempts and late writes, its transition table, liveness on an injected clock, its
waiter bookkeeping, field updates and argument checks, and the models it builds without validation.
"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest
from fakes import FakeClock, run
from pydantic import ValidationError

from agentlightning.store.base import UNSET
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import DEFAULT_UNRESPONSIVE_SECONDS, RolloutConfig, Span


def span_for(rollout_id: str, attempt_id: str, span_id: str = "s", sequence_id: int = 0) -> Span:
    return Span(rollout_id=rollout_id, attempt_id=attempt_id, span_id=span_id, sequence_id=sequence_id)


# -- enqueue, dequeue, start ------------------------------------------------------------------------------


def test_enqueue_creates_a_queuing_rollout_without_attempt() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        rollout = await store.enqueue_rollout(
            {"q": 1}, mode="train", resources_id="rs-x", metadata={"k": "v"}
        )
        assert rollout.rollout_id.startswith("ro-")
        assert rollout.status == "queuing"
        assert (rollout.input, rollout.mode, rollout.resources_id, rollout.metadata) == (
            {"q": 1},
            "train",
            "rs-x",
            {"k": "v"},
        )
        assert rollout.end_time is None
        assert await store.query_attempts(rollout.rollout_id) == []
        assert await store.get_latest_attempt(rollout.rollout_id) is None
        assert await store.get_rollout_by_id(rollout.rollout_id) == rollout

    run(scenario())


def test_dequeue_is_fifo_and_never_blocks() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        assert await store.dequeue_rollout() is None
        ids = [(await store.enqueue_rollout(i)).rollout_id for i in range(5)]
        claimed = []
        for _ in range(5):
            attempted = await store.dequeue_rollout()
            assert attempted is not None
            assert attempted.status == "preparing"
            assert attempted.attempt.status == "preparing"
            assert attempted.attempt.sequence_id == 1
            assert attempted.attempt.attempt_id.startswith("at-")
            assert attempted.attempt.rollout_id == attempted.rollout_id
            claimed.append(attempted.rollout_id)
        assert claimed == ids
        assert await store.dequeue_rollout() is None

    run(scenario())


def test_start_attempt_supersedes_the_active_attempt() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        first = await store.start_rollout("a")
        rid = first.rollout_id
        await store.add_span(span_for(rid, first.attempt.attempt_id))
        second = await store.start_attempt(rid)
        assert second.attempt.sequence_id == 2
        assert second.status == "preparing"
        old = (await store.query_attempts(rid))[0]
        assert old.status == "failed" and old.end_time is not None
        # A late success from the superseded runner is dropped and never touches the rollout.
        late = await store.update_attempt(rid, first.attempt.attempt_id, status="succeeded")
        assert late.status == "failed"
        late_span = await store.add_span(span_for(rid, first.attempt.attempt_id, "late"))
        assert late_span.sequence_id == 2
        rollout = await store.get_rollout_by_id(rid)
        assert rollout is not None and rollout.status == "preparing"
        assert [s.span_id for s in await store.query_spans(rid, first.attempt.attempt_id)] == ["s", "late"]

    run(scenario())


# -- spans, heartbeats and the running state ------------------------------------------------------------


def test_span_moves_preparing_to_running_and_gets_sequence_ids() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        await store.enqueue_rollout("a")
        attempted = await store.dequeue_rollout()
        assert attempted is not None
        rid, aid = attempted.rollout_id, attempted.attempt.attempt_id
        spans = [await store.add_span(span_for(rid, aid, f"s{i}")) for i in range(3)]
        assert [s.sequence_id for s in spans] == [1, 2, 3]
        explicit = await store.add_span(span_for(rid, aid, "explicit", sequence_id=10))
        assert explicit.sequence_id == 10
        assert (await store.add_span(span_for(rid, aid, "next"))).sequence_id == 11
        attempt = await store.get_latest_attempt(rid)
        rollout = await store.get_rollout_by_id(rid)
        assert attempt is not None and attempt.status == "running"
        assert attempt.last_heartbeat_time is not None
        assert rollout is not None and rollout.status == "running"

    run(scenario())


def test_heartbeat_moves_preparing_to_running() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        attempted = await store.start_rollout("a")
        attempt = await store.update_attempt(
            attempted.rollout_id, attempted.attempt.attempt_id, last_heartbeat_time=123.0, worker_id="w1"
        )
        assert attempt.status == "running"
        assert attempt.last_heartbeat_time == 123.0
        assert attempt.worker_id == "w1"
        rollout = await store.get_rollout_by_id(attempted.rollout_id)
        assert rollout is not None and rollout.status == "running"

    run(scenario())


# -- outcomes and the retry policy ------------------------------------------------------------------------


def test_attempt_success_propagates_and_stamps_end_time() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore(clock=FakeClock())
        await store.enqueue_rollout("a")
        attempted = await store.dequeue_rollout()
        assert attempted is not None
        attempt = await store.update_attempt(attempted.rollout_id, "latest", status="succeeded")
        assert attempt.status == "succeeded" and attempt.end_time == 1000.0
        rollout = await store.get_rollout_by_id(attempted.rollout_id)
        assert rollout is not None and rollout.status == "succeeded" and rollout.end_time == 1000.0

    run(scenario())


def test_requeued_rollout_goes_to_the_back_of_the_queue() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        cfg = RolloutConfig(max_attempts=2, retry_condition=["failed"])
        first = await store.enqueue_rollout("a", config=cfg)
        second = await store.enqueue_rollout("b", config=cfg)
        claimed = await store.dequeue_rollout()
        assert claimed is not None and claimed.rollout_id == first.rollout_id
        await store.update_attempt(first.rollout_id, "latest", status="failed")
        order = [(await store.dequeue_rollout()) for _ in range(2)]
        assert [r.rollout_id for r in order if r is not None] == [second.rollout_id, first.rollout_id]

    run(scenario())


# -- update_rollout and the status machine ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rollout_status", "attempt_status"),
    [("succeeded", "succeeded"), ("failed", "failed"), ("cancelled", "failed")],
)
def test_terminal_rollout_update_ends_the_active_attempt(rollout_status: str, attempt_status: str) -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        attempted = await store.start_rollout("a")
        rollout = await store.update_rollout(attempted.rollout_id, status=rollout_status)  # type: ignore[arg-type]
        assert rollout.status == rollout_status and rollout.end_time is not None
        attempt = await store.get_latest_attempt(attempted.rollout_id)
        assert attempt is not None and attempt.status == attempt_status and attempt.end_time is not None

    run(scenario())


def test_update_rollout_requeuing_puts_it_back_in_the_queue() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        await store.enqueue_rollout("a")
        attempted = await store.dequeue_rollout()
        assert attempted is not None
        rollout = await store.update_rollout(attempted.rollout_id, status="requeuing")
        assert rollout.status == "requeuing"
        again = await store.dequeue_rollout()
        assert again is not None and again.rollout_id == attempted.rollout_id
        assert again.attempt.sequence_id == 2
        assert (await store.query_attempts(attempted.rollout_id))[0].status == "failed"

    run(scenario())


def test_queuing_and_requeuing_relabel_without_duplicating_the_entry() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        rollout = await store.enqueue_rollout("a")
        await store.update_rollout(rollout.rollout_id, status="requeuing")
        await store.update_rollout(rollout.rollout_id, status="queuing")
        assert (await store.dequeue_rollout()) is not None
        assert await store.dequeue_rollout() is None

    run(scenario())


@pytest.mark.parametrize(
    ("setup", "target"),
    [
        ("succeeded", "queuing"),
        ("failed", "succeeded"),
        ("cancelled", "requeuing"),
        ("queuing", "preparing"),
        ("queuing", "running"),
        ("running", "preparing"),
    ],
)
def test_illegal_rollout_transitions_name_both_states(setup: str, target: str) -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        rollout = await store.enqueue_rollout("a")
        rid = rollout.rollout_id
        if setup == "running":
            attempted = await store.dequeue_rollout()
            assert attempted is not None
            await store.add_span(span_for(rid, attempted.attempt.attempt_id))
        elif setup != "queuing":
            await store.update_rollout(rid, status=setup)  # type: ignore[arg-type]
        with pytest.raises(ValueError) as info:
            await store.update_rollout(rid, status=target)  # type: ignore[arg-type]
        assert f"rollout {rid}: cannot go from '{setup}' to '{target}'" in str(info.value)
        current = await store.get_rollout_by_id(rid)
        assert current is not None and current.status == setup

    run(scenario())


def test_asking_for_the_current_status_again_is_a_noop() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        attempted = await store.start_rollout("a")
        rid, aid = attempted.rollout_id, attempted.attempt.attempt_id
        await store.update_attempt(rid, aid, status="succeeded")
        again = await store.update_attempt(rid, aid, status="succeeded")
        assert again.status == "succeeded"
        same = await store.update_rollout(rid, status="succeeded")
        assert same.status == "succeeded"

    run(scenario())


def test_update_rollout_changes_fields() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        rollout = await store.enqueue_rollout("a")
        cfg = RolloutConfig(max_attempts=4)
        updated = await store.update_rollout(
            rollout.rollout_id,
            input={"new": 1},
            mode="test",
            resources_id="rs-1",
            config=cfg,
            metadata={"m": 2},
        )
        assert (updated.input, updated.mode, updated.resources_id, updated.metadata) == (
            {"new": 1},
            "test",
            "rs-1",
            {"m": 2},
        )
        assert updated.config.max_attempts == 4
        cleared = await store.update_rollout(rollout.rollout_id, mode=None, resources_id=None)
        assert cleared.mode is None and cleared.resources_id is None and cleared.input == {"new": 1}
        unchanged = await store.update_rollout(rollout.rollout_id, input=UNSET)
        assert unchanged == cleared

    run(scenario())


def test_unknown_ids_are_named() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        rollout = await store.enqueue_rollout("a")
        with pytest.raises(ValueError, match="ro-missing"):
            await store.update_rollout("ro-missing", status="cancelled")
        with pytest.raises(ValueError, match="ro-missing"):
            await store.start_attempt("ro-missing")
        with pytest.raises(ValueError, match="ro-missing"):
            await store.update_attempt("ro-missing", "latest", status="failed")
        with pytest.raises(ValueError, match=rollout.rollout_id):
            await store.update_attempt(rollout.rollout_id, "latest", status="failed")  # no attempt yet
        with pytest.raises(ValueError, match="at-missing"):
            await store.update_attempt(rollout.rollout_id, "at-missing", status="failed")
        assert await store.get_rollout_by_id("ro-missing") is None
        assert await store.get_latest_attempt("ro-missing") is None
        assert await store.query_attempts("ro-missing") == []

    run(scenario())


def test_query_rollouts_filters_in_creation_order() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        ids = [(await store.enqueue_rollout(i)).rollout_id for i in range(6)]
        for rid in (ids[4], ids[1]):
            await store.update_rollout(rid, status="cancelled")
        claimed = await store.dequeue_rollout()
        assert claimed is not None and claimed.rollout_id == ids[0]
        all_ids = [r.rollout_id for r in await store.query_rollouts()]
        assert all_ids == ids
        cancelled = await store.query_rollouts(status=["cancelled"])
        assert [r.rollout_id for r in cancelled] == [ids[1], ids[4]]
        mixed = await store.query_rollouts(status=["queuing", "preparing"])
        assert [r.rollout_id for r in mixed] == [ids[0], ids[2], ids[3], ids[5]]
        by_id = await store.query_rollouts(rollout_ids=[ids[5], ids[2], "ro-unknown", ids[2]])
        assert [r.rollout_id for r in by_id] == [ids[2], ids[5]]
        both = await store.query_rollouts(status=["queuing"], rollout_ids=[ids[0], ids[2]])
        assert [r.rollout_id for r in both] == [ids[2]]

    run(scenario())


# -- liveness: timeout and unresponsive -----------------------------------------------------------------


def test_timeout_is_detected_on_the_injected_clock() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = InMemoryLightningStore(clock=clock)
        cfg = RolloutConfig(timeout_seconds=10, max_attempts=2, retry_condition=["timeout"])
        rollout = await store.enqueue_rollout("a", config=cfg)
        first = await store.dequeue_rollout()
        assert first is not None
        await store.add_span(span_for(rollout.rollout_id, first.attempt.attempt_id))
        clock.advance(9.9)
        assert (await store.get_latest_attempt(rollout.rollout_id)).status == "running"  # type: ignore[union-attr]
        clock.advance(0.2)
        attempt = await store.get_latest_attempt(rollout.rollout_id)
        assert attempt is not None and attempt.status == "timeout" and attempt.end_time == clock.now
        current = await store.get_rollout_by_id(rollout.rollout_id)
        assert current is not None and current.status == "requeuing"
        second = await store.dequeue_rollout()
        assert second is not None and second.attempt.sequence_id == 2
        clock.advance(10)
        current = await store.get_rollout_by_id(rollout.rollout_id)
        assert current is not None and current.status == "failed"

    run(scenario())


def test_unresponsive_counts_silence_since_the_last_heartbeat() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = InMemoryLightningStore(clock=clock)
        cfg = RolloutConfig(unresponsive_seconds=5)
        attempted = await store.start_rollout("a", config=cfg)
        rid, aid = attempted.rollout_id, attempted.attempt.attempt_id
        clock.advance(4)
        await store.update_attempt(rid, aid, last_heartbeat_time=clock.now)
        clock.advance(4)  # 8 s since start, 4 s since the heartbeat
        await store.add_span(span_for(rid, aid))
        clock.advance(4.5)
        assert (await store.get_latest_attempt(rid)).status == "running"  # type: ignore[union-attr]
        clock.advance(1)
        attempt = await store.get_latest_attempt(rid)
        assert attempt is not None and attempt.status == "unresponsive"
        rollout = await store.get_rollout_by_id(rid)
        assert rollout is not None and rollout.status == "failed"
        # The runner was only slow: its late report is dropped, its span kept, the rollout unchanged.
        late = await store.update_attempt(rid, aid, status="succeeded")
        assert late.status == "unresponsive"
        await store.add_span(span_for(rid, aid, "late"))
        assert len(await store.query_spans(rid)) == 2
        rollout = await store.get_rollout_by_id(rid)
        assert rollout is not None and rollout.status == "failed"

    run(scenario())


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, "failed"),
        (RolloutConfig(max_attempts=2, retry_condition=["unresponsive"]), "requeuing"),
    ],
)
def test_T3_an_attempt_nobody_hears_from_is_given_up_by_default(
    config: RolloutConfig | None, expected: str
) -> None:
    """The default unresponsive window (DEFAULT_UNRESPONSIVE_SECONDS): nothing stays claimed forever."""

    async def scenario() -> None:
        clock = FakeClock()
        store = InMemoryLightningStore(clock=clock)
        rollout = await store.enqueue_rollout("a", config=config)
        assert rollout.config.unresponsive_seconds == DEFAULT_UNRESPONSIVE_SECONDS == 600
        assert await store.dequeue_rollout() is not None
        clock.advance(599.9)
        assert (await store.get_latest_attempt(rollout.rollout_id)).status == "preparing"  # type: ignore[union-attr]
        clock.advance(0.2)
        assert (await store.get_latest_attempt(rollout.rollout_id)).status == "unresponsive"  # type: ignore[union-attr]
        assert (await store.get_rollout_by_id(rollout.rollout_id)).status == expected  # type: ignore[union-attr]

    run(scenario())


def test_T3_unresponsive_seconds_none_opts_a_rollout_out_of_the_window() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = InMemoryLightningStore(clock=clock)
        rollout = await store.enqueue_rollout("a", config=RolloutConfig(unresponsive_seconds=None))
        assert await store.dequeue_rollout() is not None
        clock.advance(10 * DEFAULT_UNRESPONSIVE_SECONDS)
        assert (await store.get_latest_attempt(rollout.rollout_id)).status == "preparing"  # type: ignore[union-attr]

    run(scenario())


def test_the_deadline_heap_stays_proportional_to_the_attempts_in_flight() -> None:
    """Every attempt has a deadline by default; ended ones must not pile up in the heap until it passes."""

    async def scenario() -> None:
        store = InMemoryLightningStore()
        held = [await store.start_rollout("held") for _ in range(10)]
        for i in range(20_000):
            # Ended out of order (not always the heap's head): only the rebuild can drop these entries.
            await store.enqueue_rollout(i)
            await store.enqueue_rollout(i)
            first, second = await store.dequeue_rollout(), await store.dequeue_rollout()
            assert first and second
            await store.update_attempt(second.rollout_id, second.attempt.attempt_id, status="succeeded")
            await store.update_attempt(first.rollout_id, first.attempt.attempt_id, status="succeeded")
        assert len(store._deadlines) < 2 * 1024 + len(held)  # bounded by the rebuild threshold
        for attempted in held:  # the live ones kept their deadlines
            assert (await store.get_latest_attempt(attempted.rollout_id)).status == "preparing"  # type: ignore[union-attr]

    run(scenario())


def test_new_deadlines_do_not_wake_a_wait_that_wakes_sooner_anyway(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a window on every attempt, a new attempt often has the earliest deadline; a wait whose own
    timeout comes first must not be woken (cross-thread, in a strategy) for every one of them."""
    fired: list[object] = []
    fire = InMemoryLightningStore._fire
    monkeypatch.setattr(InMemoryLightningStore, "_fire", staticmethod(lambda w: (fired.append(w), fire(w))))

    async def scenario() -> None:
        store = InMemoryLightningStore()
        # Not queued (nobody dequeues it) and without a window of its own.
        watched = await store.start_rollout("watched", config=RolloutConfig(unresponsive_seconds=None))
        wait = asyncio.ensure_future(store.wait_for_rollouts(rollout_ids=[watched.rollout_id], timeout=30))
        await asyncio.sleep(0)  # the wait is armed, on its 30 s timeout (no deadline yet)
        for i in range(50):  # each attempt is alone in the heap: the earliest deadline, 600 s away
            await store.enqueue_rollout(i)
            claimed = await store.dequeue_rollout()
            assert claimed is not None
            await store.update_attempt(claimed.rollout_id, claimed.attempt.attempt_id, status="succeeded")
        assert fired == []
        await store.update_rollout(watched.rollout_id, status="succeeded")
        assert [r.rollout_id for r in await wait] == [watched.rollout_id]

    run(scenario())


def test_config_change_reschedules_the_active_attempts_deadline() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = InMemoryLightningStore(clock=clock)
        attempted = await store.start_rollout("a")
        clock.advance(100)
        await store.update_rollout(attempted.rollout_id, config=RolloutConfig(timeout_seconds=150))
        clock.advance(49)
        assert (await store.get_latest_attempt(attempted.rollout_id)).status == "preparing"  # type: ignore[union-attr]
        clock.advance(2)
        assert (await store.get_latest_attempt(attempted.rollout_id)).status == "timeout"  # type: ignore[union-attr]

    run(scenario())


def test_finished_attempts_are_not_expired() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = InMemoryLightningStore(clock=clock)
        attempted = await store.start_rollout(
            "a", config=RolloutConfig(timeout_seconds=1, unresponsive_seconds=1)
        )
        await store.update_attempt(attempted.rollout_id, "latest", status="succeeded")
        clock.advance(10)
        rollout = await store.get_rollout_by_id(attempted.rollout_id)
        assert rollout is not None and rollout.status == "succeeded"
        assert len(store._deadlines) == 0  # the stale entries were swept, nothing fired

    run(scenario())


# -- wait_for_rollouts ---------------------------------------------------------------------------------------


def test_wait_times_out_with_the_partial_result_and_leaves_no_waiter() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        done = await store.start_rollout("done")
        await store.update_rollout(done.rollout_id, status="succeeded")
        pending = await store.enqueue_rollout("pending")
        result = await store.wait_for_rollouts(
            rollout_ids=[pending.rollout_id, done.rollout_id], timeout=0.05
        )
        assert [r.rollout_id for r in result] == [done.rollout_id]
        assert await store.wait_for_rollouts(rollout_ids=[pending.rollout_id], timeout=0) == []
        assert store._waiters == {} and store._all_waiters == set()

    run(scenario())


def test_cancelled_wait_leaves_no_waiter_and_never_holds_the_lock() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        rollout = await store.enqueue_rollout("a")
        task = asyncio.create_task(store.wait_for_rollouts(rollout_ids=[rollout.rollout_id]))
        while not store._waiters:
            await asyncio.sleep(0)  # let the task register (a yield, not a timed wait)
        assert not store._lock.locked()  # the wait is parked without the lock
        # Other calls on the same loop proceed while the wait is pending.
        assert (await store.dequeue_rollout()) is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert store._waiters == {} and store._all_waiters == set()

    run(scenario())


def test_overlapping_waits_on_shared_ids_each_wake_on_their_own_ids() -> None:
    """Two waits registered on one id: each wakes when all of its own ids finish, and one that is
    cancelled leaves the other's registration intact."""

    async def scenario() -> None:
        store = InMemoryLightningStore()
        r1, r2, r3 = [(await store.enqueue_rollout(name)).rollout_id for name in ("1", "2", "3")]
        first = asyncio.create_task(store.wait_for_rollouts(rollout_ids=[r1, r2], timeout=30))
        second = asyncio.create_task(store.wait_for_rollouts(rollout_ids=[r2, r3], timeout=30))
        third = asyncio.create_task(store.wait_for_rollouts(rollout_ids=[r3], timeout=30))
        while len(store._all_waiters) < 3:
            await asyncio.sleep(0)  # let the tasks register (a yield, not a timed wait)
        await store.update_rollout(r2, status="succeeded")
        await store.update_rollout(r1, status="failed")
        assert [r.rollout_id for r in await asyncio.wait_for(first, 10)] == [r1, r2]
        assert not second.done() and not third.done()
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert set(store._waiters) == {r3}
        await store.update_rollout(r3, status="cancelled")
        assert [r.status for r in await asyncio.wait_for(third, 10)] == ["cancelled"]
        assert store._waiters == {} and store._all_waiters == set()

    run(scenario())


def test_wait_alone_detects_a_dead_runner() -> None:
    """No other traffic: the wait's own timer at the attempt deadline expires the silent attempt."""

    async def scenario() -> None:
        store = InMemoryLightningStore()
        cfg = RolloutConfig(unresponsive_seconds=0.05)
        rollout = await store.enqueue_rollout("a", config=cfg)
        waiting = asyncio.create_task(store.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=30))
        while not store._waiters:
            await asyncio.sleep(0)
        # Claimed after the wait began (the wait had no deadline to plan for), then never heard of again.
        assert await store.dequeue_rollout() is not None
        done = await waiting
        assert [r.status for r in done] == ["failed"]
        assert (await store.get_latest_attempt(rollout.rollout_id)).status == "unresponsive"  # type: ignore[union-attr]

    run(scenario())


# -- copies ------------------------------------------------------------------------------------------------


def test_T5_returned_models_of_one_rollout_are_independent_of_each_other() -> None:
    """Two reads of one rollout: assigning fields of one, or copying it with updates, changes neither the
    other nor the store, and each still reports every field as set."""

    async def scenario() -> None:
        store = InMemoryLightningStore()
        rollout_id = (await store.enqueue_rollout({"q": 1})).rollout_id
        await store.update_rollout(rollout_id, status="succeeded")
        first, second = await store.wait_for_rollouts(rollout_ids=[rollout_id, rollout_id])
        assert first == second and first is not second
        untouched = second.model_dump()
        first.status = "cancelled"
        first.input["q"] = 2
        first.metadata["k"] = "v"
        with pytest.raises(ValidationError, match="frozen"):
            first.config.max_attempts = 9  # a config is a frozen value: shared, never changed in place
        assert isinstance(first.config.retry_condition, tuple)
        first.config = RolloutConfig(max_attempts=9, retry_condition=["failed"])
        assert first.model_copy(update={"mode": "val"}).mode == "val"
        assert second.model_dump() == untouched
        reread = await store.get_rollout_by_id(rollout_id)
        assert reread is not None and reread.model_dump() == untouched
        for model in (second, reread):
            assert model.model_fields_set == set(type(model).model_fields)
            assert model.config.model_fields_set == set(RolloutConfig.model_fields)

    run(scenario())


def test_T5_a_config_is_shared_only_when_nothing_in_it_can_change() -> None:
    """The store keeps one config per rollout (frozen, hashable) and hands that one instance to every
    reader; one built without validation (a list inside) is replaced by a validated copy."""

    async def scenario() -> None:
        store = InMemoryLightningStore()
        config = RolloutConfig(max_attempts=2, retry_condition=["failed"])
        assert config.retry_condition == ("failed",) and hash(config) == hash(config.model_copy())
        rollout_id = (await store.enqueue_rollout({"q": 1}, config=config)).rollout_id
        first, second = await store.get_rollout_by_id(rollout_id), await store.get_rollout_by_id(rollout_id)
        assert first is not None and second is not None and first is not second
        assert first.config is second.config and first.config == config
        raw = RolloutConfig.model_construct(max_attempts=2, retry_condition=["failed"])
        updated = await store.update_rollout(rollout_id, config=raw)
        assert updated.config == config and updated.config is not raw
        assert updated.config.retry_condition == ("failed",)
        raw.retry_condition.append("timeout")  # the caller's list: the store kept none of it
        reread = await store.get_rollout_by_id(rollout_id)
        assert reread is not None and reread.config.retry_condition == ("failed",)

    run(scenario())


# -- resources ----------------------------------------------------------------------------------------------


def test_close_is_a_noop_and_the_store_stays_usable() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        await store.close()
        await store.close()
        assert (await store.enqueue_rollout("a")).status == "queuing"

    run(scenario())


# -- bad input ----------------------------------------------------------------------------------------------


_BAD_CALLS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("enqueue_rollout", {"input": 1, "mode": "training"}, ValueError, "mode"),
    ("enqueue_rollout", {"input": 1, "mode": 3}, TypeError, "mode"),
    ("enqueue_rollout", {"input": 1, "resources_id": 5}, TypeError, "resources_id"),
    ("enqueue_rollout", {"input": 1, "config": {"max_attempts": 2}}, TypeError, "config"),
    ("enqueue_rollout", {"input": 1, "metadata": ["x"]}, TypeError, "metadata"),
    ("enqueue_rollout", {"input": 1, "metadata": {1: "x"}}, ValueError, "metadata"),  # the value rule
    ("start_rollout", {"input": 1, "mode": "nope"}, ValueError, "'nope'"),
    ("start_rollout", {"input": 1, "config": "fast"}, TypeError, "config"),
    ("start_attempt", {"rollout_id": 7}, TypeError, "rollout_id"),
    ("start_attempt", {"rollout_id": ""}, ValueError, "rollout_id"),
    ("update_rollout", {"rollout_id": None}, TypeError, "rollout_id"),
    ("update_rollout", {"rollout_id": "ro-x", "status": "done"}, ValueError, "'done'"),
    ("update_rollout", {"rollout_id": "ro-x", "status": 1}, TypeError, "status"),
    ("update_rollout", {"rollout_id": "ro-x", "mode": "prod"}, ValueError, "mode"),
    ("update_rollout", {"rollout_id": "ro-x", "config": None}, TypeError, "config"),
    ("update_rollout", {"rollout_id": "ro-x", "metadata": "m"}, TypeError, "metadata"),
    ("update_rollout", {"rollout_id": "ro-x", "resources_id": 3}, TypeError, "resources_id"),
    ("query_rollouts", {"status": "queuing"}, TypeError, "status"),
    ("query_rollouts", {"status": ["queued"]}, ValueError, "'queued'"),
    ("query_rollouts", {"rollout_ids": "ro-1"}, TypeError, "rollout_ids"),
    ("query_rollouts", {"rollout_ids": [1]}, TypeError, "rollout_ids"),
    ("get_rollout_by_id", {"rollout_id": 1}, TypeError, "rollout_id"),
    ("wait_for_rollouts", {"rollout_ids": "ro-1"}, TypeError, "rollout_ids"),
    ("wait_for_rollouts", {"rollout_ids": [None]}, TypeError, "rollout_ids"),
    ("wait_for_rollouts", {"rollout_ids": [], "timeout": -1}, ValueError, "timeout"),
    ("wait_for_rollouts", {"rollout_ids": [], "timeout": "5"}, TypeError, "timeout"),
    ("wait_for_rollouts", {"rollout_ids": [], "timeout": float("nan")}, ValueError, "timeout"),
    ("wait_for_rollouts", {"rollout_ids": [], "timeout": True}, TypeError, "timeout"),
    ("query_attempts", {"rollout_id": b"ro"}, TypeError, "rollout_id"),
    ("get_latest_attempt", {"rollout_id": 0}, TypeError, "rollout_id"),
    ("update_attempt", {"rollout_id": 1, "attempt_id": "latest"}, TypeError, "rollout_id"),
    ("update_attempt", {"rollout_id": "ro-x", "attempt_id": None}, TypeError, "attempt_id"),
    (
        "update_attempt",
        {"rollout_id": "ro-x", "attempt_id": "latest", "status": "done"},
        ValueError,
        "'done'",
    ),
    (
        "update_attempt",
        {"rollout_id": "ro-x", "attempt_id": "latest", "status": ["failed"]},
        TypeError,
        "status",
    ),
    (
        "update_attempt",
        {"rollout_id": "ro-x", "attempt_id": "latest", "worker_id": 3},
        TypeError,
        "worker_id",
    ),
    (
        "update_attempt",
        {"rollout_id": "ro-x", "attempt_id": "latest", "last_heartbeat_time": "now"},
        TypeError,
        "last_heartbeat_time",
    ),
    (
        "update_attempt",
        {"rollout_id": "ro-x", "attempt_id": "latest", "last_heartbeat_time": float("inf")},
        ValueError,
        "last_heartbeat_time",
    ),
    ("update_attempt", {"rollout_id": "ro-x", "attempt_id": "latest", "metadata": 5}, TypeError, "metadata"),
    ("add_span", {"span": {"span_id": "s"}}, TypeError, "span"),
    ("query_spans", {"rollout_id": 5}, TypeError, "rollout_id"),
    ("query_spans", {"rollout_id": "ro-x", "attempt_id": 5}, TypeError, "attempt_id"),
    ("add_resources", {"resources": ["a"]}, TypeError, "resources"),
    ("add_resources", {"resources": {2: "a"}}, ValueError, "resources"),  # the value rule
    ("get_resources_by_id", {"resources_id": None}, TypeError, "resources_id"),
]


@pytest.mark.parametrize(("method", "kwargs", "error", "named"), _BAD_CALLS)
def test_bad_input_is_rejected_naming_the_parameter(
    method: str, kwargs: dict[str, Any], error: type[Exception], named: str
) -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        with pytest.raises(error) as info:
            await getattr(store, method)(**kwargs)
        assert named in str(info.value)
        assert await store.query_rollouts() == []  # nothing was half-done

    run(scenario())


def test_bad_clock_is_rejected() -> None:
    with pytest.raises(TypeError, match="clock"):
        InMemoryLightningStore(clock=5)  # type: ignore[arg-type]


def test_returned_models_behave_like_validated_ones() -> None:
    """The store builds its copies without re-validation: they must still be complete pydantic models."""

    async def scenario() -> None:
        store = InMemoryLightningStore()
        await store.enqueue_rollout({"q": [1]}, metadata={"m": 1}, config=RolloutConfig(max_attempts=2))
        attempted = await store.dequeue_rollout()
        assert attempted is not None
        span = await store.add_span(span_for(attempted.rollout_id, attempted.attempt.attempt_id))
        resources = await store.add_resources({"k": "v"})
        for model in (attempted, attempted.attempt, attempted.config, span, resources):
            cls = type(model)
            assert cls.model_validate(model.model_dump()) == model
            assert cls.model_validate_json(model.model_dump_json()) == model
            assert pickle.loads(pickle.dumps(model)) == model
            assert model.model_copy() == model
            assert repr(model)
        rollout = await store.get_rollout_by_id(attempted.rollout_id)
        assert rollout is not None
        rollout.mode = "train"  # plain attribute assignment works on a copy
        assert rollout.model_dump()["mode"] == "train"

    run(scenario())


def test_update_rollout_running_and_attempt_metadata() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        attempted = await store.start_rollout(("tuple", ["input"]))
        rid = attempted.rollout_id
        rollout = await store.update_rollout(rid, status="running")
        # Stored as a list: what every wire makes of a tuple, so it reads back the same on every path (T5).
        assert rollout.status == "running" and rollout.input == ["tuple", ["input"]]
        attempt = await store.update_attempt(rid, "latest", metadata={"tries": [1]})
        assert attempt.status == "running" and attempt.metadata == {"tries": [1]}
        assert repr(store).startswith("<InMemoryLightningStore")
        by_tuple = await store.query_rollouts(rollout_ids=(rid,))
        assert [r.rollout_id for r in by_tuple] == [rid]

    run(scenario())
