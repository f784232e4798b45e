"""P1's oracle: expected outcomes derived from scenarios alone, and runs judged against them."""

from __future__ import annotations

import pytest

from conformance.capabilities import validate_manifest
from conformance.oracle import OracleError, Outcome, expect, judge
from conformance.scenarios import (
    ExceptionInfo,
    Fault,
    JournalRecord,
    LeakReport,
    Scenario,
    ScenarioResult,
    Script,
    Step,
    StoreFault,
)

CAPS = validate_manifest({"uses_processes": True, "grace_seconds": 1.0, "terminate_seconds": 1.0})


def _gate(name: str) -> Step:
    return Step("gate", args={"name": name})


def _raise(type_name: str, message: str) -> Step:
    return Step("raise", args={"type": type_name, "message": message})


POLL = Script((Step("poll"),))


def _open(turn: int, after: str) -> Fault:
    return Fault("open-gate", after, open_gate=f"turn-{turn}")


def _calm(turn: int, owner_steps: list[Step], action: Step) -> list[Fault]:
    """Append a calm turn to ``owner_steps`` and return the marker's faults."""
    owner_steps += [_gate(f"turn-{turn}"), action, _gate(f"done-{turn}")]
    return [Fault("open-gate", f"gate done-{turn}", open_gate=f"done-{turn}")]


def test_a_schedule_without_a_stop_returns_and_every_poller_must_see_the_stop() -> None:
    scenario = Scenario(
        "P1",
        n_runners=2,
        algorithm=Script((_gate("turn-1"),)),
        runners=(POLL, Script((Step("return"),))),
        faults=(_open(1, "all started"),),
    )
    expectation = expect(scenario, CAPS)
    assert expectation.outcomes == (Outcome("returned"),)
    assert expectation.must_stop == ("runner 0",)  # runner 1 returns on its own
    assert expectation.all_called and not expectation.cancel_ok
    assert expectation.turns_run == ((1, "algorithm"),)


def test_a_runner_error_after_calm_turns_is_raised_with_its_message() -> None:
    runner: list[Step] = []
    faults = [_open(1, "algorithm started"), *_calm(1, runner, Step("sleep", 0.01))]
    runner += [_gate("turn-2"), _raise("ValueError", "boom")]
    faults.append(_open(2, "gate done-1"))
    scenario = Scenario(
        "P1",
        n_runners=2,
        algorithm=Script((_gate("turn-3"),)),
        runners=(Script(tuple(runner)), POLL),
        faults=tuple(faults),
    )
    expectation = expect(scenario, CAPS)
    assert expectation.outcomes == (Outcome("raised", "builtins.ValueError", "boom"),)
    assert set(expectation.must_stop) == {"algorithm", "runner 1"}
    assert expectation.turns_run == ((1, "runner 0"), (2, "runner 0"))


def test_failures_in_one_turn_race_so_each_is_acceptable_and_base_exceptions_allow_cancelling() -> None:
    scenario = Scenario(
        "P1",
        n_runners=2,
        algorithm=Script((_gate("turn-1"), Step("set_event"), _gate("turn-2"))),
        runners=(
            Script((_gate("turn-1"), _raise("ValueError", "a"))),
            Script((_gate("turn-1"), Step("keyboard_interrupt"))),
        ),
        faults=(_open(1, "all started"),),
    )
    expectation = expect(scenario, CAPS)
    assert set(expectation.outcomes) == {
        Outcome("raised", "builtins.ValueError", "a"),
        Outcome("raised", "builtins.KeyboardInterrupt"),
        Outcome("returned"),  # if only the algorithm's set_event happened first
    }
    assert expectation.cancel_ok
    assert expectation.must_stop == ("algorithm",)


@pytest.mark.parametrize(
    ("action", "outcome"),
    [
        ("sigint-main", Outcome("raised", "builtins.KeyboardInterrupt")),
        ("sigint-group", Outcome("raised", "builtins.KeyboardInterrupt")),
        ("sigkill-worker", Outcome("raised", None)),
    ],
)
def test_signal_turns(action: str, outcome: Outcome) -> None:
    scenario = Scenario(
        "P1",
        n_runners=1,
        algorithm=Script((_gate("turn-2"),)),
        runners=(Script((_gate("turn-1"), Step("poll"))),),
        faults=(Fault(action, "all started"),),  # type: ignore[arg-type]
    )
    expectation = expect(scenario, CAPS)
    assert expectation.outcomes == (outcome,)
    assert expectation.killed == ("runner 0" if action == "sigkill-worker" else None)


def test_a_store_fault_on_the_second_enqueue_call_raises_the_injected_error() -> None:
    runner: list[Step] = []
    faults = [_open(1, "all started"), *_calm(1, runner, Step("store", args={"op": "enqueue", "count": 1}))]
    runner += [_gate("turn-2"), Step("store", args={"op": "enqueue", "count": 2})]
    faults.append(_open(2, "gate done-1"))
    scenario = Scenario(
        "P1",
        n_runners=1,
        algorithm=Script((_gate("turn-3"),)),
        runners=(Script(tuple(runner)),),
        faults=tuple(faults),
        store_faults=(StoreFault("runner 0", "enqueue_rollout", 2, raises="ConnectionError"),),
    )
    expectation = expect(scenario, CAPS)
    assert expectation.outcomes == (
        Outcome("raised", "builtins.ConnectionError", "injected fault in store.enqueue_rollout call 2"),
    )


def test_long_non_cooperation_widens_the_bound_by_the_declared_escalation() -> None:
    def scenario(tail: Step) -> Scenario:
        return Scenario(
            "P1",
            n_runners=1,
            algorithm=Script((_gate("turn-1"),)),
            runners=(Script((tail,)),),
            faults=(_open(1, "all started"),),
        )

    short = expect(scenario(Step("ignore_event", 0.05)), CAPS)
    long = expect(scenario(Step("ignore_event", 30.0)), CAPS)
    assert long.must_cancel == ("runner 0",) and short.must_cancel == ()
    assert long.bound == pytest.approx(short.bound + 1.0 + 2 * 1.0)  # grace + SIGINT/SIGTERM steps


def test_a_final_wait_for_enqueued_rollouts_requires_them_all_complete() -> None:
    enqueue_then_wait = Script(
        (
            _gate("turn-1"),
            Step("store", args={"op": "enqueue", "count": 2}),
            Step("store", args={"op": "wait_all"}),
        )
    )
    scenario = Scenario(
        "P1",
        n_runners=1,
        algorithm=enqueue_then_wait,
        runners=(Script((Step("store", args={"op": "work"}),)),),
        faults=(_open(1, "all started"),),
    )
    assert expect(scenario, CAPS).rollouts_complete


def test_sigint_before_start_expects_keyboard_interrupt() -> None:
    scenario = Scenario(
        "P1",
        n_runners=1,
        algorithm=Script((_gate("turn-1"),)),
        runners=(POLL,),
        faults=(Fault("sigint-group", "before start"),),
    )
    expectation = expect(scenario, CAPS)
    assert expectation.outcomes == (Outcome("raised", "builtins.KeyboardInterrupt"),)
    assert set(expectation.must_stop) == {"algorithm", "runner 0"}


def test_a_scenario_that_is_not_a_schedule_is_refused() -> None:
    scenario = Scenario("P1", n_runners=1, algorithm=Script((_gate("turn-1"),)), runners=(POLL,))
    with pytest.raises(OracleError, match="turn-1"):
        expect(scenario, CAPS)


# -- judging -------------------------------------------------------------------------------------------


def _record(t: float, bundle: str, kind: str, detail: str = "", **data: object) -> JournalRecord:
    return JournalRecord(t=t, pid=1, thread="t", bundle=bundle, kind=kind, detail=detail, data=dict(data))


_SCENARIO = Scenario(
    "P1",
    n_runners=1,
    algorithm=Script((_gate("turn-1"),)),
    runners=(POLL,),
    faults=(_open(1, "all started"),),
)


def _good_journal() -> list[JournalRecord]:
    return [
        _record(0.0, "kit", "execute-start"),
        _record(0.01, "algorithm", "start"),
        _record(0.01, "runner 0", "start"),
        _record(0.02, "algorithm", "gate-open", "turn-1"),
        _record(0.03, "algorithm", "end", "returned"),
        _record(0.04, "runner 0", "saw-stop", "poll"),
        _record(0.04, "runner 0", "end", "returned"),
        _record(0.05, "kit", "execute-end", "returned"),
    ]


def _result(journal: list[JournalRecord], **changes: object) -> ScenarioResult:
    fields: dict = {"scenario": _SCENARIO, "outcome": "returned", "duration": 0.05, "journal": tuple(journal)}
    fields.update(changes)
    return ScenarioResult(**fields)


def test_a_good_run_has_no_violation() -> None:
    assert judge(expect(_SCENARIO, CAPS), _result(_good_journal())) == []


def test_each_broken_promise_is_named() -> None:
    expectation = expect(_SCENARIO, CAPS)
    raised = _result(
        _good_journal(),
        outcome="raised",
        exception=ExceptionInfo("builtins.ValueError", "x", ""),
    )
    assert any(v.startswith("E3/K1/E6") for v in judge(expectation, raised))

    journal = [r for r in _good_journal() if r.kind != "saw-stop"]
    journal.insert(5, _record(0.04, "runner 0", "cancelled"))
    assert any("L2/L4: runner 0 never saw the stop" in v for v in judge(expectation, _result(journal)))

    early = [*_good_journal(), _record(0.015, "runner 0", "saw-stop", "poll")]
    assert any(v.startswith("L3:") for v in judge(expectation, _result(early)))

    twice = [
        *_good_journal(),
        _record(0.02, "runner 0", "completed", "ro-1"),
        _record(0.03, "runner 0", "completed", "ro-1"),
    ]
    twice.append(_record(0.01, "algorithm", "enqueued", ids=["ro-1"]))
    assert any("S1: rollouts completed more than once" in v for v in judge(expectation, _result(twice)))

    leaky = _result(_good_journal(), leaks=LeakReport(threads=("worker-thread (daemon)",)))
    assert any(v.startswith("R1-R5/R7") and "worker-thread" in v for v in judge(expectation, leaky))

    slow = [r if r.kind != "execute-end" else _record(9.0, "kit", "execute-end") for r in _good_journal()]
    assert any(v.startswith("L2/L6/K3") for v in judge(expectation, _result(slow)))

    hung = _result(_good_journal()[:3], outcome="hang")
    assert any("hung" in v for v in judge(expectation, hung))


def test_the_kits_own_journal_descriptor_is_not_blamed_on_the_strategy() -> None:
    expectation = expect(_SCENARIO, CAPS)
    kit_fd = _result(_good_journal(), leaks=LeakReport(fds=("fd 12 -> /tmp/z/0018-x/journal.jsonl",)))
    assert judge(expectation, kit_fd) == []
    strategy_fd = _result(_good_journal(), leaks=LeakReport(fds=("fd 12 -> /tmp/z/0018-x/t/store.sock",)))
    assert judge(expectation, strategy_fd)
