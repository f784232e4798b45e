"""The interleaving-only specimens (``strategies/broken/p1_*`` with ``INTERLEAVING_ONLY``): registered with
what they break, missed by the OS's usual interleaving of their race window and caught once a
perturbation stretches it; the selfcheck's ``--interleavings`` table and how it reads P1's report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conformance.checks import CheckContext
from conformance.scenarios import Scenario
from conformance.selfcheck import (
    _FOUND,
    _REPRODUCED,
    InterleavingRun,
    render_interleavings,
    render_p1_passes,
)
from strategies.broken import specimens

REPO = Path(__file__).resolve().parents[2]
INTERLEAVING = {
    "p1_early_return_skips_unstarted",
    "p1_overlapping_errors_dropped",
    "p1_claim_lost_to_returning_runner",
    "p1_starting_runner_misses_event",
}


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO))  # strategies.broken.* import in this process and the sandbox


def test_the_four_interleaving_only_specimens_break_p1_and_say_so() -> None:
    chosen = {specimen.name: specimen for specimen in specimens() if specimen.interleaving_only}
    assert set(chosen) == INTERLEAVING
    assert all(specimen.breaks == "P1" and specimen.defect for specimen in chosen.values())


def test_the_table_counts_runs_and_medians_and_the_reproduction_rate() -> None:
    runs = [
        InterleavingRun("a", "x.A", 1, caught=True, to_find=4.0, examples=10, reproduced=3, reruns=3),
        InterleavingRun("a", "x.A", 2, caught=True, to_find=8.0, examples=30, reproduced=2, reruns=3),
        InterleavingRun("a", "x.A", 3, caught=False),
        InterleavingRun("b", "x.B", 1, error="the kit did not finish within 900 s"),
    ]
    text = render_interleavings(runs)
    row_a = next(line for line in text.splitlines() if line.startswith("a "))
    assert "2/3" in row_a and "6.0 s" in row_a and "5/6 (83%)" in row_a and "1 2 3" in row_a
    assert "b seed 1: the kit did not finish within 900 s" in text
    assert text.endswith("interleaving-only specimens caught: 2/4 runs")


def test_the_examples_and_references_table_counts_p1_passes_and_names_each_failure() -> None:
    runs = [
        InterleavingRun("shm", "shm", 1, seconds=30.0, verdict="pass", role="reference"),
        InterleavingRun("shm", "shm", 2, True, 40.0, verdict="fail", role="reference", error="L2/L4: late"),
        InterleavingRun("thread_pool", "x.T", 1, error="the kit did not finish within 900 s", role="example"),
        InterleavingRun("thread_pool", "x.T", 2, verdict="n/a", role="example"),
        InterleavingRun("single_loop", "x.S", 1, verdict="pass", role="example"),
    ]
    assert [run.ok for run in runs] == [True, False, False, False, True]  # only a P1 pass passes
    assert InterleavingRun("a", "x.A", 1, caught=True).ok and not InterleavingRun("a", "x.A", 1).ok
    text = render_p1_passes(runs)
    shm = next(line for line in text.splitlines() if line.startswith("shm "))
    assert "reference" in shm and "1/2" in shm and "2:fail" in shm and "35 s" in shm and "1 2" in shm
    pool = next(line for line in text.splitlines() if line.startswith("thread_pool "))
    assert "0/2" in pool and "1:no verdict 2:n/a" in pool
    assert "shm seed 2: L2/L4: late" in text and "thread_pool seed 1: the kit did not finish" in text
    assert text.endswith("examples and references passing P1: 2/5 runs, 3 failures")


def test_the_selfcheck_reads_the_figure_p1_reports() -> None:
    from conformance.contracts.properties import Exploration, Finding, _report
    from conformance.oracle import expect
    from conformance.scenarios import ScenarioResult
    from conformance.verdicts import ContractFailed

    ctx, scenario = _shaped("shm", "twins")
    observed = ScenarioResult(scenario=scenario, outcome="returned", duration=0.1)
    expectation = expect(scenario, ctx.capabilities)
    finding = Finding(scenario, expectation, observed, ["E3: x"], reproduced=2, reruns=3)
    exploration = Exploration("conformance-ci", examples=17, seconds=30.0, seconds_to_find=6.25)
    with pytest.raises(ContractFailed) as failed:
        _report(ctx, finding, exploration)
    figure = failed.value.figure
    reproduced, found = _REPRODUCED.search(figure), _FOUND.search(figure)
    assert reproduced is not None and reproduced.groups() == ("2", "3")
    assert found is not None and found.groups() == ("17", "6.2")


def _shaped(spec: str, shape: str) -> tuple[CheckContext, Scenario]:
    from conformance.schedules import ScheduleBounds, _compile
    from conformance.target import make_target, validate_target

    resolved = validate_target(make_target(spec))
    ctx = CheckContext("P1", "default", resolved.target, resolved.capabilities)
    shapes = {
        # the algorithm returns as soon as it may, two runners that only poll
        "early": (2, [], ["poll", "poll"], "algorithm started", None, 0),
        # two runners fail together with the same type
        "twins": (
            2,
            [("group", (2, [1, 2, 0]), ("raise", "ValueError"), [None, None])],
            ["poll", "poll"],
            "all started",
            None,
            0,
        ),
    }
    n, raw, tails, start, before, final = shapes[shape]
    return ctx, _compile(n, raw, tails, start, before, final, resolved.capabilities, ScheduleBounds())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "cls", "shape", "points"),
    [
        ("p1_overlapping_errors_dropped", "P1OverlappingErrorsDropped", "twins", ("event-set",)),
        ("p1_early_return_skips_unstarted", "P1EarlyReturnSkipsUnstarted", "early", ("store-call",)),
    ],
)
def test_a_perturbation_at_the_racing_point_in_the_window_shows_the_defect(
    name: str, cls: str, shape: str, points: tuple[str, ...]
) -> None:
    """Every hit of the racing point inside the window delayed by up to 50 ms: the other side lands in it."""
    from conformance.contracts.properties import _run
    from conformance.perturbation import Perturbation

    ctx, scenario = _shaped(f"strategies.broken.{name}.{cls}", shape)
    caught = []
    for seed in range(3):
        perturbation = Perturbation(seed=seed, rate=1.0, max_delay=0.05, points=points)
        _, _, violations = _run(ctx, dataclasses.replace(scenario, perturbation=perturbation))
        caught.append(bool(violations))
        if violations:
            break
    assert any(caught), f"{name}: not caught in {len(caught)} perturbed runs"
