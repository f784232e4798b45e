"""P1's scenario generator: valid, capability-aware, reproducible schedules, and their text forms."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings

from conformance.capabilities import validate_manifest
from conformance.faults import validate_condition
from conformance.oracle import expect
from conformance.scenarios import STEP_KINDS, Scenario
from conformance.schedules import (
    LONG_SECONDS,
    TURN_PREFIX,
    ScheduleBounds,
    scenario_from_json,
    scenario_json,
    scenario_source,
    scenarios,
)

_THREADS = validate_manifest(
    {"uses_processes": False, "can_cancel_blocking_code": False, "supports_start_methods": ()}
)
_PROCESSES = validate_manifest({"uses_processes": True, "can_cancel_blocking_code": True})
_FAST = settings(max_examples=60, database=None, deadline=None, suppress_health_check=list(HealthCheck))


def _steps(scenario: Scenario) -> list:
    return [step for script in (scenario.algorithm, *scenario.runners) for step in script.steps]


@_FAST
@given(scenarios(_PROCESSES))
def test_every_drawn_scenario_is_valid_and_readable_by_the_oracle(scenario: Scenario) -> None:
    assert 1 <= scenario.n_runners <= 3
    assert len(scenario.runners) == scenario.n_runners
    for fault in scenario.faults:
        validate_condition(fault.after, scenario.n_runners)  # the sandbox accepts every gate
    assert all(step.kind in STEP_KINDS for step in _steps(scenario))
    # Every turn gate a bundle waits at is opened by a fault or is the gate of a signal turn, or is
    # never opened because the run stopped before it: the oracle reads it back either way.
    expectation = expect(scenario, _PROCESSES)
    assert expectation.outcomes
    assert expectation.bound > 0


@_FAST
@given(scenarios(_THREADS))
def test_undeclared_capabilities_are_never_exercised(scenario: Scenario) -> None:
    assert not any(fault.action == "sigkill-worker" for fault in scenario.faults)
    long_blocks = [step for step in _steps(scenario) if step.kind == "block" and step.seconds >= 1.0]
    assert long_blocks == []


def test_processes_get_worker_kills_and_long_blocks_somewhere() -> None:
    kinds: set[str] = set()

    # 300 draws: the racing shapes (``SHAPES``) take most draws, and signals are one stop of several
    @settings(max_examples=300, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @seed(7)
    @given(scenarios(_PROCESSES))
    def collect(scenario: Scenario) -> None:
        kinds.update(fault.action for fault in scenario.faults)
        kinds.update(
            "long block" for step in _steps(scenario) if step.kind == "block" and step.seconds == LONG_SECONDS
        )

    collect()
    assert {"sigkill-worker", "sigint-main", "sigint-group", "long block"} <= kinds, kinds


def _draw(seed_value: int, count: int = 25) -> list[str]:
    drawn: list[str] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @seed(seed_value)
    @given(scenarios(_PROCESSES, ScheduleBounds(max_runners=2, max_turns=3)))
    def collect(scenario: Scenario) -> None:
        drawn.append(scenario_json(scenario))

    collect()
    return drawn


def test_the_seed_alone_decides_the_schedules() -> None:
    assert _draw(11) == _draw(11)
    assert _draw(11) != _draw(12)


@_FAST
@given(scenarios(_PROCESSES))
def test_json_and_python_forms_round_trip(scenario: Scenario) -> None:
    assert scenario_from_json(scenario_json(scenario)) == scenario
    namespace: dict = {}
    exec(scenario_source(scenario), namespace)  # the printed constructor is pasteable Python
    assert namespace["scenario"] == scenario


def test_replay_accepts_base64_and_a_file(tmp_path) -> None:
    scenario = Scenario("P1", n_runners=1)
    text = scenario_json(scenario)
    assert scenario_from_json("b64:" + base64.b64encode(text.encode()).decode()) == scenario
    path = tmp_path / "minimal.json"
    path.write_text(text)
    assert scenario_from_json(str(path)) == scenario


@pytest.mark.parametrize("bad", ["{not json", '{"name": "P1"}', "b64:@@@", "no-such-file.json"])
def test_a_bad_replay_value_is_named_in_the_error(bad: str) -> None:
    with pytest.raises(ValueError, match="--conformance-replay"):
        scenario_from_json(bad)


def test_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="max_runners"):
        ScheduleBounds(max_runners=0)
    with pytest.raises(ValueError, match="timeout_scale"):
        ScheduleBounds(timeout_scale=0)


def test_turn_gates_follow_the_naming_the_oracle_reads() -> None:
    @settings(max_examples=50, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(scenarios(_THREADS))
    def check(scenario: Scenario) -> None:
        gates = [str(s.args["name"]) for s in scenario.algorithm.steps if s.kind == "gate"]
        assert gates and gates[-1].startswith(TURN_PREFIX)  # the algorithm always ends at its final gate

    check()


def _twins(scenario: Scenario) -> bool:
    """Two bundles or more fail with the same exception at the same turn gate (blind to the event)."""
    failures: dict[str, list[tuple[str, str]]] = {}
    for script in (scenario.algorithm, *scenario.runners):
        for gate, action in zip(script.steps, script.steps[1:], strict=False):
            if gate.kind == "gate" and gate.args.get("ignore_event") and action.kind != "store":
                failures.setdefault(str(gate.args["name"]), []).append(
                    (action.kind, str(action.args.get("type", "")))
                )
    return any(len(found) > len(set(found)) for found in failures.values())


def test_near_simultaneous_twin_failures_are_drawn_often_within_the_runner_count() -> None:
    drawn: list[Scenario] = []

    @settings(max_examples=100, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @seed(0)
    @given(scenarios(_THREADS))
    def collect(scenario: Scenario) -> None:
        drawn.append(scenario)

    collect()
    twins = [scenario for scenario in drawn if _twins(scenario)]
    assert len(twins) >= 10, f"{len(twins)} twin-failure shapes in {len(drawn)} scenarios"
    for scenario in drawn:  # a group's members are distinct bundles of the scenario, each once per gate
        for script in (scenario.algorithm, *scenario.runners):
            names = [step.args["name"] for step in script.steps if step.kind == "gate"]
            assert len(names) == len(set(names))


def _shape_of(scenario: Scenario) -> str:
    """The racing shape a drawn scenario has, read from the scenario alone (``SHAPES``), or ``other``."""
    final = [str(s.args["name"]) for s in scenario.algorithm.steps if s.kind == "gate"][-1]
    turns = {str(s.args["name"]) for s in _steps(scenario) if s.kind == "gate"} - {final}
    signals = [fault for fault in scenario.faults if fault.action != "open-gate"]
    algorithm = [step.kind for step in scenario.algorithm.steps]
    tails = [script.steps[-1] for script in scenario.runners]
    if algorithm == ["gate"] and not signals:
        return "return at once"
    if scenario.n_runners >= 2 and tails[0].args.get("op") == "work" and algorithm[:2] == ["gate", "store"]:
        return "churn" if len(turns) == 0 else "other"
    blind = [s for s in _steps(scenario) if s.kind == "gate" and s.args.get("ignore_event")]
    if len(blind) >= 2 and turns == {"turn-1"}:
        return "fail together"
    return "other"


def _drawn(caps: Mapping[str, Any], count: int, seed_value: int, perturb: bool = False) -> list[Scenario]:
    drawn: list[Scenario] = []

    @settings(max_examples=count, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @seed(seed_value)
    @given(scenarios(caps, ScheduleBounds(perturb=perturb)))
    def collect(scenario: Scenario) -> None:
        drawn.append(scenario)

    collect()
    return drawn


def test_the_racing_shapes_are_drawn_often() -> None:
    from collections import Counter

    drawn = _drawn(_PROCESSES, 200, 3)
    shapes = Counter(_shape_of(scenario) for scenario in drawn)
    for shape in ("return at once", "fail together", "churn"):
        assert shapes[shape] >= 10, shapes
    errors = [  # bundles failing together with errors (a failing store call raises one too)
        scenario
        for scenario in drawn
        if _shape_of(scenario) == "fail together"
        and {step.kind for step in _steps(scenario)} & {"raise", "store"}
    ]
    assert len(errors) >= 10
    for scenario in drawn:
        if _shape_of(scenario) == "churn":  # the algorithm enqueues rollouts at once for every runner
            assert scenario.algorithm.steps[1].args.get("op") == "enqueue"
            assert scenario.n_runners == 3


def test_a_perturbation_is_made_from_one_number_with_the_shape_s_points_most_often() -> None:
    from collections import Counter

    from conformance.perturbation import POINTS
    from conformance.schedules import _FOCUS, _perturbation

    focus = _FOCUS["fail together"]
    made = [_perturbation(focus, variant) for variant in range(800)]
    assert _perturbation(focus, 5) == _perturbation(focus, 5)  # the number alone decides it
    assert [variant for variant, made_one in enumerate(made) if made_one is None] == list(range(7, 800, 8))
    drawn = [perturbation for perturbation in made if perturbation is not None]
    assert all(perturbation.points for perturbation in drawn)  # never a perturbation that delays nothing
    assert len({perturbation.seed for perturbation in drawn}) > 600
    on = Counter(point for perturbation in drawn for point in perturbation.points)
    assert min(on[point] for point in focus) > 2 * max(on[point] for point in POINTS if point not in focus)
    unfocused = [_perturbation((), variant) for variant in range(800)]
    swarm = Counter(point for perturbation in unfocused if perturbation for point in perturbation.points)
    assert min(swarm.values()) > 250  # no focus: every point about half the time


def test_drawn_perturbations_are_rarely_absent_and_differ() -> None:
    perturbations = [scenario.perturbation for scenario in _drawn(_THREADS, 60, 2, perturb=True)]
    present = [perturbation for perturbation in perturbations if perturbation is not None]
    assert len(present) >= 45, f"{len(present)} of {len(perturbations)} scenarios perturbed"
    assert len(set(present)) >= 20  # hypothesis copies some with the schedule around them


def test_a_drawn_scenario_names_its_shape_and_the_rotation_gives_every_shape_turns() -> None:

    from conformance.scenarios import Scenario as Plain
    from conformance.schedules import SHAPES, shape_of, shape_rotation

    drawn = _drawn(_PROCESSES, 120, 4)
    assert {shape_of(scenario) for scenario in drawn} == {name for name, _ in SHAPES}
    assert all(_shape_of(scenario) == "churn" for scenario in drawn if shape_of(scenario) == "churn")
    assert shape_of(Plain(name="P1")) == "" and shape_of(Plain(name="P1 no such shape")) == ""
    rotation = shape_rotation()
    assert set(rotation) == {name for name, _ in SHAPES}
    assert rotation[0] == "any"  # hypothesis' first example, the simplest scenario, is an any one


def test_p1_takes_the_shapes_in_turn_whatever_the_seed() -> None:
    from collections import Counter

    from conformance.exploration import search
    from conformance.schedules import shape_of, shape_rotation

    rotation = shape_rotation()
    for seed_value in (1, 2, 3):
        scenarios_run: list[Scenario] = []
        search(
            scenarios(_PROCESSES, ScheduleBounds(perturb=True)),
            scenarios_run.append,
            lambda outcome: False,
            scenario_json,
            seed_value=seed_value,
            max_examples=2 * len(rotation),
            admit=lambda scenario, index: shape_of(scenario) == rotation[index % len(rotation)],
        )
        taken = [shape_of(scenario) for scenario in scenarios_run]
        assert taken == list(rotation * 2)[: len(taken)] and len(taken) >= len(rotation), taken
        assert Counter(taken)["churn"] >= 1 and Counter(taken)["fail together"] >= 1


def test_the_start_up_shapes_take_three_turns_in_eight_after_the_claim_and_report_races() -> None:
    from conformance.schedules import shape_rotation

    rotation = shape_rotation()
    assert rotation[:3] == ("any", "churn", "fail together")  # the claim and report races keep their turns
    start_up = [index for index, shape in enumerate(rotation) if shape in ("return at once", "stop at once")]
    assert start_up == [3, 6, 7] and len(rotation) == 8
    assert rotation.count("return at once") == 2 and rotation.count("stop at once") == 1


def test_a_start_up_shape_s_runner_0_watches_the_event_and_the_others_tails_are_free() -> None:
    from collections import Counter

    from conformance.schedules import shape_of

    drawn = _drawn(_PROCESSES, 300, 7, perturb=True)
    start_up = [s for s in drawn if shape_of(s) in ("return at once", "stop at once")]
    assert {shape_of(s) for s in start_up} == {"return at once", "stop at once"} and len(start_up) >= 20
    for scenario in start_up:  # a runner that returns at once or ignores the event cannot miss the stop
        tail = scenario.runners[0].steps[-1]
        assert tail.kind == "poll" or tail.args.get("op") == "work", scenario.runners[0]
    others = Counter(script.steps[-1].kind for s in start_up for script in s.runners[1:])
    assert others["return"] >= 1 and others["ignore_event"] + others["block"] >= 1, others


def test_churn_is_always_perturbed_at_its_claims_with_the_longest_delay() -> None:
    from conformance.schedules import shape_of

    churn = [scenario for scenario in _drawn(_THREADS, 200, 5, perturb=True) if shape_of(scenario) == "churn"]
    assert len(churn) >= 5
    for scenario in churn:
        perturbation = scenario.perturbation
        assert perturbation is not None and "store-call" in perturbation.points
        assert perturbation.max_delay == 0.05
        assert scenario.faults[0].after == "algorithm started"  # enqueued while runners still join
        assert scenario.algorithm.steps[1].args == {"op": "enqueue", "count": 3}


def test_the_start_up_shapes_always_delay_store_calls_and_fail_together_event_sets() -> None:
    from conformance.schedules import shape_of

    drawn = _drawn(_THREADS, 200, 6, perturb=True)
    start_up = [s for s in drawn if shape_of(s) in ("return at once", "stop at once")]
    assert len(start_up) >= 10
    for scenario in start_up:  # a runner's start-up is mostly store calls: its race is there
        assert scenario.perturbation is not None and "store-call" in scenario.perturbation.points
    together = [s for s in drawn if shape_of(s) == "fail together"]
    assert len(together) >= 5
    for scenario in together:  # a failure sets the event, then reports: the others race that
        assert scenario.perturbation is not None and "event-set" in scenario.perturbation.points
