"""T3 bookkeeping: who holds which attempt (``ClaimLedger``, ``ClaimTrackingStore``), how a client that is
gone has its attempts given up, how a live one keeps them alive with heartbeats, and how the ipc and HTTP
servers name the client behind each request."""

from __future__ import annotations

import asyncio
import os
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FakeClock, run

from agentlightning.store.claims import CURRENT_CLIENT, ClaimTrackingStore
from agentlightning.store.http import HttpLightningStore, LightningStoreServer
from agentlightning.store.ipc import IpcLightningStore, IpcStoreServer, peer_client
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import RolloutConfig, Span

RETRY = RolloutConfig(max_attempts=2, retry_condition=["unresponsive"])


# -- attribution and giving up -----------------------------------------------------------------------------


def test_T3_claims_are_recorded_per_client_and_dropped_once_ended() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        served = ClaimTrackingStore(store)  # a server's view: the client comes from CURRENT_CLIENT
        for i in range(4):
            await store.enqueue_rollout({"i": i})
        a = CURRENT_CLIENT.set("runner-a")
        first = await served.dequeue_rollout()
        second = await served.dequeue_rollout()
        CURRENT_CLIENT.reset(a)
        b = CURRENT_CLIENT.set("runner-b")
        third = await served.dequeue_rollout()
        CURRENT_CLIENT.reset(b)
        unnamed = await served.dequeue_rollout()  # the algorithm's own call: nobody's claim
        assert first and second and third and unnamed
        ledger = served.ledger
        assert sorted(ledger.clients()) == ["runner-a", "runner-b"]
        assert [c.attempt_id for c in ledger.held("runner-a")] == [
            first.attempt.attempt_id,
            second.attempt.attempt_id,
        ]
        a = CURRENT_CLIENT.set("runner-a")
        await served.update_attempt(first.rollout_id, first.attempt.attempt_id, status="running")
        assert len(ledger.held("runner-a")) == 2  # still in flight
        await served.update_attempt(first.rollout_id, first.attempt.attempt_id, status="succeeded")
        await served.update_rollout(second.rollout_id, status="cancelled")
        CURRENT_CLIENT.reset(a)
        assert ledger.held("runner-a") == [] and len(ledger.held("runner-b")) == 1

    run(scenario())


@pytest.mark.parametrize(("config", "expected"), [(None, "failed"), (RETRY, "requeuing")])
def test_T3_give_up_marks_only_attempts_still_in_flight(config: RolloutConfig | None, expected: str) -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        mine = ClaimTrackingStore(store, client="runner 0")
        done_id = (await store.enqueue_rollout("done", config=config)).rollout_id
        held_id = (await store.enqueue_rollout("held", config=config)).rollout_id
        done = await mine.dequeue_rollout()
        held = await mine.dequeue_rollout()
        assert done and held and (done.rollout_id, held.rollout_id) == (done_id, held_id)
        # The runner's report went straight to the store (not through its tracker): the ledger still
        # lists it, and giving up must leave it as it is.
        await store.update_attempt(done_id, done.attempt.attempt_id, status="succeeded")
        marked = await mine.ledger.give_up(store, "runner 0")
        assert [c.rollout_id for c in marked] == [held_id]
        assert (await store.get_rollout_by_id(done_id)).status == "succeeded"  # type: ignore[union-attr]
        assert (await store.get_latest_attempt(held_id)).status == "unresponsive"  # type: ignore[union-attr]
        assert (await store.get_rollout_by_id(held_id)).status == expected  # type: ignore[union-attr]
        assert mine.ledger.clients() == [] and await mine.ledger.give_up(store, "runner 0") == []

    run(scenario())


def test_T3_claiming_a_rollout_again_holds_only_the_new_attempt() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        mine = ClaimTrackingStore(store, client="runner 0")
        rollout = await store.enqueue_rollout("x")
        first = await mine.dequeue_rollout()
        again = await mine.start_attempt(rollout.rollout_id)  # supersedes the first attempt
        assert first and [c.attempt_id for c in mine.ledger.held("runner 0")] == [again.attempt.attempt_id]
        started = await mine.start_rollout("direct")
        assert len(mine.ledger.held("runner 0")) == 2
        await mine.ledger.give_up(store, "runner 0")
        assert (await store.get_latest_attempt(started.rollout_id)).status == "unresponsive"  # type: ignore[union-attr]

    run(scenario())


# -- heartbeats ---------------------------------------------------------------------------------------------


def test_T3_heartbeats_keep_a_silent_but_live_runner_claimed() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = InMemoryLightningStore(clock=clock)
        runner = ClaimTrackingStore(store, client="runner 0", heartbeats=True, clock=clock)
        kept = await store.enqueue_rollout("kept", config=RolloutConfig(unresponsive_seconds=30))
        attempted = await runner.dequeue_rollout()
        assert attempted is not None
        try:
            assert await runner.send_due_heartbeats() == clock.now + 10  # a third of the window
            for _ in range(30):  # 300 s of a runner that never writes: ten windows
                clock.advance(10)
                await runner.send_due_heartbeats()
            attempt = await store.get_latest_attempt(kept.rollout_id)
            assert attempt is not None and attempt.status == "running"  # a heartbeat moves it on
            assert attempt.last_heartbeat_time is not None
            # Its own writes count: a span now puts the next heartbeat a full period away.
            clock.advance(5)
            await runner.add_span(
                Span(rollout_id=kept.rollout_id, attempt_id=attempted.attempt.attempt_id, span_id="s")
            )
            assert await runner.send_due_heartbeats() == clock.now + 10
            await runner.update_attempt(kept.rollout_id, attempted.attempt.attempt_id, status="succeeded")
            assert runner.ledger.held("runner 0") == [] and await runner.send_due_heartbeats() is None
        finally:
            await runner.close()

    run(scenario())


def test_T3_without_heartbeats_the_same_silence_is_unresponsive() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = InMemoryLightningStore(clock=clock)
        silent = ClaimTrackingStore(store, client="runner 0", clock=clock)  # no heartbeats
        rollout = await store.enqueue_rollout("lost", config=RolloutConfig(unresponsive_seconds=30))
        assert await silent.dequeue_rollout() is not None
        assert await silent.send_due_heartbeats() is None
        clock.advance(31)
        assert (await store.get_latest_attempt(rollout.rollout_id)).status == "unresponsive"  # type: ignore[union-attr]
        assert (await store.get_rollout_by_id(rollout.rollout_id)).status == "failed"  # type: ignore[union-attr]

    run(scenario())


def test_T3_a_heartbeat_for_an_attempt_the_store_ended_lets_it_go() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = InMemoryLightningStore(clock=clock)
        runner = ClaimTrackingStore(store, client="runner 0", heartbeats=True, clock=clock)
        rollout = await store.enqueue_rollout("x", config=RolloutConfig(unresponsive_seconds=30))
        assert await runner.dequeue_rollout() is not None
        try:
            await store.update_rollout(rollout.rollout_id, status="cancelled")  # ended behind its back
            clock.advance(10)
            assert await runner.send_due_heartbeats() is None  # the answer showed it ended
            assert runner.ledger.held("runner 0") == []
        finally:
            await runner.close()

    run(scenario())


def test_T3_no_window_no_heartbeat() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = InMemoryLightningStore(clock=clock)
        runner = ClaimTrackingStore(store, client="runner 0", heartbeats=True, clock=clock)
        await store.enqueue_rollout("x", config=RolloutConfig(unresponsive_seconds=None))
        assert await runner.dequeue_rollout() is not None
        clock.advance(10_000)
        assert await runner.send_due_heartbeats() is None
        assert len(runner.ledger.held("runner 0")) == 1  # still held: a dead runner's is still given up
        await runner.close()

    run(scenario())


def test_the_heartbeat_task_runs_on_the_runners_loop_and_stops_with_close() -> None:
    async def scenario() -> None:
        store = InMemoryLightningStore()
        runner = ClaimTrackingStore(store, client="runner 0", heartbeats=True)
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("agl heartbeats")]
        await store.enqueue_rollout("x")  # the default window: 600 s
        assert await runner.dequeue_rollout() is not None
        tasks = [t for t in asyncio.all_tasks() if t.get_name() == "agl heartbeats runner 0"]
        assert len(tasks) == 1 and not tasks[0].done()
        assert await runner.dequeue_rollout() is None
        await store.enqueue_rollout("y")
        assert await runner.dequeue_rollout() is not None  # the same task keeps both alive
        assert [t for t in asyncio.all_tasks() if t.get_name() == "agl heartbeats runner 0"] == tasks
        await runner.close()
        assert tasks[0].done()
        assert len(runner.ledger.held("runner 0")) == 2  # close stops the heartbeats only
        assert len(await runner.give_up()) == 2  # its end: both attempts are marked
        assert runner.ledger.held("runner 0") == []
        with pytest.raises(ValueError, match="fixed client"):
            await ClaimTrackingStore(store).give_up()

    run(scenario())


def test_the_tracker_pickles_without_its_ledger_and_checks_its_arguments() -> None:
    client = IpcLightningStore("/nonexistent/store.sock")  # picklable, connects lazily
    tracker = ClaimTrackingStore(client, client="runner 3", heartbeats=True, close_inner=True)
    copy = pickle.loads(pickle.dumps(tracker))  # a runner process's copy (spawn, forkserver)
    assert (copy.client, copy.heartbeats, copy.close_inner) == ("runner 3", True, True)
    assert isinstance(copy.inner, IpcLightningStore) and copy.inner.path == client.path
    assert copy.ledger is not tracker.ledger
    with pytest.raises(ValueError, match="client=None"):
        ClaimTrackingStore(InMemoryLightningStore(), heartbeats=True)
    with pytest.raises(ValueError, match="client must be"):
        ClaimTrackingStore(InMemoryLightningStore(), client="")
    with pytest.raises(TypeError, match="inner must be a LightningStore"):
        ClaimTrackingStore(object())  # type: ignore[arg-type]


# -- naming the client behind a request ---------------------------------------------------------------------


class _Recording(InMemoryLightningStore):
    """Remembers which client each dequeue was served for."""

    def __init__(self) -> None:
        super().__init__()
        self.clients: list[str | None] = []

    async def dequeue_rollout(self) -> Any:
        self.clients.append(CURRENT_CLIENT.get())
        return await super().dequeue_rollout()


def test_the_ipc_server_names_each_connection_by_its_peer_process(tmp_path: Any) -> None:
    store = _Recording()
    path = os.path.join(str(tmp_path), "s.sock")

    async def scenario() -> None:
        client = IpcLightningStore(path)
        try:
            await client.dequeue_rollout()
        finally:
            await client.close()

    with IpcStoreServer(store, path):
        run(scenario())
    assert store.clients == [peer_client(os.getpid())]


@pytest.fixture
def tracked_server() -> Iterator[tuple[InMemoryLightningStore, ClaimTrackingStore, LightningStoreServer]]:
    store = InMemoryLightningStore()
    tracked = ClaimTrackingStore(store)
    server = LightningStoreServer(tracked, "127.0.0.1", 0)
    server.start()
    try:
        yield store, tracked, server
    finally:
        server.stop()


def test_the_http_server_names_each_request_by_its_header_and_releases_on_request(
    tracked_server: tuple[InMemoryLightningStore, ClaimTrackingStore, LightningStoreServer],
) -> None:
    store, tracked, server = tracked_server

    async def scenario() -> None:
        base = HttpLightningStore(server.url)
        named = base.named("host-1/runner-0")
        with pytest.raises(ValueError, match="client_name"):
            base.named("")
        try:
            for i in range(3):
                await store.enqueue_rollout({"i": i}, config=RETRY)
            mine = await named.dequeue_rollout()  # the hot path
            await named.start_rollout("direct")  # an ordinary route
            anonymous = await base.dequeue_rollout()
            assert mine and anonymous
            held = tracked.ledger.held("host-1/runner-0")
            assert held[0].rollout_id == mine.rollout_id and len(held) == 2
            assert tracked.ledger.clients() == ["host-1/runner-0"]
            assert await base.release_claims(["host-1/runner-0", "never-seen"]) == 2
            assert await base.release_claims(["host-1/runner-0"]) == 0
            assert (await store.get_rollout_by_id(mine.rollout_id)).status == "requeuing"  # type: ignore[union-attr]
            assert (await store.get_rollout_by_id(anonymous.rollout_id)).status == "preparing"  # type: ignore[union-attr]
        finally:
            await base.close()
            await named.close()

    run(scenario())
