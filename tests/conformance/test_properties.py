"""P1 end to end: reference strategies pass the CI profile; the P1 zoo (``strategies/broken/p1_*``) is found
by P1 within it, shrunk to a few steps, replayable, and is NOT found by the fixed L/K/E/R/S checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import strategies as st

from conformance.checks import CheckContext
from conformance.contracts.properties import CI_BUDGET, explore, replay_command
from conformance.exploration import search
from conformance.scenarios import Fault, Scenario, Script, Step
from conformance.schedules import scenario_json
from conformance.target import make_target, validate_target
from conformance.verdicts import ContractFailed

REPO = Path(__file__).resolve().parents[2]
ZOO = {
    "late-runner": "strategies.broken.p1_late_runner_misses_stop.P1LateRunnerMissesStop",
    "twin-errors": "strategies.broken.p1_twin_errors_swallowed.P1TwinErrorsSwallowed",
    "lost-claim": "strategies.broken.p1_lost_claim.P1LostClaim",
}
# What each defect must be reported as (the contract prefix of the oracle's violation).
SYMPTOM = {"late-runner": "L2/L4", "twin-errors": "E3/K1/E6", "lost-claim": "S1"}
FIXED_SECTIONS = "section_L or section_K or section_E or section_R or section_S"


def _ctx(spec: str, seed: int = 0) -> CheckContext:
    resolved = validate_target(make_target(spec))
    return CheckContext("P1", "default", resolved.target, resolved.capabilities, seed=seed)


def _conformance(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(  # noqa: PLW1510 - the exit code is what the tests look at
        [sys.executable, "-m", "conformance", *args, "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO))  # strategies.broken.* import in this process and the sandbox


@pytest.mark.slow
@pytest.mark.parametrize("defect", sorted(ZOO))
def test_p1_finds_each_zoo_defect_within_the_ci_profile_and_shrinks_it(defect: str) -> None:
    ctx = _ctx(ZOO[defect])
    exploration = explore(ctx)
    finding = exploration.finding
    assert finding is not None, f"{defect}: not found in {exploration.examples} scenarios"
    assert exploration.seconds <= CI_BUDGET + 120  # generation budget, then bounded shrinking
    assert any(v.startswith(SYMPTOM[defect]) for v in finding.violations), finding.violations
    steps = sum(len(script.steps) for script in (finding.scenario.algorithm, *finding.scenario.runners))
    assert steps <= 8, f"{defect}: minimal scenario still has {steps} steps"
    assert finding.reproduced >= 1  # these defects depend on the order of events, not on luck
    print(f"\n{defect}: found after {exploration.examples} scenarios, {exploration.seconds:.1f} s")
    print(replay_command(ctx, finding.scenario))


@pytest.mark.slow
@pytest.mark.parametrize("defect", sorted(ZOO))
def test_the_fixed_catalogue_does_not_find_the_zoo_defects(defect: str) -> None:
    result = _conformance(ZOO[defect], "-k", FIXED_SECTIONS, "-q")
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize("alias", ["shm", "ipc", "cs"])
def test_reference_strategies_pass_p1_under_the_ci_profile(alias: str, tmp_path: Path) -> None:
    report = tmp_path / "p1.json"
    result = _conformance(alias, "-k", "P1", f"--conformance-report={report}", "--conformance-seed=0")
    assert result.returncode == 0, result.stdout[-6000:]
    verdicts = [r["verdict"] for r in json.loads(report.read_text())["results"]]
    assert verdicts == ["pass"]


_TWINS = Scenario(
    name="P1",
    n_runners=2,
    algorithm=Script((Step("gate", args={"name": "turn-2"}),)),
    runners=(
        Script(
            (
                Step("gate", args={"name": "turn-1"}),
                Step("raise", args={"type": "ValueError", "message": "a"}),
            )
        ),
        Script(
            (
                Step("gate", args={"name": "turn-1"}),
                Step("raise", args={"type": "ValueError", "message": "b"}),
            )
        ),
    ),
    faults=(Fault("open-gate", "all started", open_gate="turn-1"),),
    hang_bound=40.0,
)


def test_replay_reports_the_scenario_and_its_reproduction_rate() -> None:
    ctx = _ctx(ZOO["twin-errors"])
    ctx.kit_options = {"replay": scenario_json(_TWINS)}
    from conformance.contracts.properties import check_random_schedules

    with pytest.raises(ContractFailed) as failed:
        check_random_schedules(ctx)
    text = failed.value.render()
    assert "P1 random-schedules" in text
    assert "reproduced 3/3" in text
    assert "scenario = Scenario(" in text and "--conformance-replay" in text
    assert "execute() returned None; expected it raises builtins.ValueError" in text


def test_replay_of_the_same_scenario_passes_for_a_reference_strategy() -> None:
    ctx = _ctx("shm")
    ctx.kit_options = {"replay": scenario_json(_TWINS)}
    from conformance.contracts.properties import check_random_schedules

    check_random_schedules(ctx)
    assert len(ctx.results) == 3  # the run and its re-runs


def test_the_replay_command_round_trips_through_the_plugin() -> None:
    command = replay_command(_ctx(ZOO["twin-errors"], seed=5), _TWINS)
    assert command.startswith("pytest --strategy=strategies.broken.p1_twin_errors_swallowed.")
    assert "--conformance-seed=5" in command and command.endswith("-k P1")
    import shlex

    argv = shlex.split(command)  # pytest --strategy=SPEC <options...>: run as python -m conformance SPEC
    spec = argv[1].split("=", 1)[1]
    ran = _conformance(spec, *argv[2:], timeout=300)
    assert ran.returncode == 1, ran.stdout[-3000:]
    assert "reproduced 3/3" in ran.stdout


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--conformance-examples=0", "--conformance-examples 0 must be a positive number"),
        ("--conformance-replay={oops", "--conformance-replay '{oops' is not a scenario"),
    ],
)
def test_bad_p1_options_are_usage_errors_naming_the_value(option: str, message: str) -> None:
    result = _conformance("shm", option, "-k", "P1", timeout=120)
    assert result.returncode == 4
    assert message in result.stderr + result.stdout


def test_a_failure_that_does_not_reproduce_is_reported_as_timing_dependent_not_hidden() -> None:
    from conformance.contracts.properties import Finding, _report
    from conformance.oracle import expect
    from conformance.scenarios import ScenarioResult

    ctx = _ctx("shm")
    expectation = expect(_TWINS, ctx.capabilities)
    observed = ScenarioResult(scenario=_TWINS, outcome="returned", duration=0.1)
    finding = Finding(
        _TWINS, expectation, observed, ["E3/K1/E6: execute() returned None"], reproduced=0, reruns=3
    )
    with pytest.raises(ContractFailed) as failed:
        _report(ctx, finding, None)
    text = failed.value.render()
    assert "reproduced 0/3 re-runs: TIMING-DEPENDENT" in text
    assert "--conformance-replay" in text


def test_a_worker_kill_whose_turn_comes_before_the_worker_started_waits_for_it() -> None:
    """Found by P1: the kit's FaultDriver used to drop a SIGKILL whose worker had not started yet (hang)."""
    from conformance.contracts.properties import _run

    ctx = _ctx("ipc")
    scenario = Scenario(
        name="P1",
        n_runners=2,
        algorithm=Script((Step("gate", args={"name": "turn-2"}),)),
        runners=(Script((Step("gate", args={"name": "turn-1"}), Step("poll"))), Script((Step("poll"),))),
        faults=(Fault("sigkill-worker", "algorithm started", worker=0),),
        hang_bound=30.0,
    )
    _, result, violations = _run(ctx, scenario)
    assert violations == [], violations
    assert result.outcome == "raised"


def test_p1_writes_nothing_into_the_users_project(tmp_path: Path) -> None:
    """No example database and no hypothesis constants cache in the directory pytest runs from."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(  # noqa: PLW1510 - the exit code is asserted
        [
            sys.executable,
            "-m",
            "conformance",
            "shm",
            "-k",
            "P1",
            "--conformance-examples=3",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert list(tmp_path.iterdir()) == []


def _shrink_with_hangs(shrink_hangs: int | None, hung: bool) -> tuple[list[int], object]:
    """P1's search over numbers where every number from 10 up hangs (a perturbed, confirming search):
    the runs made, in order, and the search."""
    from hypothesis import strategies as st

    from conformance.exploration import search

    runs: list[int] = []

    def run(number: int) -> str:
        runs.append(number)
        return "hang" if number >= 10 else "returned"

    found = search(
        st.integers(0, 10**6),
        run,
        lambda outcome: outcome == "hang",
        str,
        seed_value=1,
        confirm_shrinks=True,
        hung=(lambda outcome: outcome == "hang") if hung else None,
        shrink_hangs=shrink_hangs,
    )
    return runs, found


def test_shrinking_runs_each_hanging_candidate_once_and_stops_after_a_few_hangs() -> None:
    from conformance.contracts.properties import SHRINK_HANGS

    runs, found = _shrink_with_hangs(SHRINK_HANGS, hung=True)
    first = next(index for index, number in enumerate(runs) if number >= 10)
    shrinking = runs[first + 1 :]
    assert len(shrinking) == len(set(shrinking))  # no candidate run twice
    assert len([number for number in shrinking if number >= 10]) == SHRINK_HANGS == found.shrink_hangs
    failing = found.failing
    assert failing is not None and failing[1] == "hang"
    assert failing[0] == [number for number in runs if number >= 10][-1] < runs[first]  # shrunk, by a hang
    # Without the hang limit, a confirming search runs each hanging candidate twice and many of them.
    unbounded, _ = _shrink_with_hangs(None, hung=False)
    again = unbounded[next(index for index, number in enumerate(unbounded) if number >= 10) + 1 :]
    hangs = [number for number in again if number >= 10]
    assert len(hangs) > 2 * SHRINK_HANGS and len(set(hangs)) < len(hangs)


def test_a_negative_hang_limit_is_an_error_naming_it() -> None:
    from hypothesis import strategies as st

    from conformance.exploration import search

    with pytest.raises(ValueError, match="shrink_hangs must be >= 0 or None, got -1"):
        search(st.just(0), lambda _: 0, bool, str, seed_value=0, shrink_hangs=-1)


def test_a_spent_budget_stops_the_search_drawing_examples() -> None:
    """Once the budget is spent hypothesis draws nothing more: returning from the property instead kept
    it drawing (and ``admit`` rejecting) up to ``max_examples`` examples that ran nothing, for seconds."""
    drawn: list[int] = []
    ran: list[int] = []

    def admit(example: int, index: int) -> bool:
        drawn.append(example)
        return True

    found = search(
        st.integers(),
        lambda example: ran.append(example) or False,
        bool,
        str,
        seed_value=1,
        max_examples=100,
        budget=0.0,  # spent before the first example
        admit=admit,
    )
    assert found.budget_hit
    assert (found.examples, drawn, ran) == (0, [], [])
    assert found.failing is None
