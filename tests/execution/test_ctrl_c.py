"""The Ctrl+C ladder every strategy climbs: stop with grace, then force, then abandon (K3-K5)."""

from __future__ import annotations

from agentlightning.execution.ctrl_c import CtrlCLadder
from agentlightning.execution.failures import FailureCollector


def _ladder() -> tuple[CtrlCLadder, FailureCollector, list[str]]:
    failures = FailureCollector()
    calls: list[str] = []
    ladder = CtrlCLadder(
        failures,
        stop=lambda: calls.append("stop"),
        force=lambda: calls.append("force"),
        abandon=lambda: calls.append("abandon"),
    )
    return ladder, failures, calls


def test_each_ctrl_c_climbs_one_rung_and_every_rung_stops() -> None:
    ladder, failures, calls = _ladder()
    ladder.catch_up(1)
    assert calls == ["stop"]
    assert isinstance(failures.primary, KeyboardInterrupt)
    calls.clear()
    ladder.catch_up(2)
    assert calls == ["stop", "force"]
    calls.clear()
    ladder.catch_up(3)
    assert calls == ["stop", "force", "abandon"]
    assert ladder.handled == 3


def test_signals_counted_together_are_each_acted_upon_once() -> None:
    ladder, _, calls = _ladder()
    ladder.catch_up(2)
    ladder.catch_up(2)  # nothing new
    assert calls == ["stop", "stop", "force"]


def test_urgency_counts_every_ctrl_c_after_the_first_relayed_or_escaped() -> None:
    ladder, failures, _ = _ladder()
    assert not ladder.interrupted and ladder.urgency == 0
    ladder.escaped()  # raised in our own code instead of relayed: still a Ctrl+C
    assert ladder.interrupted and ladder.urgency == 0
    assert isinstance(failures.primary, KeyboardInterrupt)
    ladder.catch_up(1)
    assert ladder.urgency == 1
    ladder.catch_up(3)
    assert ladder.urgency == 3
