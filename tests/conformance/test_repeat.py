"""Repeats: the Wilson interval, per-contract reliability, flaky items and the gate, side-by-side journals."""

from __future__ import annotations

import math

import pytest

from conformance.journal import render_side_by_side
from conformance.plan import PlanEntry
from conformance.report import ConformanceReport, ItemResult, render_table, wilson_interval


@pytest.mark.parametrize(
    ("passes", "runs", "low", "high"),
    [
        (5, 5, 0.5655, 1.0),  # all passed: the interval still admits a ~43% failure rate at n=5
        (0, 5, 0.0, 0.4345),
        (4, 5, 0.3755, 0.9638),
        (50, 100, 0.4038, 0.5962),
    ],
)
def test_wilson_interval_matches_the_textbook_figures(
    passes: int, runs: int, low: float, high: float
) -> None:
    got = wilson_interval(passes, runs)
    assert math.isclose(got[0], low, abs_tol=1e-4) and math.isclose(got[1], high, abs_tol=1e-4), got


@pytest.mark.parametrize(("passes", "runs"), [(1, 0), (-1, 3), (4, 3)])
def test_wilson_interval_refuses_impossible_counts(passes: int, runs: int) -> None:
    with pytest.raises(ValueError, match=f"got {passes}/{runs}"):
        wilson_interval(passes, runs)


def _report(flaky_fails: bool) -> ConformanceReport:
    plan = [
        PlanEntry("L2", "normal-completion", "one-runner", "run"),
        PlanEntry("L2", "normal-completion", "several-runners", "run"),
        PlanEntry("K3", "sigint-main", "while-running", "run"),
    ]
    results = [
        ItemResult("L2", "normal-completion", "one-runner", "pass", "", 1.0, ("pass",) * 5),
        ItemResult(
            "L2",
            "normal-completion",
            "several-runners",
            "flaky",
            "passed 4/5",
            1.0,
            ("pass",) * 4 + ("fail",),
        ),
        ItemResult("K3", "sigint-main", "while-running", "pass", "", 1.0, ("pass",) * 5),
    ]
    return ConformanceReport(
        kind="strategy",
        subject="shm",
        subject_class="pkg.Shm",
        subject_version="1",
        kit_version="0.1.0",
        options={},
        store_factory="pkg:Store",
        python="3.11",
        start_method="fork",
        seed=1,
        timeout_scale=1.0,
        plan=plan,
        results=results,
        profile="certify" if flaky_fails else "ci",
        repeat=5,
        flaky_fails=flaky_fails,
    )


def test_reliability_per_contract_counts_every_situations_runs() -> None:
    figures = _report(False).reliability()
    assert figures["L2"]["passes"] == 9 and figures["L2"]["runs"] == 10
    assert figures["K3"] == {"passes": 5, "runs": 5, "low": 0.5655, "high": 1.0}


def test_a_flaky_item_fails_the_gate_only_where_the_profile_says_so() -> None:
    assert _report(flaky_fails=False).ok
    assert not _report(flaky_fails=True).ok
    table = render_table(_report(flaky_fails=True))
    assert "flaky      L2" in table
    assert "repeat 5: passes/runs per contract, 95% interval (Wilson); 1 flaky item(s)" in table
    assert "  L2    9/10  [0.60, 0.98]" in table
    assert "  flaky: L2-normal-completion[several-runners]" in table
    assert _report(flaky_fails=True).to_dict()["reliability"]["L2"]["runs"] == 10


def test_side_by_side_journals_keep_both_columns_aligned() -> None:
    text = render_side_by_side(("passed", "+0.0 start\n+0.1 end"), ("failed", "+0.0 start"), width=12)
    assert text.splitlines() == [
        "passed       | failed",
        "--------     | --------",
        "+0.0 start   | +0.0 start",
        "+0.1 end     |",
    ]
