"""A worker process held in its start-up until the stop has dealt with it (L1 when the stop comes early).

``HeldStart`` is an argument whose unpickling in the worker waits for a gate: the worker stays in its
start-up, before its callable, as slow imports on a loaded machine keep it. ``opened_when_the_stop_reaches``
opens that gate once the stop has dealt with the held worker: it was signalled (the signal is on its way
before the gate opens) or it was named as still starting (it is waited for). Picklable under spawn and
forkserver (module level).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["HeldStart", "opened_when_the_stop_reaches"]

HANG = 60.0


class HeldStart:
    """Wraps ``inner`` (a bundle, or anything); unpickling it waits for ``gate`` (a multiprocessing Event)."""

    def __init__(self, gate: Any, inner: Any = None) -> None:
        self.gate, self.inner = gate, inner

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        assert self.gate.wait(HANG), f"the gate was not opened within {HANG}s"

    async def __call__(self, *args: Any) -> None:
        await self.inner(*args)


class _OpenOnWaiting(logging.Handler):
    def __init__(self, gate: Any) -> None:
        super().__init__(logging.INFO)
        self.gate = gate

    def emit(self, record: logging.LogRecord) -> None:
        if "had not started their callable" in record.getMessage():
            self.gate.set()


@contextlib.contextmanager
def opened_when_the_stop_reaches(gate: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """For the block: ``gate`` opens right after any signal this process sends, or when the stop logs
    that it waits for workers still starting."""
    kill = os.kill

    def kill_then_open(pid: int, signum: int) -> None:
        kill(pid, signum)
        gate.set()

    monkeypatch.setattr(os, "kill", kill_then_open)
    opener = _OpenOnWaiting(gate)
    log = logging.getLogger("agentlightning.execution.processes")
    level = log.level
    log.addHandler(opener)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(opener)
        log.setLevel(level)
        monkeypatch.setattr(os, "kill", kill)
