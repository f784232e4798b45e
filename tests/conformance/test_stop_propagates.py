"""L4's verdict from a journal: a watcher is late only when its own loop kept turning after the set."""

from __future__ import annotations

import pytest

from conformance.capabilities import validate_manifest
from conformance.checks import CheckContext
from conformance.contracts.lifecycle import scenario_l4, verify_l4
from conformance.scenarios import JournalRecord, ScenarioResult, Target
from conformance.verdicts import ContractFailed

_SET_AT = 10.0


def _context() -> CheckContext:
    return CheckContext("L4", "set-by-algorithm", Target("pkg.Strategy"), validate_manifest({}))


def _result(ctx: CheckContext, lag: float, turns_after_set: int, *, seen: bool = True) -> ScenarioResult:
    """The algorithm sets the event at ``_SET_AT``; runner 0 sees it at once; runner 1 sees it ``lag``
    seconds later, having turned its loop ``turns_after_set`` times in between (and 5 times before)."""
    before = [_SET_AT - 0.05 + 0.01 * i for i in range(5)]
    after = [_SET_AT + lag * (i + 1) / (turns_after_set + 1) for i in range(turns_after_set)]
    journal = [
        JournalRecord(_SET_AT, 1, "t", "algorithm", "set-event"),
        JournalRecord(_SET_AT, 1, "t", "algorithm", "set-returned"),
        JournalRecord(_SET_AT + 0.01, 1, "t", "runner 0", "saw-stop", "poll", {"ticks": before}),
    ]
    if seen:
        ticks = before + after
        journal.append(JournalRecord(_SET_AT + lag, 1, "t", "runner 1", "saw-stop", "wait", {"ticks": ticks}))
    return ScenarioResult(scenario_l4(ctx, "algorithm"), "returned", 1.0, journal=tuple(journal))


def test_a_prompt_watcher_passes() -> None:
    ctx = _context()
    verify_l4(ctx, _result(ctx, 0.02, 1), "algorithm")
    assert ctx.figures == []


def test_a_watcher_that_kept_running_without_seeing_the_set_is_late() -> None:
    ctx = _context()
    with pytest.raises(ContractFailed) as failed:
        verify_l4(ctx, _result(ctx, 1.9, 150), "algorithm")
    assert "runner 1 after 1.900 s (150 turns of its loop after the set)" in failed.value.observed
    assert failed.value.figure == "1.900 s (runner 1) against a bound of 0.500 s"


def test_a_watcher_the_machine_held_up_is_not_blamed_but_the_lag_is_reported() -> None:
    ctx = _context()
    verify_l4(ctx, _result(ctx, 0.9, 3), "algorithm")
    assert ctx.figures == [
        "0.900 s (runner 1) against a bound of 0.500 s, held up by the machine: runner 1 took 3 turns "
        "of its loop after the set (fewer than the 25 that show a watcher running without seeing it)"
    ]


def test_a_watcher_that_never_saw_the_set_fails_whatever_its_loop_did() -> None:
    ctx = _context()
    with pytest.raises(ContractFailed, match="runner 1 never saw it"):
        verify_l4(ctx, _result(ctx, 0.0, 0, seen=False), "algorithm")
