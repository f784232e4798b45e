"""P1's scenario generator: hypothesis strategies that draw turn-based schedules as plain ``Scenario`` data.

A schedule is a runner count, a sequence of *turns* and a *tail* per runner, compiled to the kit's
``Scenario`` model (``scenarios.py``) with gates, so the order of what the bundles do comes from the
drawn data and never from timing:

- Turn ``k`` is owned by one bundle (or, for failures that happen together, by a group of 2-3 bundles,
  which wait at its gate blind to the event, so each acts even when another member's failure came first).
  Its owner waits at gate ``turn-k`` (watching the event), performs one action, and, when the action does
  not stop the run, waits at its marker gate ``done-k``; the kit opens ``done-k`` and ``turn-(k+1)`` as
  soon as the marker is reached (a signal turn delivers its signal at that moment instead, its owner
  waiting at a gate that never opens). ``turn-1`` opens at the schedule's start condition (``all started``,
  ``algorithm started`` or ``runner <last> started``: so the algorithm may finish before the last runner
  has started).
- Actions: await a while, poll the event, store operations (possibly stalled by an injected store
  latency), short non-cooperation (ignore the event, block in sync code, ignore cancellation), and the
  actions that stop the run: set the event, raise an error of a chosen type, raise KeyboardInterrupt,
  ``SystemExit``, a store call that raises; or a turn where the kit delivers SIGINT (to the main process
  or the group) or SIGKILLs a worker (only for ``uses_processes``). Nothing after a stopping turn is
  scheduled: every bundle then waits at a gate that never opens and must see the stop.
- The algorithm's last turn is its final gate; it then enqueues a few rollouts, waits for every
  rollout it enqueued (when some runner works the queue) and returns. A runner's tail runs once its
  turns are done: poll the event, work the queue (claim and complete rollouts until stopped), return at
  once, a short non-cooperation, or a long one (ignore the event until cancelled; block in sync code
  only where ``can_cancel_blocking_code`` is declared).
- Optionally SIGINT arrives before any bundle has started (``before start``).

``conformance.oracle`` reads a compiled scenario back (gate names, faults, store faults) and derives the
expected outcome from it alone. ``scenario_json``/``scenario_from_json`` and ``scenario_source`` are the
replay and pasteable forms printed on failure.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from hypothesis import strategies as st

from conformance.exploration import replay_text
from conformance.perturbation import POINTS, Perturbation
from conformance.scenarios import Fault, Scenario, Script, Step, StoreFault

__all__ = [
    "DONE_PREFIX",
    "LONG_SECONDS",
    "STORE_METHODS",
    "TURN_PREFIX",
    "ScheduleBounds",
    "done_gate",
    "scenario_from_json",
    "scenario_json",
    "scenario_source",
    "scenarios",
    "shape_of",
    "shape_rotation",
    "turn_gate",
]

TURN_PREFIX = "turn-"
DONE_PREFIX = "done-"
LONG_SECONDS = 30.0  # a long non-cooperation: far beyond any grace, so only cancellation ends it early
STORE_METHODS: Mapping[str, str] = {
    "enqueue": "enqueue_rollout",
    "query": "query_rollouts",
    "add_resources": "add_resources",
    "get_latest_resources": "get_latest_resources",
}
"""Turn store operations and the store method each one calls (``enqueue`` calls it ``count`` times)."""

_SHORT = (0.01, 0.05)
_SLEEPS = (0.0, 0.02, 0.1)
_STALLS = (0.05, 0.2)
_ERRORS = ("ValueError", "RuntimeError", "ScriptedError", "ScriptedBaseException")
_STORE_ERRORS = ("ConnectionError", "ScriptedError")
_STOPPING_KINDS = frozenset({"set_event", "raise", "keyboard_interrupt", "exit", "store-fault"})


@dataclass(frozen=True)
class ScheduleBounds:
    """How big drawn schedules may be: small on purpose, so a failure shrinks to a few steps."""

    max_runners: int = 3
    max_turns: int = 4
    long_tails: bool = True  # long non-cooperation (costs the strategy's grace period per scenario)
    timeout_scale: float = 1.0
    perturb: bool = False  # draw a scheduling perturbation (``conformance.perturbation``) with each one

    def __post_init__(self) -> None:
        if self.max_runners < 1:
            raise ValueError(f"max_runners must be >= 1, got {self.max_runners!r}")
        if self.max_turns < 0:
            raise ValueError(f"max_turns must be >= 0, got {self.max_turns!r}")
        if not self.timeout_scale > 0:
            raise ValueError(f"timeout_scale must be > 0, got {self.timeout_scale!r}")


def turn_gate(turn: int) -> str:
    return f"{TURN_PREFIX}{turn}"


def done_gate(turn: int) -> str:
    return f"{DONE_PREFIX}{turn}"


def _gate(name: str) -> Step:
    return Step("gate", args={"name": name})  # watches the event: a set event ends the bundle here


# -- drawing ---------------------------------------------------------------------------------------------


def _non_stopping() -> st.SearchStrategy[tuple[Any, ...]]:
    ops = st.sampled_from(tuple(STORE_METHODS))
    enqueue = st.tuples(st.just("store"), st.just("enqueue"), st.integers(1, 3))
    return st.one_of(
        st.tuples(st.just("sleep"), st.sampled_from(_SLEEPS)),
        enqueue,
        st.tuples(st.just("poll"), st.sampled_from(_SHORT)),
        enqueue,
        st.tuples(st.just("store"), ops, st.integers(1, 3)),
        st.tuples(st.just("store-stall"), ops, st.sampled_from(_STALLS)),
        st.tuples(st.just("ignore_event"), st.sampled_from(_SHORT)),
        st.tuples(st.just("block"), st.sampled_from(_SHORT)),
        st.tuples(st.just("ignore_cancel"), st.sampled_from(_SHORT)),
    )


def _raise() -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(st.just("raise"), st.sampled_from(_ERRORS))


def _store_fault() -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(
        st.just("store-fault"), st.sampled_from(tuple(STORE_METHODS)), st.sampled_from(_STORE_ERRORS)
    )


def _failing() -> st.SearchStrategy[tuple[Any, ...]]:
    """An error a bundle raises: from its own code (mostly), or from a store call that fails."""
    return _weighted((3, _raise()), (1, _store_fault()))


def _stopping() -> st.SearchStrategy[tuple[Any, ...]]:
    return st.one_of(
        _raise(),
        st.tuples(st.just("set_event")),
        st.tuples(st.just("keyboard_interrupt")),
        st.tuples(st.just("exit"), st.just(3)),
        _store_fault(),
    )


def _members(max_runners: int) -> st.SearchStrategy[tuple[int, list[int]]]:
    """A group's size (2-3) and a permutation of every bundle index up to ``max_runners``; ``_compile``
    keeps the first ``size`` indices within the drawn runner count. Drawn apart from the runner count, so
    shrinking the count leaves the rest of the schedule as it was; always 2 distinct bundles or more."""
    return st.tuples(st.integers(2, 3), st.permutations(range(max_runners + 1)))


def _weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of ``choices``, each drawn with its weight (``st.one_of`` drops repeated branches, so it cannot
    weight by repetition); shrinks towards the first choice."""
    indices = tuple(index for index, (weight, _) in enumerate(choices) for _ in range(weight))
    return st.sampled_from(indices).flatmap(lambda index: choices[index][1])


def _owner(bounds: ScheduleBounds) -> st.SearchStrategy[int]:
    """A turn's owner: a bundle index (0 the algorithm, ``i`` runner ``i - 1``, modulo the drawn count);
    the algorithm about half the time (it drives a run), any bundle otherwise."""
    return st.one_of(st.just(0), st.integers(0, bounds.max_runners))


def _signal_faults(caps: Mapping[str, Any]) -> tuple[str, ...]:
    faults = ["sigint-main", "sigint-group"]
    if caps.get("uses_processes", True):
        faults += ["sigkill-worker", "sigkill-worker"]  # a worker death reaches F1 and the claims (T3)
    return tuple(faults)


def _group(bounds: ScheduleBounds, action: st.SearchStrategy[tuple[Any, ...]]) -> st.SearchStrategy[Any]:
    """2-3 distinct bundles of the schedule acting together, mostly alike: the first member's ``action``,
    each other member's ``None`` (the same action, three times in four) or one of its own."""
    other = _weighted((3, st.none()), (1, action))
    return st.tuples(
        st.just("group"), _members(bounds.max_runners), action, st.lists(other, min_size=2, max_size=2)
    )


def _raw_turns(caps: Mapping[str, Any], bounds: ScheduleBounds) -> st.SearchStrategy[Any]:
    """Calm turns (none stops the run), then at most one turn that stops it (``None``: none does).

    The algorithm owns about half the turns; the rest go to any bundle. A group (2-3 distinct bundles of
    the schedule failing together) ends a third of the schedules, its members mostly doing the same
    thing: near-simultaneous failures are where error reporting races.
    """
    owner = _owner(bounds)
    calm = st.tuples(st.just("act"), owner, _non_stopping())
    stop = _weighted(
        (3, st.none()),
        (2, st.tuples(st.just("act"), owner, _stopping())),
        (3, _group(bounds, _stopping())),
        (1, st.tuples(st.just("fault"), owner, st.sampled_from(_signal_faults(caps)))),
    )
    # The count first (uniform), then the turns: a plain list strategy mostly draws empty schedules.
    calms = st.integers(0, bounds.max_turns).flatmap(
        lambda count: st.lists(calm, min_size=count, max_size=count)
    )
    return st.tuples(calms, stop).map(lambda drawn: [*drawn[0], *([drawn[1]] if drawn[1] else [])])


def _racing_turns(shape: str, caps: Mapping[str, Any], bounds: ScheduleBounds) -> st.SearchStrategy[Any]:
    """The turns of a racing shape (``SHAPES``): none, or the one turn that stops the run at once."""
    if shape == "stop at once":
        owner = _owner(bounds)
        stop = st.one_of(
            st.tuples(st.just("act"), owner, _stopping()),
            st.tuples(st.just("fault"), owner, st.sampled_from(_signal_faults(caps))),
        )
        return stop.map(lambda turn: [turn])
    if shape == "fail together":
        return _group(bounds, _failing()).map(lambda turn: [turn])
    return st.just([])  # "return at once", "churn": the algorithm's final gate is its first


def _tails(caps: Mapping[str, Any], bounds: ScheduleBounds) -> st.SearchStrategy[str]:
    # Repetition weights the choice: long non-cooperation costs a grace period, so it is drawn rarely.
    choices = ["poll", "work", "return", "work", "return", "poll", "ignore_event short", "block short"]
    choices += ["ignore_cancel short", "work", "return"]
    if bounds.long_tails:
        choices.append("ignore_event long")
        if caps.get("can_cancel_blocking_code", True):
            choices.append("block long")
    return st.sampled_from(tuple(choices))


SHAPES: tuple[tuple[str, int], ...] = (
    ("return at once", 2),
    ("stop at once", 2),
    ("fail together", 2),
    ("churn", 2),
    ("any", 4),
)
"""Swarm-style schedule shapes and their weights. ``any`` draws every part of the schedule on its own;
each racing shape fixes the parts whose coincidence a race needs, which independent draws rarely combine:

- ``return at once``: no turn; the algorithm passes its final gate at its start condition and returns
  while runners may still be starting up (or have not started);
- ``stop at once``: one turn, which stops the run (an action or a signal) as soon as it opens;
- ``fail together``: one turn, where 2-3 bundles raise errors at the same gate (reports race);
- ``churn``: as many runners as the bounds allow, runner 0 working the queue and each other one
  working it (two times in three) or returning at once, and three rollouts the algorithm enqueues at
  its start: claims are made while other runners join and leave.

The racing shapes come first, so shrinking goes from ``any`` towards the simplest of them."""


_START_UP_SHAPES = frozenset({"return at once", "stop at once"})
_WATCHING = ("poll", "work")
"""The tails that watch the event until the stop reaches them (the oracle's cooperative ones). In a start-up
shape runner 0 ends with one of them (the others' tails are drawn freely): a return or a stop landing
while a runner starts up shows as that runner never seeing it, which a runner that returns at once or
ignores the event cannot show. Measured on the starting runner (``p1_starting_runner_misses_event``, a
runner that subscribes to the stop only after its warm-up), same seed, free tails against runner 0
watching: ``return at once`` 3 of 15 scenarios failed, then 9 of 14; ``stop at once`` 4 of 14, then 4 of
13 (its other scenarios stop from a runner that has started, or once every runner has)."""

_SHAPE_CYCLE = tuple(name for name, weight in SHAPES for _ in range(weight))
_NAME_PREFIX = "P1 "


def shape_of(scenario: Scenario) -> str:
    """The shape (``SHAPES``) a drawn scenario was drawn with, read from its name; ``""`` for a scenario
    not drawn here (a hand-written or older replayed one)."""
    shape = scenario.name[len(_NAME_PREFIX) :] if scenario.name.startswith(_NAME_PREFIX) else ""
    return shape if shape in dict(SHAPES) else ""


_ROTATION = (
    "any",
    "churn",
    "fail together",
    "return at once",
    "churn",
    "fail together",
    "stop at once",
    "return at once",
)


def shape_rotation() -> tuple[str, ...]:
    """The order P1 takes the shapes in while it generates, one turn each, over and over.

    Hypothesis alone, copying earlier examples' choices, drew some racing shape in none of a seed's first
    twenty scenarios; in turn, a ci budget of a dozen scenarios (what a loaded 2-core machine runs in
    20 s) gives each racing shape a turn or more. ``any`` comes first (hypothesis' first example, the
    simplest scenario, is an ``any`` one, and a runner starting up against the algorithm's return shows
    in it); the racing shapes whose races show least often in their own scenarios come most often:
    ``churn`` (about half) and ``fail together`` (two thirds) twice in eight, their first turns the second
    and third. The start-up shapes take three turns in eight, from the fourth: ``return at once`` twice (its
    runner 0 watches the event, and a starting runner's miss showed in most of its scenarios),
    ``stop at once`` once (in a third or less: many of its stops come from a runner already started).
    ``any`` gets a turn in eight (a third of the draws by weight): a short budget goes to the races."""
    return _ROTATION


def _shape() -> st.SearchStrategy[str]:
    """A shape with its weight, chosen by one drawn number: hypothesis draws a small choice's first value
    and copies earlier examples' choices so often that the last shapes of a weighted choice were drawn
    in a few scenarios of a hundred. The number seeds the choice, so the small numbers hypothesis
    favours spread over the shapes too (0, the number shrinking goes to, chooses ``any``)."""
    return st.integers(0, 2**31 - 1).map(
        lambda number: _SHAPE_CYCLE[int(random.Random(number).random() * len(_SHAPE_CYCLE))]
    )


@st.composite
def _schedule(draw: st.DrawFn, caps: Mapping[str, Any], bounds: ScheduleBounds) -> Scenario:
    shape = draw(_shape())
    churn = shape == "churn"
    # churn: every runner the bounds allow (the more runners join and leave, the more claims they meet)
    n_runners = bounds.max_runners if churn else draw(st.integers(1, bounds.max_runners))
    raw = draw(_raw_turns(caps, bounds) if shape == "any" else _racing_turns(shape, caps, bounds))
    if churn:  # runner 0 works the queue while the others mostly work it too (claims race their joins)
        tails = ["work", *(draw(st.sampled_from(("return", "work", "work"))) for _ in range(n_runners - 1))]
    elif shape in _START_UP_SHAPES:  # runner 0 watches the event: only such a runner can miss the stop
        tails = [
            draw(st.sampled_from(_WATCHING)),
            *(draw(_tails(caps, bounds)) for _ in range(n_runners - 1)),
        ]
    else:
        tails = [draw(_tails(caps, bounds)) for _ in range(n_runners)]
    # "return at once" enqueues nothing: a rollout to wait for would hold the algorithm until runners work
    # churn: the most rollouts, claimed while runners still join and leave (the algorithm's start opens
    # its final gate; "all started" would enqueue only once every runner has joined)
    final_enqueue = 0 if shape == "return at once" else 3 if churn else draw(st.integers(0, 3))
    starts: tuple[str, ...] = ("all started", "algorithm started", "last runner started", "algorithm started")
    if churn:
        starts = ("algorithm started",)
    if shape in _START_UP_SHAPES:  # at once after the algorithm's start, mostly
        starts = ("algorithm started", "all started", "algorithm started", "last runner started")
        starts += ("algorithm started",)
    start = draw(st.sampled_from(starts))
    before_start = None
    if shape == "any":
        before_start = draw(st.sampled_from((None,) * 18 + ("sigint-main", "sigint-group")))
    scenario = _compile(n_runners, raw, tails, start, before_start, final_enqueue, caps, bounds, shape)
    if bounds.perturb:
        scenario = dataclasses.replace(scenario, perturbation=draw(_perturbations(shape)))
    return scenario


_START_UP = ("thread-start", "process-start", "bundle-start", "store-call")
_REPORTING = ("event-set", "event-wait", "store-lock", "socket-send")
_FOCUS: Mapping[str, tuple[str, ...]] = {
    "return at once": _START_UP,  # runners starting up, against the algorithm's return
    "stop at once": _START_UP,  # bundles starting up, against the stop
    "fail together": _REPORTING,  # errors reported and stops propagated, against each other
    "churn": (
        "thread-start",
        "bundle-start",
        "store-call",
        "store-lock",
    ),  # claims, against joins and returns
    "any": (),
}
"""The racing points where each shape's race is (``SHAPES``): a racing shape turns them on in most of
its scenarios, the other points in a few."""

_CORE: Mapping[str, tuple[str, ...]] = {
    "churn": ("store-call",),
    "fail together": ("event-set",),
    "return at once": ("store-call",),
    "stop at once": ("store-call",),
}
"""Focus points a shape's perturbed scenarios always delay. A churn claim's race window is its store call
(the claim is made against the worker slots as they were when it was asked for); a runner's start-up
is mostly store calls (resources, the queue) before it first looks at the event; a failing bundle sets
the event before it files its report, which the other failures race. Measured: no churn
scenario showed a lost claim without store-call delays, and none of return at once's that showed a
runner missing the algorithm's return lacked them."""


_DELAYS = (0.005, 0.02, 0.02, 0.05, 0.05)


def _perturbations(shape: str) -> st.SearchStrategy[Perturbation | None]:
    """The scenario's perturbation, made from one drawn number (``_perturbation``)."""
    return st.integers(0, 2**31 - 1).map(
        functools.partial(_perturbation, _FOCUS[shape], core=_CORE.get(shape, ()))
    )


def _perturbation(focus: tuple[str, ...], variant: int, core: tuple[str, ...] = ()) -> Perturbation | None:
    """The perturbation drawn as ``variant``: none in one scenario of eight (the OS alone), else a seeded
    one. Rates and delays are high enough that a race window a few microseconds wide stretches to
    milliseconds, where the turns land (mostly tens of milliseconds: the kit opens a gate within a few);
    low rates are the fixed catalogue's.

    The racing points are chosen swarm-style: each one on or off on its own, the shape's ``focus``
    points in three scenarios of four, the others in one of four (with no focus, every point half the
    time), the ``core`` points always (with the longest delay, and never unperturbed: a shape has core
    points when its race was never seen without them). Delaying every point alike mostly delays both
    sides of a race; delaying some points and not the others shifts one side against the other.

    Its parts come from a ``random.Random`` seeded with ``variant``, not from draws of their own:
    hypothesis favours the simplest value of each draw and copies parts of earlier examples, which would
    make most perturbations alike (or absent); one drawn number gives every scenario an independent one.
    """
    if variant % 8 == 7 and not core:  # not a small number: hypothesis draws those often
        return None
    rng = random.Random(variant)
    points: tuple[str, ...] = ()
    while not points:
        points = tuple(
            point
            for point in POINTS
            if rng.random() < ((0.75 if point in focus else 0.25) if focus else 0.5) or point in core
        )
    # A racing shape's race is known to be at its focus points: delay them long and often
    rates, delays = ((0.6, 1.0, 1.0), (0.02, 0.05, 0.05)) if focus else ((0.3, 0.6, 1.0, 1.0), _DELAYS)
    return Perturbation(
        seed=rng.randrange(2**16),
        rate=rng.choice(rates),
        max_delay=max(delays) if core else rng.choice(delays),
        switch_interval=rng.choice((0.005, 1e-4, 1e-6, 0.05)),
        points=points,
    )


def scenarios(
    capabilities: Mapping[str, Any], bounds: ScheduleBounds | None = None
) -> st.SearchStrategy[Scenario]:
    """Hypothesis strategy of P1 scenarios for a strategy with these (validated) capabilities.

    Capabilities the strategy does not declare are never touched: no SIGKILL of a worker without
    ``uses_processes``; no long blocking code without ``can_cancel_blocking_code``.
    """
    return _schedule(dict(capabilities), bounds or ScheduleBounds())


# -- compiling -------------------------------------------------------------------------------------------


def _bundle(index: int, n_runners: int) -> str:
    index %= n_runners + 1
    return "algorithm" if index == 0 else f"runner {index - 1}"


class _Builder:
    """Accumulates the scripts, faults and store faults of one schedule."""

    def __init__(self, n_runners: int) -> None:
        self.steps: dict[str, list[Step]] = {
            name: [] for name in ["algorithm", *(f"runner {i}" for i in range(n_runners))]
        }
        self.faults: list[Fault] = []
        self.store_faults: list[StoreFault] = []
        self.calls: dict[tuple[str, str], int] = {}  # (bundle, method) -> calls so far (store-fault index)
        self.enqueued_by_algorithm = 0

    def store_step(self, bundle: str, op: str, count: int = 1) -> tuple[Step, int]:
        """The store step and the 1-based index of its first call of the op's method."""
        method = STORE_METHODS[op]
        first = self.calls.get((bundle, method), 0) + 1
        calls = count if op == "enqueue" else 1
        self.calls[(bundle, method)] = first - 1 + calls
        if op == "enqueue" and bundle == "algorithm":
            self.enqueued_by_algorithm += count
        args: dict[str, Any] = {"op": op}
        if op == "enqueue":
            args["count"] = count
        return Step("store", args=args), first

    def action_steps(self, bundle: str, turn: int, action: tuple[Any, ...]) -> list[Step]:
        kind = action[0]
        if kind in ("sleep", "poll", "ignore_event", "block", "ignore_cancel"):
            return [Step(kind, float(action[1]))]
        if kind == "store":
            step, _ = self.store_step(bundle, action[1], int(action[2]))
            return [step]
        if kind == "store-stall":
            step, call = self.store_step(bundle, action[1])
            self.store_faults.append(
                StoreFault(bundle, STORE_METHODS[action[1]], call, delay=float(action[2]))
            )
            return [step]
        if kind == "store-fault":
            step, call = self.store_step(bundle, action[1])
            self.store_faults.append(StoreFault(bundle, STORE_METHODS[action[1]], call, raises=action[2]))
            return [step]
        if kind == "set_event":
            return [Step("set_event")]
        if kind == "raise":
            return [Step("raise", args={"type": action[1], "message": f"P1 turn {turn} {bundle}"})]
        if kind == "keyboard_interrupt":
            return [Step("keyboard_interrupt", args={"message": f"P1 turn {turn} {bundle}"})]
        if kind == "exit":
            return [Step("exit", args={"code": int(action[1])})]
        raise ValueError(f"unknown schedule action {kind!r}")


def _tail_steps(tail: str) -> list[Step]:
    if tail == "poll":
        return [Step("poll")]
    if tail == "work":
        return [Step("store", args={"op": "work"})]
    if tail == "return":
        return [Step("return")]
    kind, _, length = tail.partition(" ")
    return [Step(kind, LONG_SECONDS if length == "long" else _SHORT[-1])]


def _compile(
    n_runners: int,
    raw: list[Any],
    tails: list[str],
    start: str,
    before_start: str | None,
    final_enqueue: int,
    caps: Mapping[str, Any],
    bounds: ScheduleBounds,
    shape: str = "",
) -> Scenario:
    build = _Builder(n_runners)
    # The journal condition that opens the next turn: the start condition, then each turn's marker.
    opener = {
        "all started": "all started",
        "algorithm started": "algorithm started",
        "last runner started": f"runner {n_runners - 1} started",
    }[start]
    turn = 0
    stopped = before_start is not None  # SIGINT before start: the turns would race it, so none is drawn
    for entry in raw if not stopped else ():
        turn += 1
        gate = _gate(turn_gate(turn))
        if entry[0] == "fault":
            # The signal goes out when the turn would open; its owner waits at a gate that never opens.
            owner = _bundle(entry[1], n_runners)
            action = entry[2]
            worker = 0
            if action == "sigkill-worker":
                if owner == "algorithm":
                    owner = "runner 0"
                worker = int(owner.split()[1])
            build.steps[owner].append(gate)
            build.faults.append(Fault(action, opener, worker=worker))
            stopped = True
            break
        build.faults.append(Fault("open-gate", opener, open_gate=turn_gate(turn)))
        if entry[0] == "group":
            size, order = entry[1]
            owners = [_bundle(i, n_runners) for i in order if i <= n_runners][:size]
            actions = [entry[2], *(entry[2] if other is None else other for other in entry[3])]
            # Members act together even when another member's failure has already set the event: each
            # passes the gate blind to it (a bundle busy in its own work does not look at the event).
            together = Step("gate", args={"name": turn_gate(turn), "ignore_event": True})
            for owner, action in zip(owners, actions[: len(owners)], strict=True):
                build.steps[owner] += [together, *build.action_steps(owner, turn, action)]
            stopped = True
            break
        owner = _bundle(entry[1], n_runners)
        action = entry[2]
        build.steps[owner] += [gate, *build.action_steps(owner, turn, action)]
        if action[0] in _STOPPING_KINDS:
            stopped = True
            break
        build.steps[owner].append(_gate(done_gate(turn)))
        opener = f"gate {done_gate(turn)}"
        build.faults.append(Fault("open-gate", opener, open_gate=done_gate(turn)))
    final = turn + 1
    build.steps["algorithm"].append(_gate(turn_gate(final)))
    if not stopped:
        build.faults.append(Fault("open-gate", opener, open_gate=turn_gate(final)))
    workers = [i for i, tail in enumerate(tails) if tail == "work"]
    if not stopped and final_enqueue:
        step, _ = build.store_step("algorithm", "enqueue", final_enqueue)
        build.steps["algorithm"].append(step)
    if not stopped and build.enqueued_by_algorithm and workers:
        wait = 5.0 * bounds.timeout_scale  # all complete at once when nothing is lost
        build.steps["algorithm"].append(Step("store", args={"op": "wait_all", "timeout": wait}))
    for index, tail in enumerate(tails):
        build.steps[f"runner {index}"] += _tail_steps(tail)
    faults = list(build.faults)
    if before_start is not None:
        faults.insert(0, Fault(before_start, "before start"))  # type: ignore[arg-type]
    grace = float(caps.get("grace_seconds", 2.0))
    declared = grace + 2 * float(caps.get("terminate_seconds", 2.0)) + float(caps.get("join_seconds", 5.0))
    long_tail = any(tail.endswith("long") for tail in tails)
    hang_bound = 30.0 * bounds.timeout_scale + declared + (LONG_SECONDS if long_tail else 0.0)
    return Scenario(
        name=_NAME_PREFIX + shape if shape else "P1",
        n_runners=n_runners,
        algorithm=Script(tuple(build.steps["algorithm"])),
        runners=tuple(Script(tuple(build.steps[f"runner {i}"])) for i in range(n_runners)),
        faults=tuple(faults),
        store_faults=tuple(build.store_faults),
        hang_bound=hang_bound,
    )


# -- text forms: replay (JSON) and pasteable Python --------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def scenario_json(scenario: Scenario) -> str:
    """The scenario as compact JSON (what ``--conformance-replay`` takes)."""
    return json.dumps(_plain(scenario), separators=(",", ":"), sort_keys=True)


def _script(data: Any) -> Script:
    return Script(
        tuple(Step(s["kind"], float(s.get("seconds", 0.0)), dict(s.get("args", {}))) for s in data["steps"])
    )


def scenario_from_json(text: str) -> Scenario:
    """A scenario from ``scenario_json`` text, ``b64:<base64 of it>`` or a path to a file holding it.

    Raises ``ValueError`` naming what is wrong with the value.
    """
    raw = replay_text(text)
    try:
        data = json.loads(raw)
        return Scenario(
            name=str(data.get("name", "P1")),
            n_runners=int(data["n_runners"]),
            algorithm=_script(data["algorithm"]),
            runners=tuple(_script(runner) for runner in data.get("runners", ())),
            faults=tuple(Fault(**fault) for fault in data.get("faults", ())),
            store_faults=tuple(StoreFault(**fault) for fault in data.get("store_faults", ())),
            repeat=int(data.get("repeat", 1)),
            hang_bound=float(data.get("hang_bound", 30.0)),
            settle=float(data.get("settle", 2.0)),
            inspect_caller_store=bool(data.get("inspect_caller_store", False)),
            perturbation=None if data.get("perturbation") is None else Perturbation(**data["perturbation"]),
        )
    except (ValueError, KeyError, TypeError) as error:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise ValueError(
            f"--conformance-replay {shown!r} is not a scenario (JSON, b64:..., or a file): "
            f"{type(error).__name__}: {error}"
        ) from None


def _step_source(step: Step) -> str:
    parts = [repr(step.kind)]
    if step.seconds:
        parts.append(repr(step.seconds))
    if step.args:
        parts.append(f"args={step.args!r}")
    return f"Step({', '.join(parts)})"


def _script_source(script: Script, indent: str) -> str:
    if not script.steps:
        return "Script()"
    inner = "".join(f"{indent}    {_step_source(step)},\n" for step in script.steps)
    return f"Script((\n{inner}{indent}))"


def _record_source(value: Any) -> str:
    defaults = {f.name: f.default for f in fields(value)}
    shown = [repr(getattr(value, name)) for name in list(defaults)[:2]]
    shown += [
        f"{name}={getattr(value, name)!r}"
        for name, default in list(defaults.items())[2:]
        if getattr(value, name) != default
    ]
    return f"{type(value).__name__}({', '.join(shown)})"


def scenario_source(scenario: Scenario) -> str:
    """The scenario as pasteable Python: the ``Scenario(...)`` constructor, one step per line."""
    lines = [
        "from conformance.perturbation import POINTS, Perturbation",
        "from conformance.scenarios import Fault, Scenario, Script, Step, StoreFault",
        "",
        "scenario = Scenario(",
        f"    name={scenario.name!r},",
        f"    n_runners={scenario.n_runners},",
        f"    algorithm={_script_source(scenario.algorithm, '    ')},",
        "    runners=(",
    ]
    lines += [f"        {_script_source(script, '        ')}," for script in scenario.runners]
    lines.append("    ),")
    if scenario.faults:
        lines.append("    faults=(")
        lines += [f"        {_record_source(fault)}," for fault in scenario.faults]
        lines.append("    ),")
    if scenario.store_faults:
        lines.append("    store_faults=(")
        lines += [f"        {_record_source(fault)}," for fault in scenario.store_faults]
        lines.append("    ),")
    if scenario.perturbation is not None:
        lines.append(f"    perturbation={scenario.perturbation!r},")
    lines.append(f"    hang_bound={scenario.hang_bound!r},")
    lines.append(")")
    return "\n".join(lines)
