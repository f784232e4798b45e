"""``RunnerSides``: which runner sides a store server counts as attached, and which fell silent (D2)."""

from __future__ import annotations

from agentlightning.execution.remote_stop import RunnerSides, SilentSide


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_side_holding_a_wait_is_never_silent_and_one_that_stops_polling_is() -> None:
    clock = _Clock()
    sides = RunnerSides(clock)
    sides.attach("a", "198.18.0.2")
    sides.attach("b", "198.18.0.3")
    clock.now += 30.0
    assert sides.silent(5.0) == []  # both still hold their waits (a wait ends within its bound)
    sides.seen("a")
    sides.seen("b")
    sides.attach("b")  # b polls again
    clock.now += 5.5
    assert sides.silent(5.0) == [SilentSide("a", "198.18.0.2", 5.5)]
    assert sides.attached == ["b"]  # a silent side is detached once: reported a single time
    assert sides.silent(5.0) == []


def test_a_detached_side_is_not_silent_and_a_returning_side_attaches_anew() -> None:
    clock = _Clock()
    sides = RunnerSides(clock)
    sides.attach("a")
    sides.seen("a")
    sides.detach("a")
    clock.now += 60.0
    assert sides.silent(5.0) == [] and sides.wait_detached(0.0) == []
    sides.attach("a", "198.18.0.9")
    sides.seen("a")
    clock.now += 6.0
    assert sides.silent(5.0) == [SilentSide("a", "198.18.0.9", 6.0)]
