"""T9's checker: real histories of the reference store pass; a crafted history breaking each rule is flagged
with that rule (one test per rule), and concurrency is given every order real time allows, no more."""

from __future__ import annotations

import pickle
import re
from typing import Any

import pytest

from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.threaded import ThreadedLightningStore
from conformance.history import (
    RULES,
    Event,
    Violation,
    analyse_history,
    check_history,
    format_history,
    history_from_json,
    history_json,
    operations,
)
from conformance.store_workload import Step, Workload, run_workload

# -- building histories by hand --------------------------------------------------------------------------

ONCE = {"max_attempts": 1, "retry_condition": [], "timeout_seconds": None, "unresponsive_seconds": None}
NO_RETRY = {**ONCE, "retry_condition": ["failed"]}
RETRY = {**ONCE, "max_attempts": 3, "retry_condition": ["failed", "timeout", "unresponsive"]}
EXPIRING = {**ONCE, "max_attempts": 2, "retry_condition": ["unresponsive"], "unresponsive_seconds": 0.05}
TERMINAL = ("succeeded", "failed", "cancelled")


def rollout(
    rid: str, status: str, config: dict[str, Any] = ONCE, metadata: dict[str, Any] | None = None
) -> dict:
    return {
        "rollout_id": rid,
        "input": rid,
        "start_time": 1.0,
        "end_time": 2.0 if status in TERMINAL else None,
        "mode": None,
        "resources_id": None,
        "status": status,
        "config": config,
        "metadata": metadata or {},
    }


def attempt(rid: str, aid: str, seq: int, status: str) -> dict:
    active = status in ("preparing", "running")
    return {
        "rollout_id": rid,
        "attempt_id": aid,
        "sequence_id": seq,
        "start_time": 1.0,
        "end_time": None if active else 2.0,
        "status": status,
        "worker_id": None,
        "last_heartbeat_time": None,
        "metadata": {},
    }


def claimed(rid: str, aid: str, seq: int, config: dict[str, Any] = ONCE) -> dict:
    return {**rollout(rid, "preparing", config), "attempt": attempt(rid, aid, seq, "preparing")}


def span(rid: str, aid: str, seq: int) -> dict:
    return {"rollout_id": rid, "attempt_id": aid, "sequence_id": seq, "span_id": f"s{seq}", "name": ""}


def snapshot(rid: str) -> dict:
    return {"resources_id": rid, "resources": {"v": rid}, "create_time": 1.0}


class History:
    """Operations at given times (ms); ``then`` places the next one of a client right after its last."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.counts: dict[str, int] = {}

    def op(
        self,
        client: str,
        name: str,
        args: dict[str, Any],
        value: Any = None,
        *,
        at: float,
        until: float | None = None,
        outcome: str = "ok",
    ) -> History:
        index = self.counts.get(client, 0)
        self.counts[client] = index + 1
        start = int(at * 1e6)
        end = int((until if until is not None else at + 0.5) * 1e6)
        self.events.append(Event("invoke", client, index, name, start, args))
        if outcome == "ok":
            self.events.append(Event("ok", client, index, name, end, value=value))
        elif outcome == "fail":
            self.events.append(Event("fail", client, index, name, end, error="ValueError", message="refused"))
        elif outcome == "info":
            self.events.append(
                Event("info", client, index, name, end, error="ConnectionError", message="lost")
            )
        return self

    def enqueue(
        self, rid: str, *, at: float, config: dict[str, Any] = ONCE, client: str = "setup"
    ) -> History:
        return self.op(
            client,
            "enqueue_rollout",
            {"input": rid, "config": config},
            rollout(rid, "queuing", config),
            at=at,
        )

    def claim(
        self,
        client: str,
        rid: str,
        aid: str,
        seq: int,
        *,
        at: float,
        config: dict[str, Any] = ONCE,
        **kw: Any,
    ) -> History:
        return self.op(client, "dequeue_rollout", {}, claimed(rid, aid, seq, config), at=at, **kw)

    def end(self, client: str, rid: str, aid: str, seq: int, status: str, *, at: float, **kw: Any) -> History:
        args = {"rollout_id": rid, "attempt_id": aid, "status": status}
        return self.op(client, "update_attempt", args, attempt(rid, aid, seq, status), at=at, **kw)

    def read(
        self, client: str, rid: str, status: str, *, at: float, config: dict[str, Any] = ONCE, **kw: Any
    ) -> History:
        return self.op(
            client, "get_rollout_by_id", {"rollout_id": rid}, rollout(rid, status, config), at=at, **kw
        )

    def publish(self, client: str, rid: str, *, at: float, **kw: Any) -> History:
        value = snapshot(rid)
        return self.op(client, "add_resources", {"resources": value["resources"]}, value, at=at, **kw)

    def latest(self, client: str, rid: str, *, at: float, **kw: Any) -> History:
        return self.op(client, "get_latest_resources", {}, snapshot(rid), at=at, **kw)

    def add_span(self, client: str, rid: str, aid: str, seq: int, *, at: float) -> History:
        args = {"rollout_id": rid, "attempt_id": aid, "span_id": f"s{seq}"}
        return self.op(client, "add_span", args, span(rid, aid, seq), at=at)

    def tag(self, client: str, rid: str, tag: int, *, at: float, **kw: Any) -> History:
        args = {"rollout_id": rid, "metadata": {"tag": tag}}
        return self.op(
            client, "update_rollout", args, rollout(rid, "queuing", metadata={"tag": tag}), at=at, **kw
        )

    def wait(
        self, client: str, ids: list[str], done: list[dict], *, at: float, timeout: float = 0.0, **kw: Any
    ) -> History:
        return self.op(
            client, "wait_for_rollouts", {"rollout_ids": ids, "timeout": timeout}, done, at=at, **kw
        )


def rules(history: History) -> set[str]:
    return {violation.rule for violation in check_history(history.events)}


def only(history: History, rule: str) -> Violation:
    found = check_history(history.events)
    assert found, f"expected a {rule} violation, got none"
    assert {v.rule for v in found} == {rule}, [str(v) for v in found]
    return found[0]


# -- real histories of the reference store ---------------------------------------------------------------

_BUSY = (
    Step("work", "", "failed"),
    Step("update_attempt", "claim:0", "running"),  # it ended 'failed' by this client: refused
    Step("add_span", "claim:-1"),
    Step("wait", "all", 0.0),
    Step("work", "", "succeeded"),
    Step("heartbeat", "claim:-1"),
    Step("query_rollouts"),
    Step("work", "", "unresponsive"),
    Step("add_resources"),
    Step("get_latest_resources"),
    Step("update_rollout", "setup:2", "cancelled"),
    Step("dequeue"),
    Step("add_span", "claim:-1"),
    Step("query_spans", "claim:-1"),
    Step("pause", "", 0.04),
    Step("update_attempt", "claim:-1", "succeeded"),
    Step("query_attempts", "claim:-1"),
    Step("set_metadata", "setup:0", 1),
    Step("get_rollout", "setup:0"),
    Step("update_attempt", "bogus", "failed"),  # an unknown attempt id: refused
    Step("wait", "all", 0.02),
)
_BUSY_WORKLOAD = Workload(
    setup=("retry", "no-retry", "expiring", "once", "retry", "expiring", "retry", "once"),
    resources=1,
    clients=(_BUSY, _BUSY[3:] + _BUSY[:3], _BUSY[6:] + _BUSY[:6], tuple(reversed(_BUSY))),
)


@pytest.mark.parametrize("wrapped", [False, True], ids=["in-process", "threaded-wrapper"])
def test_concurrent_histories_of_the_reference_store_pass(wrapped: bool) -> None:
    def factory() -> Any:
        store = InMemoryLightningStore()
        return ThreadedLightningStore(store) if wrapped else store

    for _ in range(5):
        run = run_workload(_BUSY_WORKLOAD, factory)
        assert run.violations == [], "\n".join(map(str, run.violations)) + "\n" + format_history(run.history)
        ops = operations(run.history)
        assert len(ops) > 60 and {op.client for op in ops} == {"setup", "c0", "c1", "c2", "c3", "audit"}
        assert any(op.outcome == "fail" for op in ops)  # illegal transitions were tried, and refused
        assert run.notes == []


# -- one crafted violation per rule ------------------------------------------------------------------------


def test_every_rule_has_a_test_here() -> None:
    tested = {
        "T1 transition",
        "T1 terminal-final",
        "T1 unknown-id",
        "T1 end-time",
        "T2 double-claim",
        "T2 lost",
        "T3 retry-policy",
        "T3 early-expiry",
        "T4 wait",
        "T5 read-consistency",
        "T6 resources",
        "T7 spans",
    }
    assert set(RULES) == tested


def test_t1_transition_an_illegal_attempt_transition_accepted() -> None:
    h = (
        History()
        .enqueue("r1", at=0)
        .claim("c0", "r1", "a1", 1, at=1)
        .end("c0", "r1", "a1", 1, "succeeded", at=2)
    )
    h.end(
        "c0", "r1", "a1", 1, "failed", at=3
    )  # the runner itself ended it: failed after succeeded is illegal
    violation = only(h, "T1 transition")
    assert "'succeeded' to 'failed'" in violation.message and violation.operations[-1] == "c0#2"
    assert "r1" in violation.ids


def test_t1_transition_a_legal_transition_refused() -> None:
    h = History().enqueue("r1", at=0).claim("c0", "r1", "a1", 1, at=1)
    h.end("c0", "r1", "a1", 1, "running", at=2, outcome="fail")
    assert only(h, "T1 transition").message.startswith("update_attempt on rollout r1 was refused")


def test_t1_a_late_report_about_an_attempt_the_store_ended_is_dropped_not_a_violation() -> None:
    h = History().enqueue("r1", at=0).claim("c0", "r1", "a1", 1, at=1)
    h.op(
        "c1", "update_rollout", {"rollout_id": "r1", "status": "cancelled"}, rollout("r1", "cancelled"), at=2
    )
    h.end("c0", "r1", "a1", 1, "failed", at=3)  # the store's verdict: failed (status report dropped)
    h.op(
        "c0",
        "update_attempt",
        {"rollout_id": "r1", "attempt_id": "a1", "status": "succeeded"},
        attempt("r1", "a1", 1, "failed"),
        at=4,
    )
    assert rules(h) == set()


def test_t1_terminal_final_a_terminal_rollout_left() -> None:
    h = History().enqueue("r1", at=0)
    h.op(
        "c0", "update_rollout", {"rollout_id": "r1", "status": "cancelled"}, rollout("r1", "cancelled"), at=1
    )
    h.read("c1", "r1", "queuing", at=2)
    violation = only(h, "T1 terminal-final")
    assert "reported 'queuing'" in violation.message and "cancelled" in violation.message


def test_t1_unknown_id_an_operation_on_a_made_up_attempt_accepted() -> None:
    h = History().enqueue("r1", at=0).claim("c0", "r1", "a1", 1, at=1)
    h.end("c0", "r1", "at-bogus", 1, "failed", at=2)
    assert "unknown attempt at-bogus" in only(h, "T1 unknown-id").message


def test_t1_end_time_a_terminal_rollout_without_end_time() -> None:
    h = History().enqueue("r1", at=0)
    h.op(
        "c0",
        "update_rollout",
        {"rollout_id": "r1", "status": "failed"},
        {**rollout("r1", "failed"), "end_time": None},
        at=1,
    )
    assert "without an end_time" in only(h, "T1 end-time").message


def test_t2_double_claim_a_rollout_handed_out_while_its_attempt_is_live() -> None:
    h = History().enqueue("r1", at=0).claim("c0", "r1", "a1", 1, at=1).claim("c1", "r1", "a2", 2, at=2)
    violation = only(h, "T2 double-claim")
    assert "while attempt #1 a1 is still preparing" in violation.message
    assert violation.operations[-1] == "c1#0"


def test_t2_double_claim_the_same_attempt_handed_out_twice() -> None:
    h = (
        History()
        .enqueue("r1", at=0)
        .claim("c0", "r1", "a1", 1, at=1, until=3)
        .claim("c1", "r1", "a1", 1, at=2, until=4)
    )
    violation = only(h, "T2 double-claim")
    assert "handed out twice" in violation.message and set(violation.operations) == {"c0#0", "c1#0"}


def test_t2_lost_dequeue_returns_none_while_a_rollout_is_queued() -> None:
    h = History().enqueue("r1", at=0).op("c0", "dequeue_rollout", {}, None, at=1)
    assert "returned None while rollout r1 was 'queuing'" in only(h, "T2 lost").message


def test_t2_an_empty_dequeue_overlapping_the_enqueue_is_fine() -> None:
    h = History().enqueue("r1", at=0).op("c0", "dequeue_rollout", {}, None, at=0.2, until=0.3)
    assert rules(h) == set()


def test_t3_retry_policy_requeued_beyond_max_attempts() -> None:
    h = History().enqueue("r1", at=0, config=NO_RETRY).claim("c0", "r1", "a1", 1, at=1, config=NO_RETRY)
    h.end("c0", "r1", "a1", 1, "failed", at=2).claim("c0", "r1", "a2", 2, at=3, config=NO_RETRY)
    violation = only(h, "T3 retry-policy")
    assert "max_attempts=1" in violation.message and "attempt #1 ended 'failed'" in violation.message


def test_t3_retry_policy_failed_although_the_config_allows_another_attempt() -> None:
    h = History().enqueue("r1", at=0, config=RETRY).claim("c0", "r1", "a1", 1, at=1, config=RETRY)
    h.end("c0", "r1", "a1", 1, "failed", at=2).read("c0", "r1", "failed", at=3, config=RETRY)
    assert "reported 'failed'" in only(h, "T3 retry-policy").message


def test_t3_a_retried_rollout_is_claimed_again_with_the_next_sequence_id() -> None:
    h = History().enqueue("r1", at=0, config=RETRY).claim("c0", "r1", "a1", 1, at=1, config=RETRY)
    h.end("c0", "r1", "a1", 1, "failed", at=2).read("c0", "r1", "requeuing", at=3, config=RETRY)
    h.claim("c1", "r1", "a2", 2, at=4, config=RETRY).end("c1", "r1", "a2", 2, "succeeded", at=5)
    assert rules(h) == set()


def test_t3_early_expiry_an_attempt_unresponsive_before_its_bound() -> None:
    h = History().enqueue("r1", at=0, config=EXPIRING).claim("c0", "r1", "a1", 1, at=1, config=EXPIRING)
    h.op("c0", "query_attempts", {"rollout_id": "r1"}, [attempt("r1", "a1", 1, "unresponsive")], at=2)
    violation = only(h, "T3 early-expiry")
    assert "its bound is 50 ms" in violation.message


def test_t3_an_attempt_expiring_after_its_bound_requeues_by_itself() -> None:
    h = History().enqueue("r1", at=0, config=EXPIRING).claim("c0", "r1", "a1", 1, at=1, config=EXPIRING)
    h.op("c0", "query_attempts", {"rollout_id": "r1"}, [attempt("r1", "a1", 1, "unresponsive")], at=60)
    h.read("c0", "r1", "requeuing", at=61, config=EXPIRING)
    h.end("c0", "r1", "a1", 1, "unresponsive", at=62)  # the runner's late report agrees: dropped, no error
    assert rules(h) == set()


def test_t4_wait_returns_a_non_terminal_rollout() -> None:
    h = History().enqueue("r1", at=0).wait("c0", ["r1"], [rollout("r1", "queuing")], at=1)
    assert "returned r1 in status 'queuing'" in only(h, "T4 wait").message


def test_t4_wait_leaves_out_a_rollout_that_finished_before_it_was_called() -> None:
    h = (
        History()
        .enqueue("r1", at=0)
        .claim("c0", "r1", "a1", 1, at=1)
        .end("c0", "r1", "a1", 1, "succeeded", at=2)
    )
    h.wait("c1", ["r1"], [], at=3, timeout=0.0)
    assert "left out r1, which was already 'succeeded'" in only(h, "T4 wait").message


@pytest.mark.parametrize("included", [True, False])
def test_t4_a_rollout_finishing_during_the_wait_may_or_may_not_be_included(included: bool) -> None:
    h = History().enqueue("r1", at=0).claim("c0", "r1", "a1", 1, at=1)
    h.end("c0", "r1", "a1", 1, "succeeded", at=3, until=4)
    h.wait("c1", ["r1"], [rollout("r1", "succeeded")] if included else [], at=2, until=5, timeout=0.0)
    assert rules(h) == set()


def test_t4_wait_returns_early_with_rollouts_still_running() -> None:
    h = History().enqueue("r1", at=0).wait("c0", ["r1"], [], at=1, until=2, timeout=1.0)
    assert "returned after 1.0 ms" in only(h, "T4 wait").message


def test_t5_read_consistency_a_read_missing_an_acknowledged_write() -> None:
    h = History().enqueue("r1", at=0).tag("c0", "r1", 1, at=1)
    h.read("c1", "r1", "queuing", at=2)  # metadata {} : the write was acknowledged before this read began
    assert "metadata reads {}" in only(h, "T5 read-consistency").message


def test_t5_a_read_overlapping_the_write_may_see_either_value() -> None:
    h = History().enqueue("r1", at=0).tag("c0", "r1", 1, at=1, until=3)
    h.read("c1", "r1", "queuing", at=2, until=4)
    assert rules(h) == set()


def test_t6_resources_a_version_going_backwards() -> None:
    h = History().publish("c0", "rs1", at=0).publish("c0", "rs2", at=1).latest("c1", "rs1", at=2)
    assert "returned rs1; the latest snapshot is rs2" in only(h, "T6 resources").message


def test_t6_a_read_concurrent_with_a_new_version_may_return_the_previous_one() -> None:
    h = History().publish("c0", "rs1", at=0).publish("c0", "rs2", at=1, until=3)
    h.latest("c1", "rs1", at=2).latest("c1", "rs2", at=4)
    assert rules(h) == set()


def test_t6_resources_a_new_snapshot_answered_with_an_old_version() -> None:
    h = History().publish("c0", "rs1", at=0).publish("c1", "rs1", at=1)
    violation = next(v for v in check_history(h.events) if "every snapshot published is a new" in v.message)
    assert violation.rule == "T6 resources" and violation.operations == ("c0#0", "c1#0")


def test_t6_a_snapshot_read_back_with_other_content() -> None:
    h = History().publish("c0", "rs1", at=0)
    h.op(
        "c1", "get_resources_by_id", {"resources_id": "rs1"}, {**snapshot("rs1"), "resources": {"v": 0}}, at=1
    )
    assert "it was written as" in only(h, "T6 resources").message


def test_t7_spans_sequence_ids_not_increasing() -> None:
    h = History().enqueue("r1", at=0).claim("c0", "r1", "a1", 1, at=1)
    h.add_span("c0", "r1", "a1", 1, at=2).add_span("c0", "r1", "a1", 1, at=3)
    assert "got sequence id 1" in only(h, "T7 spans").message


def test_t7_spans_a_span_accepted_for_an_unknown_attempt() -> None:
    h = History().enqueue("r1", at=0).claim("c0", "r1", "a1", 1, at=1).add_span("c0", "r1", "nope", 1, at=2)
    assert "unknown attempt nope" in only(h, "T7 spans").message


def test_t7_spans_read_back_in_order_and_complete() -> None:
    h = History().enqueue("r1", at=0).claim("c0", "r1", "a1", 1, at=1)
    h.add_span("c0", "r1", "a1", 1, at=2).add_span("c0", "r1", "a1", 2, at=3)
    h.op("c0", "query_spans", {"rollout_id": "r1", "attempt_id": "a1"}, [span("r1", "a1", 1)], at=4)
    assert "read [1]; spans are [1, 2]" in only(h, "T7 spans").message


# -- unknown outcomes, the model, the timeline ------------------------------------------------------------


@pytest.mark.parametrize("seen", ["succeeded", "preparing"])
def test_an_update_with_an_unknown_outcome_may_or_may_not_have_happened(seen: str) -> None:
    h = History().enqueue("r1", at=0).claim("c0", "r1", "a1", 1, at=1)
    h.end("c0", "r1", "a1", 1, "succeeded", at=2, outcome="info")
    h.op(
        "c1",
        "get_latest_attempt",
        {"rollout_id": "r1"},
        attempt("r1", "a1", 1, seen),
        at=3,
    )
    assert rules(h) == set()


def test_an_enqueue_with_an_unknown_outcome_ends_the_checking_after_it_and_says_so() -> None:
    h = (
        History()
        .enqueue("r1", at=0)
        .op("c0", "enqueue_rollout", {"input": 1, "config": ONCE}, at=1, outcome="info")
    )
    h.op("c1", "dequeue_rollout", {}, None, at=2)  # would be "lost" for r1 if the checker went on
    analysis = analyse_history(h.events)
    assert analysis.violations == []
    assert any("unknown outcome" in note for note in analysis.notes)


def test_histories_are_picklable_and_round_trip_through_json() -> None:
    h = History().enqueue("r1", at=0).claim("c0", "r1", "a1", 1, at=1).claim("c1", "r1", "a2", 2, at=2)
    assert pickle.loads(pickle.dumps(h.events)) == h.events
    again = history_from_json(history_json(h.events))
    assert again == h.events
    assert [str(v) for v in check_history(again)] == [str(v) for v in check_history(h.events)]


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([Event("ok", "c0", 0, "dequeue_rollout", 1)], "c0#0 completes without an invocation"),
        (
            [Event("invoke", "c0", 0, "dequeue_rollout", 1), Event("invoke", "c0", 1, "dequeue_rollout", 2)],
            "client 'c0' invoked #1 while #0 was still in flight",
        ),
        ([Event("invoke", "c0", 0, "frobnicate", 1)], "operations the checker does not know: ['frobnicate']"),
    ],
)
def test_a_malformed_history_is_an_error_naming_the_operation(events: list[Event], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_history(events)
    with pytest.raises(ValueError, match="event kind must be one of"):
        Event("done", "c0", 0, "dequeue_rollout", 1)


def test_the_timeline_shows_each_operation_and_marks_the_ones_a_violation_names() -> None:
    h = History().enqueue("r1", at=0).claim("c0", "r1", "a1", 1, at=1).claim("c1", "r1", "a2", 2, at=2.25)
    h.op(
        "c1",
        "update_attempt",
        {"rollout_id": "r1", "attempt_id": "zz", "status": "failed"},
        at=3,
        outcome="fail",
    )
    violation = check_history(h.events)[0]
    text = format_history(h.events, highlight=violation.operations)
    lines = text.splitlines()
    assert lines[0].startswith("history: 4 operation(s), 3 client(s)")
    assert any(
        line.startswith("!") and "c1#0" in line and "r1 preparing / a2 #2 preparing" in line for line in lines
    )
    assert "   2.250    2.750  c1#0" in text
    assert 'update_attempt(r1, zz, status="failed") -> FAIL ValueError: refused' in text
