"""Seeded scheduling perturbation inside the scenario process: small random delays where strategies race.

A ``Perturbation`` is plain data drawn with a P1 scenario (``conformance.schedules``: it is part of what
shrinking keeps failing and of what the replay command reproduces): a seed, the racing points it perturbs,
the share of their hits that are delayed, the longest delay, and the interpreter's switch interval.
``installed(perturbation)`` patches the racing points of this process only and sets
``sys.setswitchinterval``; everything is restored when the block ends. The racing points (``POINTS``):

- ``thread-start``, ``process-start``: before ``threading.Thread.start`` and ``BaseProcess.start``;
- ``event-set``, ``event-wait``: after ``threading.Event.set()`` and ``wait()`` return;
- ``socket-send``: before ``socket.send``/``sendall``;
- ``store-call``: before every call of a ``LightningStore`` coroutine method (once per call: a call
  that goes through wrappers, e.g. ``ThreadedLightningStore`` to ``InMemoryLightningStore``, is delayed
  at the outermost one), as an ``await asyncio.sleep`` so the caller's loop runs its other tasks;
- ``store-lock``: before a lock of the store wrapper (``ThreadedLightningStore``) is acquired, through
  its one hook point ``agentlightning.store.threaded._new_lock``;
- ``bundle-start``: the first await of a kit bundle, once it has journaled its start.

Which hits are delayed and by how much comes from one seeded stream per racing point and *owner*
(``delay_plan``): the kit bundle whose task hits the point (``bundle_started`` names it for the rest of
the task: the bundle's store calls, its event sets, the strategy's code around it in that task), else
the thread that hits it, by name (an event's hits outside a bundle share the point's one stream). The
same seed gives each owner's hits of each point the same sequence of delays, whatever the other points
and owners did and in whatever order the threads arrived: a replayed scenario delays the same calls by
the same amounts, so a race a delay opened opens again (one stream shared by every thread hands the
delays out in arrival order, which differs from run to run). Nothing here
runs unless installed: the runtime's code path is the unpatched one when perturbation is off.
``catalogue_perturbation`` is the low-rate perturbation the fixed catalogue runs under when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import multiprocessing.process
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CATALOGUE_RATE",
    "PATCHED",
    "POINTS",
    "Perturbation",
    "active",
    "bundle_started",
    "catalogue_perturbation",
    "delay_plan",
    "installed",
]

POINTS: tuple[str, ...] = (
    "thread-start",
    "process-start",
    "event-set",
    "event-wait",
    "socket-send",
    "store-call",
    "store-lock",
    "bundle-start",
)
"""Every racing point a perturbation may delay, in the order a shrunk scenario lists them."""

CATALOGUE_RATE = 0.05
"""The share of racing-point hits delayed in the fixed catalogue's scenarios (low: a bound still holds)."""
_CATALOGUE_MAX_DELAY = 0.005


@dataclass(frozen=True)
class Perturbation:
    """How one scenario's process is perturbed: ``rate`` of the hits of ``points`` delayed by up to
    ``max_delay`` seconds (uniform), chosen by ``seed``; ``switch_interval`` seconds for
    ``sys.setswitchinterval``."""

    seed: int = 0
    rate: float = 0.0
    max_delay: float = 0.0
    switch_interval: float = 0.005
    points: tuple[str, ...] = POINTS

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"perturbation rate must be within [0, 1], got {self.rate!r}")
        if not 0.0 <= self.max_delay <= 1.0:
            raise ValueError(f"perturbation max_delay must be within [0, 1] s, got {self.max_delay!r}")
        if not self.switch_interval > 0:
            raise ValueError(f"perturbation switch_interval must be > 0, got {self.switch_interval!r}")
        if isinstance(self.points, str):
            raise ValueError(f"perturbation points must be a sequence of racing points, got {self.points!r}")
        points = tuple(self.points)  # a JSON list from a replay becomes the tuple it was
        unknown = [point for point in points if point not in POINTS]
        if unknown:
            raise ValueError(
                f"perturbation points {unknown!r} are not racing points; known: {', '.join(POINTS)}"
            )
        object.__setattr__(self, "points", points)


def delay_plan(
    perturbation: Perturbation, count: int, point: str = "thread-start", owner: str = ""
) -> list[float]:
    """The first ``count`` delays (0.0: not delayed) the hits of racing ``point`` by ``owner`` (a kit
    bundle's name, e.g. ``"runner 0"``, or a thread's; ``""``: an event's hits outside a bundle) get,
    in call order."""
    if point not in POINTS:
        raise ValueError(f"{point!r} is not a racing point; known: {', '.join(POINTS)}")
    rng = _stream(perturbation, point, owner)
    return [_next_delay(rng, perturbation, point) for _ in range(count)]


def catalogue_perturbation(key: str, seed: int) -> Perturbation:
    """The low-rate perturbation of one fixed-catalogue scenario: every racing point, ``CATALOGUE_RATE``
    of their hits delayed by up to 5 ms, a switch interval drawn too; seeded by the run's ``seed`` and
    ``key`` (the item and its scenario's index), so each scenario of a run is reproducible on its own."""
    rng = random.Random(f"{seed}:{key}")
    return Perturbation(
        seed=rng.randrange(2**16),
        rate=CATALOGUE_RATE,
        max_delay=_CATALOGUE_MAX_DELAY,
        switch_interval=rng.choice((0.005, 1e-4, 0.001)),
    )


def _stream(perturbation: Perturbation, point: str, owner: str = "") -> random.Random:
    # A str seed is hashed with SHA-512 by random.Random: stable across processes and PYTHONHASHSEED.
    return random.Random(f"{perturbation.seed}:{point}:{owner}" if owner else f"{perturbation.seed}:{point}")


def _next_delay(rng: random.Random, perturbation: Perturbation, point: str) -> float:
    hit = rng.random() < perturbation.rate
    length = rng.uniform(0.0, perturbation.max_delay)
    return length if hit and point in perturbation.points else 0.0


class _Delayer:
    """Draws the next delay of a racing point from its owner's stream (thread-safe: points are hit from
    every thread) and counts the delays made per point."""

    def __init__(self, perturbation: Perturbation) -> None:
        self.perturbation = perturbation
        self._streams: dict[tuple[str, str], random.Random] = {}
        self._lock = threading.Lock()
        self._drawing = threading.local()
        self.counts: dict[str, int] = dict.fromkeys(POINTS, 0)

    @property
    def delays(self) -> int:
        return sum(self.counts.values())

    def draw(self, point: str) -> float:
        if getattr(self._drawing, "active", False):
            # Re-entered on this thread: a signal handler run mid-draw (a SIGINT handler that wakes its loop
            # with call_soon_threadsafe hits socket-send) would wait forever for the lock this thread holds
            # below, so the inner hit goes undelayed.
            return 0.0
        self._drawing.active = True
        try:
            return self._draw(point)
        finally:
            self._drawing.active = False

    def _draw(self, point: str) -> float:
        owner = _owner(point)
        with self._lock:
            stream = self._streams.get((point, owner))
            if stream is None:
                stream = self._streams[(point, owner)] = _stream(self.perturbation, point, owner)
            delay = _next_delay(stream, self.perturbation, point)
            if delay > 0:
                self.counts[point] += 1
        return delay

    def sleep(self, point: str) -> None:
        delay = self.draw(point)
        if delay > 0:
            time.sleep(delay)

    async def asleep(self, point: str) -> None:
        delay = self.draw(point)
        if delay > 0:
            await asyncio.sleep(delay)

    def summary(self) -> str:
        shown = ", ".join(f"{point} {count}" for point, count in self.counts.items() if count)
        return f"{self.delays} delays" + (f" ({shown})" if shown else "")


_active: _Delayer | None = None
_in_store_call: contextvars.ContextVar[bool] = contextvars.ContextVar("_in_store_call", default=False)
# The kit bundle whose task runs here ("" outside one): the owner of the racing points it hits.
_bundle: contextvars.ContextVar[str] = contextvars.ContextVar("_bundle", default="")


_EVENT_POINTS = ("event-set", "event-wait")


def _owner(point: str) -> str:
    """Who owns a hit of ``point``: the kit bundle whose task runs here, else this thread by name (the
    strategy's own code, e.g. what a runner thread does before its bundle starts); ``""`` for an event's
    hits outside a bundle, which share one stream: a thread announces its own start with an event before
    ``threading`` knows it by name, and asking for its name then would register a stand-in thread."""
    bundle = _bundle.get()
    if bundle or point in _EVENT_POINTS:
        return bundle
    ident = threading.get_ident()
    # threading.enumerate, not current_thread: a thread threading did not start (a C library's) gets no
    # stand-in Thread registered for it, which would outlive the scenario as a leaked thread.
    return next((thread.name for thread in threading.enumerate() if thread.ident == ident), "")


def active() -> _Delayer | None:
    """The perturbation installed in this process, if any (``None`` in a child process or when off)."""
    return _active


async def bundle_started(name: str = "") -> None:
    """The ``bundle-start`` racing point: a kit bundle's first await (nothing when no perturbation).

    ``name`` (the bundle's, e.g. ``"runner 0"``) owns the racing points the rest of the calling task
    hits: they draw their delays from that bundle's own streams."""
    delayer = _active
    if delayer is not None:
        if name:
            _bundle.set(name)  # the calling task's context: the bundle's own code from here on
        await delayer.asleep("bundle-start")


def _before(original: Callable[..., Any], delay: _Delayer, point: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def perturbed(*args: Any, **kwargs: Any) -> Any:
        delay.sleep(point)
        return original(*args, **kwargs)

    return perturbed


def _after(original: Callable[..., Any], delay: _Delayer, point: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def perturbed(*args: Any, **kwargs: Any) -> Any:
        value = original(*args, **kwargs)
        delay.sleep(point)
        return value

    return perturbed


def _store_call(original: Callable[..., Any], delay: _Delayer, point: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def perturbed(*args: Any, **kwargs: Any) -> Any:
        if _in_store_call.get():  # an inner store of a wrapper: the outermost call was delayed already
            return await original(*args, **kwargs)
        await delay.asleep(point)
        token = _in_store_call.set(True)
        try:
            return await original(*args, **kwargs)
        finally:
            try:
                _in_store_call.reset(token)
            except ValueError:  # resumed in another context (a coroutine handed to another loop's task)
                _in_store_call.set(False)

    return perturbed


class _DelayedLock:
    """A lock whose acquisition is a ``store-lock`` racing point (the rest is the real lock's)."""

    def __init__(self, lock: Any, delay: _Delayer) -> None:
        self._lock = lock
        self._delay = delay

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self._delay.sleep("store-lock")
        return bool(self._lock.acquire(blocking, timeout))

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return bool(self._lock.locked())

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


PATCHED: tuple[tuple[Any, str, str, str], ...] = (
    (threading.Thread, "start", "before", "thread-start"),
    (multiprocessing.process.BaseProcess, "start", "before", "process-start"),
    (threading.Event, "set", "after", "event-set"),
    (threading.Event, "wait", "after", "event-wait"),
    (socket.socket, "send", "before", "socket-send"),
    (socket.socket, "sendall", "before", "socket-send"),
)
"""The racing points patched on the standard library: (owner, attribute, whether the delay comes before
the call or after it returns, the point)."""

_WRAPS = {"before": _before, "after": _after, "store": _store_call}


def _store_methods() -> list[tuple[Any, str, str, str]]:
    """Every coroutine method of the ``LightningStore`` interface, on every store class loaded now that
    defines it (the caller's store, the wrapper, the clients): the ``store-call`` racing points."""
    try:
        from agentlightning.store.base import LightningStore
    except ImportError:  # the kit can gate a strategy without the reference store package
        return []
    api = [
        name
        for name, value in vars(LightningStore).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(value) and name != "close"
    ]
    found: list[tuple[Any, str, str, str]] = []
    pending = list(LightningStore.__subclasses__())
    seen: set[type] = set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        pending.extend(cls.__subclasses__())
        found += [
            (cls, name, "store", "store-call")
            for name in api
            if inspect.iscoroutinefunction(cls.__dict__.get(name))
        ]
    return found


def _lock_hook() -> list[tuple[Any, str, str, str]]:
    """The store wrapper's lock factory (``agentlightning.store.threaded._new_lock``), when present."""
    module = sys.modules.get("agentlightning.store.threaded")
    if module is None:
        with contextlib.suppress(ImportError):
            import agentlightning.store.threaded as module
    return [] if module is None or not hasattr(module, "_new_lock") else [(module, "_new_lock", "lock", "")]


@contextlib.contextmanager
def installed(perturbation: Perturbation | None) -> Iterator[_Delayer | None]:
    """Perturb this process while the block runs (nothing when ``perturbation`` is ``None``)."""
    global _active
    if perturbation is None:
        yield None
        return
    delay = _Delayer(perturbation)
    patched = [*PATCHED, *_store_methods(), *_lock_hook()]
    # (owner, name, its own attribute or None when inherited, e.g. socket.socket.send from _socket)
    originals = [(owner, name, vars(owner).get(name)) for owner, name, _, _ in patched]
    interval = sys.getswitchinterval()
    try:
        for owner, name, where, point in patched:
            original = getattr(owner, name)
            if where == "lock":
                setattr(owner, name, lambda original=original: _DelayedLock(original(), delay))
            else:
                setattr(owner, name, _WRAPS[where](original, delay, point))
        sys.setswitchinterval(perturbation.switch_interval)
        _active = delay
        yield delay
    finally:
        _active = None
        sys.setswitchinterval(interval)
        for owner, name, original in originals:
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
