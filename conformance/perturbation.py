"""Seeded scheduling perturbation inside the scenario process: small random delays where strategies race.

A ``Perturbation`` is plain data drawn with a P1 scenario (so shrinking minimises it and the replay command
reproduces it): a seed, the share of racing points that are delayed, the longest delay, and the
interpreter's switch interval. ``installed(perturbation)`` patches the racing points of this process
only (thread and process start, ``threading.Event.set()`` and the return of ``wait()``, socket sends)
and sets ``sys.setswitchinterval``; everything is restored when the block ends. Which calls are delayed
and by how much comes from ``delay_plan``: the same seed gives the same sequence of delays.
"""

from __future__ import annotations

import contextlib
import multiprocessing.process
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["PATCHED", "Perturbation", "delay_plan", "installed"]


@dataclass(frozen=True)
class Perturbation:
    """How one scenario's process is perturbed: ``rate`` of racing points delayed by up to ``max_delay``
    seconds (uniform), chosen by ``seed``; ``switch_interval`` seconds for ``sys.setswitchinterval``."""

    seed: int = 0
    rate: float = 0.0
    max_delay: float = 0.0
    switch_interval: float = 0.005

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"perturbation rate must be within [0, 1], got {self.rate!r}")
        if not 0.0 <= self.max_delay <= 1.0:
            raise ValueError(f"perturbation max_delay must be within [0, 1] s, got {self.max_delay!r}")
        if not self.switch_interval > 0:
            raise ValueError(f"perturbation switch_interval must be > 0, got {self.switch_interval!r}")


def delay_plan(perturbation: Perturbation, count: int) -> list[float]:
    """The first ``count`` delays (0.0: not delayed) the racing points of a run get, in call order."""
    rng = random.Random(perturbation.seed)
    return [_next_delay(rng, perturbation) for _ in range(count)]


def _next_delay(rng: random.Random, perturbation: Perturbation) -> float:
    hit = rng.random() < perturbation.rate
    length = rng.uniform(0.0, perturbation.max_delay)
    return length if hit else 0.0


class _Delayer:
    """Draws the next delay (thread-safe: racing points are hit from every thread) and sleeps it."""

    def __init__(self, perturbation: Perturbation) -> None:
        self._perturbation = perturbation
        self._rng = random.Random(perturbation.seed)
        self._lock = threading.Lock()
        self.delays = 0

    def __call__(self) -> None:
        with self._lock:
            delay = _next_delay(self._rng, self._perturbation)
        if delay > 0:
            self.delays += 1
            time.sleep(delay)


def _before(original: Callable[..., Any], delay: _Delayer) -> Callable[..., Any]:
    def perturbed(*args: Any, **kwargs: Any) -> Any:
        delay()
        return original(*args, **kwargs)

    return perturbed


def _after(original: Callable[..., Any], delay: _Delayer) -> Callable[..., Any]:
    def perturbed(*args: Any, **kwargs: Any) -> Any:
        value = original(*args, **kwargs)
        delay()
        return value

    return perturbed


PATCHED: tuple[tuple[Any, str, str], ...] = (
    (threading.Thread, "start", "before"),
    (multiprocessing.process.BaseProcess, "start", "before"),
    (threading.Event, "set", "after"),
    (threading.Event, "wait", "after"),
    (socket.socket, "send", "before"),
    (socket.socket, "sendall", "before"),
)
"""The racing points: (owner, attribute, whether the delay comes before the call or after it returns)."""


@contextlib.contextmanager
def installed(perturbation: Perturbation | None) -> Iterator[_Delayer | None]:
    """Perturb this process while the block runs (nothing when ``perturbation`` is ``None``)."""
    if perturbation is None:
        yield None
        return
    delay = _Delayer(perturbation)
    # (owner, name, its own attribute or None when inherited, e.g. socket.socket.send from _socket)
    originals = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in PATCHED]
    interval = sys.getswitchinterval()
    try:
        for owner, name, where in PATCHED:
            wrap = _before if where == "before" else _after
            setattr(owner, name, wrap(getattr(owner, name), delay))
        sys.setswitchinterval(perturbation.switch_interval)
        yield delay
    finally:
        sys.setswitchinterval(interval)
        for owner, name, original in originals:
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
