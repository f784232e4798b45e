"""Prerequisites: which contracts depend on L1, and the ledger that settles a prerequisite once per run."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from conformance.catalogue import CATALOGUE
from conformance.prerequisites import (
    PREREQUISITES,
    PrerequisiteLedger,
    prerequisites_of,
    stall_prerequisites_of,
    startup_dependencies,
)
from conformance.scenarios import Scenario, Script, Step, StoreFault
from conformance.verdicts import Blocked, CheckOutcome, ContractFailed, DeclaredLimitation, NotApplicable


def test_every_strategy_contract_but_section_g_and_l1_depends_on_l1() -> None:
    assert PREREQUISITES == ("L1",)
    for cid, contract in CATALOGUE.items():
        expected = () if cid == "L1" or contract.section in ("G", "T") else ("L1",)
        assert prerequisites_of(cid) == expected, cid


def test_the_other_d_contracts_stand_on_d4_and_nothing_else_does() -> None:
    for cid, contract in CATALOGUE.items():
        expected = ("D4",) if contract.section == "D" and cid != "D4" else ()
        assert stall_prerequisites_of(cid) == expected, cid


_POLL = Script((Step("poll"),))


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        (Scenario("polls", n_runners=2, algorithm=_POLL, runners=(_POLL,)), []),
        (
            Scenario("returns", n_runners=2, algorithm=_POLL, runners=(_POLL, Script((Step("return"),)))),
            [("runner", "runner 1")],
        ),
        (
            Scenario("fails", n_runners=1, algorithm=Script((Step("raise"), Step("poll"))), runners=(_POLL,)),
            [("algorithm", "algorithm")],
        ),
        (Scenario("no scripts", n_runners=1), [("algorithm", "algorithm"), ("runner", "runner 0")]),
        (
            Scenario("blocks", n_runners=2, algorithm=_POLL, runners=(Script((Step("block", 5.0),)), _POLL)),
            [("runner", "runner 0")],
        ),
        (
            Scenario(
                "first store call fails",
                n_runners=1,
                algorithm=_POLL,
                runners=(Script((Step("store", args={"op": "work"}),)),),
                store_faults=(StoreFault("runner 0", "dequeue_rollout", raises="RuntimeError"),),
            ),
            [("runner", "runner 0")],
        ),
        (
            Scenario(
                "a later store call fails",
                n_runners=1,
                algorithm=_POLL,
                runners=(Script((Step("store", args={"op": "work"}),)),),
                store_faults=(StoreFault("runner 0", "dequeue_rollout", call=2, raises="RuntimeError"),),
            ),
            [],
        ),
        (
            Scenario("a gate first", n_runners=1, algorithm=Script((Step("gate", args={"name": "g"}),))),
            [("runner", "runner 0")],
        ),
    ],
)
def test_a_scenario_stands_on_e5_where_a_bundle_ends_or_blocks_in_its_first_step(
    scenario: Scenario, expected: list[tuple[str, str]]
) -> None:
    assert startup_dependencies("L3", scenario) == expected
    assert startup_dependencies("E5", scenario) == []  # E5's own scenarios are what settles it


def test_a_blocked_check_is_the_verdict_blocked_with_its_reason() -> None:
    def check() -> None:
        raise Blocked("blocked by E5 startup-error [runner]: it hung")

    outcome = CheckOutcome.of(check)
    assert (outcome.verdict, outcome.reason, outcome.failed) == ("blocked", outcome.reason, False)
    assert outcome.summary == "blocked by E5 startup-error [runner]: it hung"
    hung = CheckOutcome("fail", hung=True)
    assert CheckOutcome.from_dict(hung.to_dict()) == hung


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


def test_settle_all_settles_first_what_no_other_process_is_settling(tmp_path: Path) -> None:
    """Two workers needing the same two prerequisites run one each, side by side: while one holds the
    first, the other settles the second, then reads the first (never running it twice)."""
    holding, released = threading.Event(), threading.Event()
    calls: list[str] = []

    def held_elsewhere() -> CheckOutcome:
        calls.append("one-runner by the other worker")
        holding.set()
        # Released only by this worker's settling of the second item: waiting here for the first
        # item's lock instead would never release it (the wait's bound then fails the test).
        return CheckOutcome("pass" if released.wait(60) else "error", error="never released")

    def second_here() -> CheckOutcome:
        calls.append("several-runners here")
        released.set()
        return CheckOutcome("pass")

    def must_not_run() -> CheckOutcome:
        calls.append("one-runner twice")
        return CheckOutcome("pass")

    other = threading.Thread(
        target=PrerequisiteLedger(tmp_path).settle, args=("L1[one-runner]", held_elsewhere)
    )
    other.start()
    assert holding.wait(60)
    outcomes = PrerequisiteLedger(tmp_path).settle_all(
        [("L1[one-runner]", must_not_run), ("L1[several-runners]", second_here)]
    )
    other.join(60)
    assert calls == ["one-runner by the other worker", "several-runners here"]
    assert {name: outcome.verdict for name, outcome in outcomes.items()} == {
        "L1[one-runner]": "pass",
        "L1[several-runners]": "pass",
    }
    assert list(outcomes) == ["L1[several-runners]", "L1[one-runner]"]  # settled in that order


def test_side_by_side_runs_the_siblings_together_once_and_their_items_read_the_outcome(
    tmp_path: Path,
) -> None:
    """D2, D3: the first item of a contract runs its siblings' situations in threads beside its own (each
    waits for the others to have started: run one after the other, the bound of the wait fails the
    test), returns once all have ended, and the siblings' items (here another worker's ledger) only read."""
    started = threading.Barrier(3, timeout=60)
    threads: list[str] = []

    def situation(verdict: str) -> CheckOutcome:
        threads.append(threading.current_thread().name)
        started.wait()  # every situation has started before any ends
        return CheckOutcome(verdict)

    def must_not_run() -> CheckOutcome:
        raise AssertionError("a settled situation ran again")

    siblings = [
        ("D2[killed]", lambda: situation("pass")),
        ("D2[silent]", lambda: situation("fail")),
        ("D2[third]", lambda: situation("n/a")),
    ]
    ledger = PrerequisiteLedger(tmp_path)
    outcome = ledger.settle_side_by_side("D2[killed]", siblings[0][1], siblings)
    assert outcome.verdict == "pass"
    assert len(threads) == 3 and len(set(threads)) == 3  # each in a thread of its own (its own item's: main)
    assert not [t for t in threading.enumerate() if t.name.startswith("conformance: ")]  # all joined
    other_worker = PrerequisiteLedger(tmp_path)
    assert other_worker.settle_side_by_side("D2[silent]", must_not_run, siblings).verdict == "fail"
    assert other_worker.settle("D2[third]", must_not_run).verdict == "n/a"


def test_beside_leaves_alone_what_another_process_is_settling(tmp_path: Path) -> None:
    """D4 beside L1: an item settled beside a block while another worker holds it is not run here: its
    own item waits for that worker's outcome."""
    holding, release = threading.Event(), threading.Event()

    def elsewhere() -> CheckOutcome:
        holding.set()
        return CheckOutcome("pass" if release.wait(60) else "error")

    def must_not_run() -> CheckOutcome:
        raise AssertionError("ran beside although another worker held it")

    other = threading.Thread(target=PrerequisiteLedger(tmp_path).settle, args=("D4[default]", elsewhere))
    other.start()
    assert holding.wait(60)
    ledger = PrerequisiteLedger(tmp_path)
    with ledger.beside([("D4[default]", must_not_run)]):
        release.set()
    other.join(60)
    assert ledger.settle("D4[default]", must_not_run).verdict == "pass"


def test_xdist_deals_the_longest_contracts_first_each_in_plan_order() -> None:
    from conformance.plan import PlanEntry
    from conformance.plugin import _LONGEST_FIRST, _dealing_rank

    plan = [
        PlanEntry(cid, "c", situation, "run")
        for cid in CATALOGUE
        if CATALOGUE[cid].subject == "strategy"
        for situation in ("first", "second")
    ]
    dealt = sorted(plan, key=_dealing_rank)
    long_ones = [entry for entry in plan if entry.contract_id in _LONGEST_FIRST]
    assert dealt[: len(long_ones)] == sorted(long_ones, key=lambda e: _LONGEST_FIRST.index(e.contract_id))
    assert [e.contract_id for e in dealt[:4]] == ["P1", "P1", "D2", "D2"]
    assert [e.situation for e in dealt[:2]] == ["first", "second"]  # a contract's items keep plan order
    assert dealt[len(long_ones) :] == [entry for entry in plan if entry not in long_ones]
