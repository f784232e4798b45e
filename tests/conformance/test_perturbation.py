"""The scheduling perturbation: seeded (same seed, same delays), bounded, installed only while asked for,
and carried by P1 scenarios through their replay form into the scenario process."""

from __future__ import annotations

import sys
import threading

import pytest

from conformance.perturbation import PATCHED, Perturbation, delay_plan, installed
from conformance.scenarios import Scenario, Script, Step
from conformance.schedules import ScheduleBounds, scenario_from_json, scenario_json, scenario_source


def test_the_same_seed_gives_the_same_delay_plan_and_another_seed_another() -> None:
    perturbation = Perturbation(seed=7, rate=0.5, max_delay=0.01)
    plan = delay_plan(perturbation, 200)
    assert plan == delay_plan(perturbation, 200)
    assert plan != delay_plan(Perturbation(seed=8, rate=0.5, max_delay=0.01), 200)
    assert all(0.0 <= delay <= 0.01 for delay in plan)
    assert 50 <= sum(delay > 0 for delay in plan) <= 150  # about half the racing points are delayed


def test_no_rate_means_no_delay() -> None:
    assert set(delay_plan(Perturbation(seed=3, rate=0.0, max_delay=0.03), 100)) == {0.0}


def test_hooks_and_the_switch_interval_are_in_place_only_inside_the_block() -> None:
    before = {(owner, name): getattr(owner, name) for owner, name, _, _ in PATCHED}
    interval = sys.getswitchinterval()
    perturbation = Perturbation(seed=1, rate=1.0, max_delay=0.001, switch_interval=1e-4)
    with installed(perturbation) as delayer:
        assert delayer is not None
        assert all(getattr(owner, name) is not before[(owner, name)] for owner, name, _, _ in PATCHED)
        assert sys.getswitchinterval() == pytest.approx(1e-4)
        event = threading.Event()
        thread = threading.Thread(target=event.set)
        thread.start()  # delayed before the start, and event.set() / the start handshake after
        assert event.wait(5.0)
        thread.join(5.0)
        assert delayer.delays >= 3  # rate 1.0: every racing point hit is delayed
    assert {(owner, name): getattr(owner, name) for owner, name, _, _ in PATCHED} == before
    assert sys.getswitchinterval() == interval


def test_hooks_are_removed_when_the_block_raises() -> None:
    before = threading.Event.set
    with pytest.raises(RuntimeError), installed(Perturbation(seed=1, rate=1.0, max_delay=0.001)):
        raise RuntimeError("scenario failed")
    assert threading.Event.set is before


def test_none_installs_nothing() -> None:
    before = threading.Thread.start
    with installed(None) as delayer:
        assert delayer is None
        assert threading.Thread.start is before


@pytest.mark.parametrize(("field", "value"), [("rate", 1.5), ("max_delay", -0.1), ("switch_interval", 0.0)])
def test_bad_values_are_errors_naming_the_value(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Perturbation(**{field: value})  # type: ignore[arg-type]


def test_the_perturbation_round_trips_through_the_replay_and_pasteable_forms() -> None:
    scenario = Scenario(
        name="P1",
        algorithm=Script((Step("poll", 0.01),)),
        perturbation=Perturbation(seed=5, rate=0.3, max_delay=0.01, switch_interval=1e-4),
    )
    assert scenario_from_json(scenario_json(scenario)) == scenario
    assert "perturbation=Perturbation(seed=5, rate=0.3" in scenario_source(scenario)
    plain = Scenario(name="P1")
    assert scenario_from_json(scenario_json(plain)).perturbation is None


def _drawn_perturbations(perturb: bool) -> list[Perturbation | None]:
    from hypothesis import HealthCheck, given, seed, settings

    from conformance.capabilities import validate_manifest
    from conformance.schedules import scenarios

    caps = validate_manifest({"uses_processes": False, "can_cancel_blocking_code": False})
    drawn: list[Perturbation | None] = []

    @settings(max_examples=40, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @seed(0)
    @given(scenarios(caps, ScheduleBounds(perturb=perturb)))
    def collect(scenario: Scenario) -> None:
        drawn.append(scenario.perturbation)

    collect()
    return drawn


def test_p1_draws_perturbations_only_when_asked() -> None:
    assert set(_drawn_perturbations(False)) == {None}
    assert sum(p is not None for p in _drawn_perturbations(True)) >= 10


def test_a_perturbed_scenario_runs_in_the_sandbox_and_its_journal_says_so() -> None:
    from conformance.sandbox import run_scenario
    from conformance.target import make_target, validate_target

    target = validate_target(make_target("shm")).target
    scenario = Scenario(
        name="perturbed",
        n_runners=2,
        algorithm=Script((Step("sleep", 0.05), Step("set_event"))),
        runners=(Script((Step("poll"),)),),
        perturbation=Perturbation(seed=2, rate=1.0, max_delay=0.005, switch_interval=1e-4),
    )
    result = run_scenario(target, scenario)
    assert result.outcome == "returned", result
    kit = [record for record in result.journal if record.bundle == "kit"]
    kinds = [record.kind for record in kit]
    assert "perturbation" in kinds and "perturbation-removed" in kinds
    removed = next(record for record in kit if record.kind == "perturbation-removed")
    assert int(removed.detail.split()[0]) > 0  # racing points were hit and delayed
