"""Prerequisites: which contracts depend on L1, and the ledger that settles a prerequisite once per run."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from conformance.catalogue import CATALOGUE
from conformance.prerequisites import PREREQUISITES, PrerequisiteLedger, prerequisites_of
from conformance.verdicts import CheckOutcome, ContractFailed, DeclaredLimitation, NotApplicable


def test_every_strategy_contract_but_section_g_and_l1_depends_on_l1() -> None:
    assert PREREQUISITES == ("L1",)
    for cid, contract in CATALOGUE.items():
        expected = () if cid == "L1" or contract.section in ("G", "T") else ("L1",)
        assert prerequisites_of(cid) == expected, cid


def _fails() -> None:
    raise ContractFailed("L1", "bundles-called", expected="ids [0, 1]", observed="ids [0]", figure="1 of 2")


def _breaks() -> None:
    raise KeyError("oops")


@pytest.mark.parametrize(
    ("check", "verdict", "summary"),
    [
        (lambda: None, "pass", ""),
        (_fails, "fail", "observed ids [0]; expected ids [0, 1]; measured 1 of 2"),
        (_breaks, "error", "check error: KeyError: 'oops'"),
        (
            lambda: (_ for _ in ()).throw(NotApplicable("uses_processes", "threads")),
            "n/a",
            "uses_processes: threads",
        ),
        (
            lambda: (_ for _ in ()).throw(DeclaredLimitation("can_cancel_blocking_code", "no")),
            "limitation",
            "can_cancel_blocking_code: no",
        ),
    ],
)
def test_an_outcome_captures_the_verdict_and_survives_a_round_trip(check, verdict: str, summary: str) -> None:  # type: ignore[no-untyped-def]
    outcome = CheckOutcome.of(check)
    assert outcome.verdict == verdict and outcome.summary == summary
    assert CheckOutcome.from_dict(outcome.to_dict()) == outcome
    assert outcome.failed == (verdict in ("fail", "error"))
    if verdict == "fail":
        again = outcome.contract_failed()
        assert (
            again.render()
            == "L1 bundles-called\n  expected: ids [0, 1]\n  observed: ids [0]\n  measured: 1 of 2"
        )
    if verdict == "error":
        assert "KeyError: 'oops'" in outcome.error and "Traceback" in outcome.error


def test_the_ledger_runs_a_prerequisite_once_and_shares_its_outcome(tmp_path: Path) -> None:
    calls: list[str] = []

    def run() -> CheckOutcome:
        calls.append("ran")
        return CheckOutcome.of(_fails)

    first = PrerequisiteLedger(tmp_path).settle("L1-bundles-called[several-runners]", run)
    # Another process of the run (a fresh ledger on the same directory) reads it instead of running it.
    second = PrerequisiteLedger(tmp_path).settle("L1-bundles-called[several-runners]", run)
    assert calls == ["ran"] and first == second and first.verdict == "fail"


def _settle_in_child(directory: str, marker: str) -> None:
    def run() -> CheckOutcome:
        with open(marker, "a", encoding="utf-8") as handle:
            handle.write("x")
        return CheckOutcome("pass")

    PrerequisiteLedger(directory).settle("L1-bundles-called[one-runner]", run)


def test_concurrent_processes_settle_a_prerequisite_exactly_once(tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_settle_in_child, args=(str(tmp_path), str(marker))) for _ in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert marker.read_text(encoding="utf-8") == "x"
