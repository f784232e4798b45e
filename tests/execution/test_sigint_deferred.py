"""A Ctrl+C held back by ``sigint_deferred`` is late, never lost, and never lands inside the block."""

from __future__ import annotations

import os
import signal

import pytest

from agentlightning.execution.processes import _SignalWakeup
from agentlightning.execution.threads import sigint_deferred


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_a_sigint_inside_the_block_is_raised_after_it() -> None:
    steps: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with sigint_deferred():
            signal.raise_signal(signal.SIGINT)
            steps.append("after the signal")
        steps.append("not reached")
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_handler_that_was_installed_gets_the_signal() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: seen.append(signum))
    try:
        with sigint_deferred():
            signal.raise_signal(signal.SIGINT)
            assert seen == []
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_wakeup_interrupted_while_it_is_made_leaves_no_descriptor() -> None:
    before = _open_fds()
    original = os.set_blocking

    def interrupted(fd: int, blocking: bool) -> None:  # a Ctrl+C right after os.pipe() returned
        original(fd, blocking)
        signal.raise_signal(signal.SIGINT)

    os.set_blocking = interrupted  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt), _SignalWakeup():
            pytest.fail("the interrupt must end __enter__")  # pragma: no cover
    finally:
        os.set_blocking = original
    assert _open_fds() - before == set()
