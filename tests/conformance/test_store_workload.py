"""T9's workloads and driver, end to end: the reference store passes; each of four broken stores (one defect
each, defined here) is caught for the right contract, shrunk, encoded for replay and re-run to say how often
it reproduces."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings

from agentlightning.store.base import LightningStore
from agentlightning.store.memory import InMemoryLightningStore, _resources_out, _rollout_out
from agentlightning.types import Rollout
from conformance.history import Event, check_history, operations
from conformance.store_workload import (
    ClientProgram,
    Step,
    Workload,
    WorkloadBounds,
    decode,
    encode,
    explore,
    format_workload,
    replay,
    run_client,
    run_in_threads,
    workloads,
)

SEED = 0
EXAMPLES = 150

# -- the broken stores: one defect each ------------------------------------------------------------------


class RacyDequeue(InMemoryLightningStore):
    """Finds the queue's head under the lock but claims it after releasing it: two clients can claim one."""

    async def dequeue_rollout(self) -> Any:
        with self._lock:
            queued = ("queuing", "requeuing")
            head = next((r for r in self._queue if r.queue_serial >= 0 and r.data["status"] in queued), None)
        if head is None:
            return None
        time.sleep(0.005)  # the window between the check and the claim, made wide enough to hit
        with self._lock:
            now = self._clock()
            head.queue_serial = -1
            self._set_rollout_status(head, "preparing", now)
            return self._attempted_out(head, self._new_attempt(head, now))


class RequeueBeyondMaxAttempts(InMemoryLightningStore):
    """Requeues whenever the attempt's status is retryable, ignoring ``max_attempts``."""

    def _end_attempt(
        self, arec: Any, status: Any, now: float, *, by_store: bool, propagate: bool = True
    ) -> None:
        record = arec.owner
        claimed = record.latest is arec and record.data["status"] in ("preparing", "running")
        if propagate and claimed and status in record.config.retry_condition:
            super()._end_attempt(arec, status, now, by_store=by_store, propagate=False)
            self._set_rollout_status(record, "requeuing", now)
            return
        super()._end_attempt(arec, status, now, by_store=by_store, propagate=propagate)


class WaitReturnsUnfinished(InMemoryLightningStore):
    """``wait_for_rollouts`` returns every rollout asked for once it gives up, terminal or not."""

    async def wait_for_rollouts(
        self, *, rollout_ids: list[str], timeout: float | None = None
    ) -> list[Rollout]:
        await super().wait_for_rollouts(rollout_ids=rollout_ids, timeout=timeout)
        with self._lock:
            return [_rollout_out(self._rollouts[rid]) for rid in rollout_ids]


class CoarseLatestResources(InMemoryLightningStore):
    """Picks the latest resources by ``create_time`` in whole seconds, keeping the oldest on a tie: a new
    snapshot published within the same second is never served, so the version goes backwards."""

    async def get_latest_resources(self) -> Any:
        with self._lock:
            if not self._resources:
                return None
            return _resources_out(max(self._resources.values(), key=lambda update: int(update.create_time)))


BROKEN = {
    "racy-dequeue": (RacyDequeue, "T2"),
    "requeue-beyond-max-attempts": (RequeueBeyondMaxAttempts, "T3"),
    "wait-returns-unfinished": (WaitReturnsUnfinished, "T4"),
    "resources-go-backwards": (CoarseLatestResources, "T6"),
}


# -- the driver ---------------------------------------------------------------------------------------------


def test_the_reference_store_passes_the_ci_exploration() -> None:
    exploration = explore(InMemoryLightningStore, seed=SEED, max_examples=EXAMPLES)
    assert exploration.finding is None, exploration.finding.report()
    assert exploration.examples == EXAMPLES


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_broken_store_is_caught_for_its_contract_shrunk_and_replayable(name: str) -> None:
    store_class, contract = BROKEN[name]
    exploration = explore(
        store_class,
        seed=SEED,
        max_examples=EXAMPLES,
        replay_command=lambda encoding: f"pytest --store=X -k T9 --conformance-replay {encoding}",
    )
    finding = exploration.finding
    assert finding is not None, f"{name}: not caught in {exploration.examples} workloads"
    assert contract in finding.contracts, finding.report()
    steps = sum(len(program) for program in finding.workload.clients)
    assert steps <= 8, f"{name}: the minimal workload still has {steps} steps\n{finding.report()}"
    assert finding.replay_command == f"pytest --store=X -k T9 --conformance-replay {finding.encoding}"
    assert finding.reruns == 3 and 0 <= finding.reproduced <= 3
    report = finding.report()
    assert "minimal workload:" in report and finding.replay_command in report
    assert any(
        line.lstrip().startswith("!") for line in report.splitlines()
    )  # the timeline marks the culprits
    # The verdict comes from the history alone: checking it again gives the same violations.
    assert [str(v) for v in check_history(finding.history)] == [str(v) for v in finding.violations]
    # The encoding replays the same workload: it fails the broken store again (all but the race reliably)
    # and passes the reference store.
    assert decode(finding.encoding) == finding.workload
    again = replay(finding.encoding, store_class, runs=3)
    if name != "racy-dequeue":
        assert again is not None and again.reproduced == 3, f"{name}: {again and again.reproduced}/3"
    assert replay(finding.encoding, InMemoryLightningStore, runs=3) is None


def test_a_failure_that_does_not_reproduce_is_reported_as_timing_dependent() -> None:
    made: list[int] = []

    def first_store_broken() -> LightningStore:
        """A broken store for the first workload only: nothing the re-runs do can fail again."""
        made.append(1)
        return WaitReturnsUnfinished() if len(made) == 1 else InMemoryLightningStore()

    workload = Workload(setup=("once",), clients=((Step("wait", "all", 0.0),),))
    finding = replay(workload, first_store_broken, runs=1)
    assert finding is not None and finding.reproduced == 1
    finding.reproduced, finding.reruns = 0, 3
    assert finding.timing_dependent
    assert "reproduced 0/3 re-runs: TIMING-DEPENDENT" in finding.report()


def test_the_callers_runner_runs_the_clients() -> None:
    """``run_clients`` decides how clients run (here: one after another, recording what it was given)."""
    given_programs: list[ClientProgram] = []

    def one_by_one(store: LightningStore, programs: Sequence[ClientProgram]) -> list[list[Event]]:
        given_programs.extend(programs)
        return [asyncio.run(run_client(program, store)) for program in programs]

    exploration = explore(WaitReturnsUnfinished, seed=SEED, max_examples=40, run_clients=one_by_one, reruns=1)
    assert exploration.finding is not None and "T4" in exploration.finding.contracts
    assert given_programs and all(program.client.startswith("c") for program in given_programs)


# -- programs and their encoding ---------------------------------------------------------------------------


def test_run_client_resolves_symbolic_references_and_records_every_call() -> None:
    store = InMemoryLightningStore()
    setup = asyncio.run(run_client(ClientProgram("setup", (Step("enqueue", "", "retry"),)), store))
    rid = setup[-1].value["rollout_id"]
    program = ClientProgram(
        "c0",
        (
            Step("update_attempt", "claim:-1", "failed"),  # no claim yet: skipped
            Step("work", "", "failed"),
            Step("add_span", "claim:-1"),
            Step("add_span", "bogus"),
            Step("get_rollout", "setup:0"),
        ),
        setup_rollouts=(rid,),
    )
    ops = operations(asyncio.run(run_client(program, store)))
    assert [op.op for op in ops] == [
        "dequeue_rollout",
        "update_attempt",
        "add_span",
        "add_span",
        "get_rollout_by_id",
    ]
    aid = ops[0].value["attempt"]["attempt_id"]
    assert ops[1].args == {"rollout_id": rid, "attempt_id": aid, "status": "failed"}
    assert ops[2].outcome == "ok" and ops[2].value["sequence_id"] == 1
    assert ops[3].outcome == "fail" and ops[3].error == "ValueError" and "at-bogus-c0" in ops[3].message
    assert ops[4].value["status"] == "requeuing"
    assert all(op.invoke_ns < op.complete_ns for op in ops)
    assert all(
        a.complete_ns < b.invoke_ns for a, b in itertools.pairwise(ops)
    )  # one client: one call at a time


def test_results_are_scribbled_on_after_recording_so_a_store_without_copies_is_caught() -> None:
    class SharesItsRecords(InMemoryLightningStore):
        """get_rollout_by_id hands out one cached object per id: a caller's mutation changes the store's."""

        cache: dict[str, Rollout]

        async def get_rollout_by_id(self, rollout_id: str) -> Rollout | None:
            self.cache = getattr(self, "cache", {})
            if rollout_id not in self.cache:
                found = await super().get_rollout_by_id(rollout_id)
                if found is None:
                    return None
                self.cache[rollout_id] = found
            return self.cache[rollout_id]

    workload = Workload(
        setup=("once",), clients=((Step("get_rollout", "setup:0"), Step("get_rollout", "setup:0")),)
    )
    finding = replay(workload, SharesItsRecords, runs=1)
    assert finding is not None and finding.contracts == ["T5"]
    assert "scribbled-by-c0" in str(finding.violations[0])
    assert replay(workload, InMemoryLightningStore, runs=1) is None


def test_run_in_threads_starts_every_client_and_returns_their_events_in_order() -> None:
    store = InMemoryLightningStore()
    programs = [
        ClientProgram(f"c{i}", (Step("add_resources"), Step("get_latest_resources"))) for i in range(3)
    ]
    histories = run_in_threads(store, programs)
    assert [{event.client for event in events} for events in histories] == [{"c0"}, {"c1"}, {"c2"}]
    assert check_history([event for events in histories for event in events]) == []


@settings(max_examples=50, deadline=None, database=None)
@given(workloads(WorkloadBounds(max_clients=2, max_steps=4)))
def test_workloads_round_trip_through_their_encoding(workload: Workload) -> None:
    encoded = encode(workload)
    assert encoded.startswith("b64:") and " " not in encoded
    assert decode(encoded) == workload
    assert len(workload.clients) <= 2 and all(len(program) <= 4 for program in workload.clients)
    assert format_workload(workload).count("\n") == len(workload.clients)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("b64:!!", "b64: value is not valid base64"),
        ('{"kind": "P1"}', 'not a T9 workload (no "kind": "T9")'),
        (
            '{"kind": "T9", "setup": ["sometimes"], "resources": 0, "clients": []}',
            "unknown rollout config 'sometimes'",
        ),
        (
            '{"kind": "T9", "setup": [], "resources": 0, "clients": [[["fly", "", null]]]}',
            "unknown workload step op 'fly'",
        ),
    ],
)
def test_a_bad_replay_value_is_an_error_naming_it(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="is not a T9 workload") as raised:
        decode(text)
    assert message in str(raised.value)
