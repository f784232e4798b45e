"""P1's oracle: the outcome a scenario must have, derived from the scenario alone, and the run judged by it.

``expect(scenario, capabilities)`` reads a turn-based schedule back from its compiled ``Scenario`` (gate
names ``turn-k``/``done-k``, the faults that open them or signal at them, the store faults) and replays
it symbolically: which turns run, which turn stops the run and how, and therefore

- the outcome: ``execute()`` returns, or raises which type (with which message for ordinary errors).
  The policy is the catalogue's: E3 first error wins, K1-K5/E6 ``KeyboardInterrupt``, ``SystemExit`` and
  other ``BaseException``s outrank ordinary errors, a SIGKILLed worker is an error (F1). When several
  bundles fail in the same turn their order is a race, so each of their failures is acceptable;
- which bundles must have seen the stop (``saw-stop``, ``cancelled`` or an exception, L2/L4/K1/E1);
- which turns must have run (no bundle is stopped before the stop, L3), and whether the rollouts the
  algorithm enqueued must all be complete when it waits for them (S1/S2);
- the termination bound the scenario implies: after the stop ``execute()`` returns within 1 s plus the
  strategy's declared grace (and escalation) for bundles that do not cooperate (L2, L6, L7, K3).

``judge(expectation, result)`` lists every violation of a run: the outcome, the above, and the invariants
every run keeps: no hang, no leak (R1-R5, R7), each bundle called at most once with a distinct id and
every started bundle ended (L1), each rollout completed at most once and only if enqueued (S1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conformance.scenarios import Scenario, ScenarioResult, Step
from conformance.schedules import DONE_PREFIX, STORE_METHODS, TURN_PREFIX

__all__ = ["Expectation", "OracleError", "Outcome", "expect", "judge"]

_KI = "builtins.KeyboardInterrupt"
_SYSTEM_EXIT = "builtins.SystemExit"
_SCRIPTED = "conformance.bundles."
_BASE_TYPES = frozenset({_KI, _SYSTEM_EXIT, _SCRIPTED + "ScriptedBaseException"})
_LEAK_FIELDS = (
    "threads",
    "processes",
    "zombies",
    "fds",
    "sockets",
    "ipc",
    "temp_files",
    "warnings",
    "asyncio",
    "caller_state",
)
_STOP_EVIDENCE = frozenset({"saw-stop", "cancelled", "exception"})
# The kit's own journal: a SIGINT landing just after the journal writer's os.open() returned (before its
# try/finally) leaves that descriptor open in the scenario process. That is the kit's, not the strategy's.
_KIT_JOURNAL = "/journal.jsonl"
_SHORT_SLACK = 0.5  # seconds: short non-cooperation and stalls still running when the stop comes
_COOPERATIVE_TAILS = frozenset({"poll", "work"})


class OracleError(ValueError):
    """The scenario is not a P1 schedule the oracle can read (e.g. a hand-edited replay)."""


@dataclass(frozen=True)
class Outcome:
    """One acceptable end of ``execute()``: ``returned``, or ``raised`` a type (``None``: any ordinary
    error) with a message (``None``: any)."""

    kind: str
    type_name: str | None = None
    message: str | None = None

    def matches(self, result: ScenarioResult) -> bool:
        if result.outcome != self.kind:
            return False
        if self.kind == "returned":
            return result.measurements.get("returned_value") is None
        info = result.exception
        if info is None:
            return False
        if self.type_name is None:
            return info.type_name not in _BASE_TYPES
        return info.type_name == self.type_name and (self.message is None or info.message == self.message)

    def describe(self) -> str:
        if self.kind == "returned":
            return "returns None"
        what = self.type_name or "an ordinary error (Exception) naming the killed worker"
        return f"raises {what}" + (f" {self.message!r}" if self.message is not None else "")


@dataclass(frozen=True)
class Expectation:
    """What the scenario implies; ``judge`` holds a run to it."""

    outcomes: tuple[Outcome, ...]
    stop: str  # how the run stops, in words
    bundles: tuple[str, ...]  # every bundle of the scenario
    must_stop: tuple[str, ...]  # cooperative bundles that, if started, must see the stop (or raise)
    must_cancel: tuple[str, ...]  # non-cooperative bundles that, if started, must be stopped anyway
    cancel_ok: bool  # cooperative bundles may be cancelled instead (SIGINT, BaseException, no grace)
    turns_run: tuple[tuple[int, str], ...]  # (turn, bundle) whose turn gate must have opened
    rollouts_complete: bool  # the algorithm's wait_all must see every rollout it enqueued succeeded
    killed: str | None  # the runner SIGKILLed by the kit, if any
    all_called: bool  # every bundle must have been called (a normal return)
    bound: float  # seconds from the stop to the end of execute()
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        outcomes = " or ".join(outcome.describe() for outcome in self.outcomes)
        return f"{self.stop}: execute() {outcomes} within {self.bound:.2f} s of the stop"


# -- reading the schedule back ---------------------------------------------------------------------------


@dataclass
class _Turn:
    number: int
    actions: list[tuple[str, Step | None]] = field(default_factory=list)  # (bundle, action or None)
    marked: bool = False  # a non-stopping turn: its owner reaches done-k, which opens the next turn
    fault: Any = None  # sigint/sigkill delivered at this turn's gate
    final: bool = False  # the algorithm's final gate


def _gate_name(step: Step) -> str | None:
    return str(step.args.get("name")) if step.kind == "gate" else None


def _turn_number(name: str | None, prefix: str) -> int | None:
    if name is None or not name.startswith(prefix):
        return None
    try:
        return int(name[len(prefix) :])
    except ValueError:
        return None


def _parse(scenario: Scenario) -> tuple[dict[int, _Turn], dict[str, list[Step]], dict[str, list[Step]]]:
    """Turns by number, each bundle's tail (steps after its turns) and the algorithm's final steps."""
    # A signal fault goes out when its turn would open: at the start condition (turn 1) or at the
    # previous turn's marker gate; its owner waits at the turn gate, which nobody opens.
    fault_turns: dict[int, Any] = {}
    for fault in scenario.faults:
        if fault.action == "open-gate" or fault.after == "before start":
            continue
        marker = _turn_number(fault.after[5:] if fault.after.startswith("gate ") else None, DONE_PREFIX)
        fault_turns[1 if marker is None else marker + 1] = fault
    turns: dict[int, _Turn] = {}
    tails: dict[str, list[Step]] = {}
    finals: dict[str, list[Step]] = {}
    names = ["algorithm", *(f"runner {i}" for i in range(scenario.n_runners))]
    for name in names:
        steps = list(
            scenario.algorithm.steps if name == "algorithm" else scenario.runner_script(int(name[7:])).steps
        )
        gates = [i for i, step in enumerate(steps) if _turn_number(_gate_name(step), TURN_PREFIX) is not None]
        index = 0
        while index < len(steps):
            number = _turn_number(_gate_name(steps[index]), TURN_PREFIX)
            if number is None:
                break
            turn = turns.setdefault(number, _Turn(number))
            signal_fault = fault_turns.get(number)
            if name == "algorithm" and index == gates[-1]:
                turn.final = True
                turn.actions.append((name, None))
                finals[name] = steps[index + 1 :]
                index = len(steps)
                break
            if signal_fault is not None:
                turn.fault = signal_fault
                turn.actions.append((name, None))
                index += 1
                continue
            if index + 1 >= len(steps):
                raise OracleError(f"{name}: turn gate {TURN_PREFIX}{number} is followed by no action")
            turn.actions.append((name, steps[index + 1]))
            index += 2
            if index < len(steps) and _turn_number(_gate_name(steps[index]), DONE_PREFIX) == number:
                turn.marked = True
                index += 1
        tails[name] = steps[index:]
    return turns, tails, finals


def _tail_kind(tail: Sequence[Step], grace: float) -> str:
    """``none`` (ends at once), ``cooperative``, ``short`` (ends by itself soon) or ``long``."""
    if not tail or tail[0].kind == "return":
        return "none"
    first = tail[0]
    if first.kind == "poll" and first.seconds == 0:
        return "cooperative"
    if first.kind == "store" and first.args.get("op") == "work":
        return "cooperative"
    if first.kind in ("ignore_event", "block", "ignore_cancel", "sleep"):
        return "long" if first.seconds > max(grace, 1.0) else "short"
    raise OracleError(f"unknown tail step {first.kind!r}")


# -- the expectation -------------------------------------------------------------------------------------


def _failure(bundle: str, step: Step) -> Outcome | None:
    """The failure a stopping action raises (``None`` for set_event)."""
    if step.kind == "raise":
        type_name = str(step.args.get("type", "ScriptedError"))
        if type_name in ("ScriptedError", "ScriptedBaseException"):
            qualified = _SCRIPTED + type_name
        elif "." in type_name or ":" in type_name:
            qualified = type_name.replace(":", ".")
        else:
            qualified = f"builtins.{type_name}"
        message = None if qualified in _BASE_TYPES else str(step.args.get("message", ""))
        return Outcome("raised", qualified, message)
    if step.kind == "keyboard_interrupt":
        return Outcome("raised", _KI)
    if step.kind == "exit":
        return Outcome("raised", _SYSTEM_EXIT)
    raise OracleError(f"{bundle}: {step.kind!r} is not a stopping action")


def expect(scenario: Scenario, capabilities: Mapping[str, Any], *, timeout_scale: float = 1.0) -> Expectation:
    """The outcome and invariants ``scenario`` implies for a strategy with these capabilities."""
    grace = float(capabilities.get("grace_seconds", 2.0))
    terminate = float(capabilities.get("terminate_seconds", 2.0))
    processes = bool(capabilities.get("uses_processes", True))
    turns, tails, finals = _parse(scenario)
    bundles = ("algorithm", *(f"runner {i}" for i in range(scenario.n_runners)))
    opens = {fault.open_gate: fault.after for fault in scenario.faults if fault.action == "open-gate"}
    raising = {(f.bundle, f.method, f.call): f for f in scenario.store_faults if f.raises}
    before_start = next((f for f in scenario.faults if f.after == "before start"), None)
    calls: Counter[tuple[str, str]] = Counter()
    enqueued = 0
    position: dict[str, int] = {name: 0 for name in bundles}  # turns each bundle has done
    turns_run: list[tuple[int, str]] = []
    outcomes: list[Outcome] = []
    acted: set[str] = set()  # bundles whose script ended in the stopping turn (raised) or were killed
    killed: str | None = None
    stop = ""
    stop_turn: int | None = None

    if before_start is not None:
        outcomes.append(Outcome("raised", _KI))
        stop = f"SIGINT ({before_start.action}) before any bundle started"
        stop_turn = 0
    number = 1
    while stop_turn is None:
        turn = turns.get(number)
        gate = f"{TURN_PREFIX}{number}"
        if turn is None:
            raise OracleError(f"turn {number} is opened but no bundle waits at gate {gate!r}")
        condition = turn.fault.after if turn.fault is not None else opens.get(gate)
        expected_condition = None if number == 1 else f"gate {DONE_PREFIX}{number - 1}"
        if condition is None or (expected_condition is not None and condition != expected_condition):
            raise OracleError(f"gate {gate!r} is reached by {condition!r}, not by the previous turn's marker")
        if turn.final:
            stop = "the algorithm returns after every turn ran"
            stop_turn = number
            turns_run.append((number, "algorithm"))
            outcomes.append(Outcome("returned"))
            acted.add("algorithm")
            break
        if turn.fault is not None:
            owner = turn.actions[0][0]
            stop_turn = number
            if turn.fault.action == "sigkill-worker":
                killed = f"runner {turn.fault.worker}"
                acted.add(killed)
                outcomes.append(Outcome("raised", None))
                stop = f"turn {number}: the kit SIGKILLs the process of {killed}"
            else:
                outcomes.append(Outcome("raised", _KI))
                stop = f"turn {number}: the kit sends SIGINT ({turn.fault.action}) while {owner} waits"
            break
        stopping: list[tuple[str, Outcome | None]] = []
        for bundle, step in turn.actions:
            assert step is not None
            position[bundle] = number
            if len(turn.actions) == 1:
                turns_run.append((number, bundle))
            if step.kind == "store":
                op = str(step.args.get("op"))
                method = STORE_METHODS.get(op)
                if method is None:
                    raise OracleError(f"turn {number}: unknown store op {op!r}")
                count = int(step.args.get("count", 1)) if op == "enqueue" else 1
                for _ in range(count):
                    calls[(bundle, method)] += 1
                    fault = raising.get((bundle, method, calls[(bundle, method)]))
                    if fault is not None:
                        message = f"injected fault in store.{method} call {calls[(bundle, method)]}"
                        type_name = fault.raises if "." in str(fault.raises) else None
                        qualified = type_name or (
                            _SCRIPTED + "ScriptedError"
                            if fault.raises == "ScriptedError"
                            else f"builtins.{fault.raises}"
                        )
                        stopping.append((bundle, Outcome("raised", qualified, message)))
                        break
                else:
                    if op == "enqueue" and bundle == "algorithm":
                        enqueued += count
            elif step.kind == "set_event":
                stopping.append((bundle, None))
            elif step.kind in ("raise", "keyboard_interrupt", "exit"):
                stopping.append((bundle, _failure(bundle, step)))
        if not stopping:
            if len(turn.actions) != 1 or not turn.marked:
                raise OracleError(f"turn {number} stops nothing yet has no marker gate {DONE_PREFIX}{number}")
            number += 1
            continue
        stop_turn = number
        failures = [outcome for _, outcome in stopping if outcome is not None]
        outcomes.extend(dict.fromkeys(failures))
        if len(failures) < len(stopping):
            outcomes.append(Outcome("returned"))
        acted.update(bundle for bundle, outcome in stopping if outcome is not None)
        together = " and ".join(bundle for bundle, _ in turn.actions)
        stop = f"turn {number}: {together} " + ("act together" if len(turn.actions) > 1 else "stops the run")
        break

    # Who must see the stop: bundles waiting at a gate (every turn gate watches the event) or in a
    # cooperative tail; non-cooperative tails must be cancelled within the bounds.
    must_stop: list[str] = []
    must_cancel: list[str] = []
    long_tail = False
    for name in bundles:
        if name in acted:
            continue
        remaining = [
            n for n, t in turns.items() if n > position[name] and any(b == name for b, _ in t.actions)
        ]
        waits_at_gate = any(stop_turn is None or n >= stop_turn for n in remaining) or (
            stop_turn is not None
            and stop_turn in turns
            and turns[stop_turn].fault is not None
            and turns[stop_turn].actions[0][0] == name
        )
        if name == "algorithm" or waits_at_gate:
            must_stop.append(name)
            continue
        kind = _tail_kind(tails.get(name, []), grace)
        if kind == "cooperative":
            must_stop.append(name)
        elif kind == "long":
            must_cancel.append(name)
            long_tail = True
    # Ctrl+C and BaseExceptions may cancel every bundle at once (as asyncio.TaskGroup does); so may a
    # strategy that declares no grace. Otherwise a cooperative bundle returns on its own (L2, L4).
    cancel_ok = grace == 0 or any(
        outcome.kind == "raised" and outcome.type_name in _BASE_TYPES for outcome in outcomes
    )
    bound = timeout_scale * 3.0 + _SHORT_SLACK
    if long_tail:
        bound += grace + (2 * terminate if processes else 0.0)
    final_steps = finals.get("algorithm", [])
    enqueued += sum(
        int(step.args.get("count", 1))
        for step in final_steps
        if step.kind == "store" and step.args.get("op") == "enqueue"
    )
    waits = any(step.kind == "store" and step.args.get("op") == "wait_all" for step in final_steps)
    final_reached = bool(outcomes) and stop.startswith("the algorithm returns")
    return Expectation(
        outcomes=tuple(dict.fromkeys(outcomes)),
        stop=stop,
        bundles=bundles,
        must_stop=tuple(must_stop),
        must_cancel=tuple(must_cancel),
        cancel_ok=cancel_ok,
        turns_run=tuple(turns_run),
        rollouts_complete=final_reached and waits and enqueued > 0,
        killed=killed,
        all_called=outcomes == [Outcome("returned")],
        bound=bound,
    )


# -- judging a run ---------------------------------------------------------------------------------------


def _stop_time(result: ScenarioResult) -> float | None:
    times = [
        r.t
        for r in result.journal
        if (r.bundle != "kit" and r.kind in ("set-event", "exception"))
        or (r.bundle == "kit" and r.kind == "fault" and r.detail != "open-gate")
        or (r.bundle == "algorithm" and r.kind == "end")
    ]
    return min(times) if times else None


def judge(expectation: Expectation, result: ScenarioResult) -> list[str]:
    """Every way ``result`` breaks ``expectation`` or an invariant, each line naming the contract."""
    problems: list[str] = []
    if result.outcome == "hang":
        problems.append(
            f"L2/L6: execute() hung (killed after the {result.scenario.hang_bound:g} s hang bound)"
        )
    elif result.outcome == "crashed":
        problems.append(f"P1: the process calling execute() died (exit status {result.exit_status})")
    elif not any(outcome.matches(result) for outcome in expectation.outcomes):
        wanted = " or ".join(outcome.describe() for outcome in expectation.outcomes)
        problems.append(f"E3/K1/E6: {_observed(result)}; expected it {wanted}")
    journal = result.journal
    started = Counter(r.bundle for r in journal if r.kind == "start")
    ended = {r.bundle for r in journal if r.kind == "end"}
    twice = sorted(name for name, count in started.items() if count > 1)
    if twice:
        problems.append(f"L1: called more than once: {', '.join(twice)}")
    foreign = sorted(name for name in started if name not in expectation.bundles)
    if foreign:
        problems.append(f"L1: bundles called with an unknown worker id: {', '.join(foreign)}")
    if expectation.all_called and result.outcome == "returned":
        missing = [name for name in expectation.bundles if name not in started]
        if missing:
            problems.append(f"L1: never called although execute() returned: {', '.join(missing)}")
    if result.outcome in ("returned", "raised"):
        unended = [
            n for n in expectation.bundles if n in started and n not in ended and n != expectation.killed
        ]
        if unended:
            problems.append(f"L2/L6: started but never ended: {', '.join(unended)}")
    evidence = {r.bundle for r in journal if r.kind in _STOP_EVIDENCE}
    seen = {r.bundle for r in journal if r.kind in ("saw-stop", "exception")}
    if expectation.cancel_ok:
        seen = evidence
    unseen = [n for n in expectation.must_stop if n in started and n not in seen]
    if unseen and result.outcome != "hang":
        cancelled = [n for n in unseen if n in evidence]
        problems.append(
            f"L2/L4: {', '.join(unseen)} never saw the stop ({expectation.stop})"
            + (
                f"; {', '.join(cancelled)} had to be cancelled although it polled the event"
                if cancelled
                else ""
            )
        )
    unstopped = [n for n in expectation.must_cancel if n in started and n not in evidence]
    if unstopped and result.outcome != "hang":
        problems.append(f"L6: {', '.join(unstopped)} ignored the event and was never cancelled")
    opened = {(r.bundle, str(r.detail)) for r in journal if r.kind == "gate-open"}
    skipped = [f"turn {n} of {b}" for n, b in expectation.turns_run if (b, f"{TURN_PREFIX}{n}") not in opened]
    if skipped and result.outcome != "hang":
        problems.append(f"L3: the schedule was cut short before the stop: {', '.join(skipped)} never ran")
    stop_t = _stop_time(result)
    if stop_t is not None:
        early = [r for r in journal if r.kind in ("saw-stop", "cancelled") and r.t < stop_t]
        if early:
            first = early[0]
            problems.append(
                f"L3: {first.bundle} saw a stop nobody asked for ({first.kind} {first.detail}) "
                f"before {expectation.stop}"
            )
    end = next((r for r in journal if r.bundle == "kit" and r.kind == "execute-end"), None)
    if stop_t is not None and end is not None and end.t - stop_t > expectation.bound:
        took = end.t - stop_t
        problems.append(
            f"L2/L6/K3: execute() ended {took:.3f} s after the stop; bound {expectation.bound:.3f} s"
        )
    problems.extend(_rollout_problems(expectation, result))
    leaks = [
        f"{name}: {entry}"
        for name in _LEAK_FIELDS
        for entry in getattr(result.leaks, name)
        if not (name == "fds" and str(entry).endswith(_KIT_JOURNAL))
    ]
    leaks += list(result.measurements.get("survivors") or [])
    if leaks and result.outcome in ("returned", "raised"):
        problems.append("R1-R5/R7: left behind: " + "; ".join(leaks[:8]) + (" ..." if len(leaks) > 8 else ""))
    return problems


def _observed(result: ScenarioResult) -> str:
    if result.outcome == "raised" and result.exception is not None:
        return f"execute() raised {result.exception.type_name}: {result.exception.message!r}"
    value = result.measurements.get("returned_value")
    return "execute() returned" + (f" {value}" if value is not None else " None")


def _rollout_problems(expectation: Expectation, result: ScenarioResult) -> list[str]:
    problems: list[str] = []
    enqueued = {rid for r in result.journal if r.kind == "enqueued" for rid in r.data.get("ids", [])}
    completions = Counter(r.detail for r in result.journal if r.kind == "completed")
    duplicated = {rid: n for rid, n in completions.items() if n > 1}
    if duplicated:
        problems.append(f"S1: rollouts completed more than once: {dict(list(duplicated.items())[:5])}")
    foreign = [rid for rid in completions if rid not in enqueued]
    if foreign:
        problems.append(f"S1: completed rollouts nobody enqueued: {foreign[:5]}")
    if expectation.rollouts_complete and result.outcome == "returned":
        waited = [r for r in result.journal if r.kind == "waited" and r.bundle == "algorithm"]
        if not waited:
            problems.append("S1/S2: the algorithm's wait for its rollouts never returned")
        else:
            statuses = waited[-1].data.get("statuses", {})
            asked = int(waited[-1].data.get("asked", 0))
            done = sum(1 for status in statuses.values() if status == "succeeded")
            if done != asked:
                problems.append(
                    f"S1: {asked - done} of the {asked} rollouts the algorithm enqueued were lost "
                    f"(statuses {dict(Counter(statuses.values()))})"
                )
    return problems
