"""T9's history model and checker: what concurrent clients did to a ``LightningStore``, and whether a store
that keeps the documented semantics (``agentlightning/store/base.py``, the status rules of
``agentlightning/store/memory.py``'s module docstring) could have answered that way.

A history is a list of ``Event``s: each operation is an ``invoke`` and a completion, ``ok`` (with its
result as plain JSON data), ``fail`` (the store refused it: ``ValueError``/``TypeError``, which the
semantics say change nothing) or ``info`` (anything else: a transport error, so the outcome is unknown).
Times are ``time.monotonic_ns()``, one clock for every process on Linux, so histories recorded in several
processes merge by concatenation. Events are plain data: picklable, and JSON through ``history_json``.

``check_history`` knows the store only through those semantics. How it reasons:

- **Per key, exactly.** Each rollout (and the resources, as one more key) is checked for
  linearizability on its own: a Wing-Gong search with memoisation looks for an order of that key's
  operations that respects real time (an operation that completed before another was invoked comes
  first; overlapping ones in any order) and that the documented state machine accepts, results
  included. The model is nondeterministic (an attempt of a rollout with ``timeout_seconds`` or
  ``unresponsive_seconds`` may expire at any moment), so the search carries the set of possible states.
- **Across keys, soundly.** A precise check over all keys at once would be exponential, so operations
  that touch several rollouts (``dequeue_rollout`` returning ``None``, ``query_rollouts``,
  ``wait_for_rollouts``) are projected onto each rollout: each projection must linearize within the
  operation's interval, but not necessarily at one common point. That never flags a correct store (a
  linearizable history projects to linearizable per-key histories); it can miss a defect that only a
  common point would expose (e.g. a FIFO violation, which is not checked).
- **Unknown outcomes.** An ``info`` operation whose effect is fixed by its arguments (status updates)
  may or may not have happened. One whose effect depends on a result nobody saw (an enqueue, dequeue,
  span or resources snapshot) ends the checking of what it may have touched: only operations that
  completed before it was invoked are checked there. ``HistoryAnalysis.notes`` says so.
- **Direct rules** need no search: attempt ids handed out twice, ``wait_for_rollouts`` returning a
  non-terminal rollout, rollouts out of the order asked, or returning early with some still running, an
  attempt expiring before its bound, end times missing or stamped on live objects.

Every ``Violation`` names its contract (T1-T7), a rule, the ids and the operations (``client#index``).
``format_history`` prints the timeline a failure message shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "EVENT_KINDS",
    "RULES",
    "Event",
    "HistoryAnalysis",
    "Operation",
    "Violation",
    "analyse_history",
    "check_history",
    "format_history",
    "history_from_json",
    "history_json",
    "operations",
]

EVENT_KINDS = ("invoke", "ok", "fail", "info")

# The store contract's status vocabulary (CONTRACTS.md, T1), the kit's own: taken from no installed
# agentlightning, so the kit imports beside any runtime that speaks the protocol (upstream 0.2.x/0.3.x
# name the same statuses but export none of these sets).
ROLLOUT_STATUSES: frozenset[str] = frozenset(
    {"queuing", "preparing", "running", "succeeded", "failed", "cancelled", "requeuing"}
)
ATTEMPT_STATUSES: frozenset[str] = frozenset(
    {"preparing", "running", "succeeded", "failed", "timeout", "unresponsive"}
)
TERMINAL_ROLLOUT_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
TERMINAL_ATTEMPT_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "timeout", "unresponsive"})
ACTIVE_ATTEMPT_STATUSES: frozenset[str] = frozenset({"preparing", "running"})

RULES: Mapping[str, str] = {
    "T1 transition": "statuses move only along the documented transitions, and results show where they went",
    "T1 terminal-final": "a rollout reaches one terminal state and never leaves it",
    "T1 unknown-id": "operations on an unknown rollout or attempt id are refused",
    "T1 end-time": "terminal transitions stamp end_time; live rollouts and attempts have none",
    "T2 double-claim": "a queued rollout is handed to one attempt at a time, once per attempt",
    "T2 lost": "dequeue_rollout returns None only when no rollout is queued",
    "T3 retry-policy": "an ended attempt requeues or fails its rollout exactly as its RolloutConfig says",
    "T3 early-expiry": "an attempt times out or turns unresponsive only after its configured bound",
    "T4 wait": "wait_for_rollouts returns exactly the asked rollouts that are terminal, in the order asked",
    "T5 read-consistency": "reads reflect every acknowledged write (statuses, attempts, values)",
    "T6 resources": "each add_resources is a new snapshot, kept as written; get_latest_resources returns the "
    "latest one",
    "T7 spans": "spans attach only to existing attempts, with sequence ids increasing per attempt",
}
"""The rules the checker enforces, by name (the contract ID is the first word)."""

# The documented status rules (memory.py's module docstring): what update_rollout may ask for, what an
# attempt may move to, and what finishing or requeuing a rollout does to its active attempt.
_ROLLOUT_UPDATES: Mapping[str, frozenset[str]] = {
    "queuing": frozenset({"requeuing", "succeeded", "failed", "cancelled"}),
    "requeuing": frozenset({"queuing", "succeeded", "failed", "cancelled"}),
    "preparing": frozenset({"running", "queuing", "requeuing", "succeeded", "failed", "cancelled"}),
    "running": frozenset({"queuing", "requeuing", "succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
_ATTEMPT_UPDATES: Mapping[str, frozenset[str]] = {
    "preparing": frozenset({"running", "succeeded", "failed", "timeout", "unresponsive"}),
    "running": frozenset({"succeeded", "failed", "timeout", "unresponsive"}),
    **{status: frozenset() for status in TERMINAL_ATTEMPT_STATUSES},
}
_ATTEMPT_END_FOR_ROLLOUT: Mapping[str, str] = {
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "failed",
    "queuing": "failed",
    "requeuing": "failed",
}
_QUEUED = frozenset({"queuing", "requeuing"})
_CLAIMED = frozenset({"preparing", "running"})
_ABSENT = "absent"
_RESOURCES_KEY = "resources"
_SEARCH_LIMIT = 200_000  # memoised search configurations per key; past it the key is inconclusive
# Clock slack for the timing rules: the store may stamp with time.time(), the history with monotonic_ns.
_SLACK_NS = 5_000_000


# -- the history -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One invocation or completion of a store operation by one client.

    ``index`` numbers a client's operations and pairs an ``invoke`` with its completion. ``value`` is
    the result as JSON data (``ok``); ``error`` and ``message`` the exception's type name and text
    (``fail``/``info``).
    """

    kind: str
    client: str
    index: int
    op: str
    time_ns: int
    args: dict[str, Any] = field(default_factory=dict)
    value: Any = None
    error: str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"event kind must be one of {EVENT_KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        return cls(**data)


@dataclass(frozen=True)
class Operation:
    """An invocation paired with its completion; ``complete_ns`` is ``None`` while unknown (info, pending)."""

    client: str
    index: int
    op: str
    args: dict[str, Any]
    outcome: str  # ok | fail | info | pending
    invoke_ns: int
    complete_ns: int | None
    value: Any = None
    error: str | None = None
    message: str | None = None

    @property
    def ref(self) -> str:
        """``client#index``: how violations and the timeline name this operation."""
        return f"{self.client}#{self.index}"

    @property
    def definite(self) -> bool:
        return self.outcome in ("ok", "fail")


@dataclass(frozen=True)
class Violation:
    """A rule the history breaks: the contract, the rule, what happened, and who was involved."""

    rule: str  # a key of RULES, e.g. "T2 double-claim"
    message: str
    ids: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()  # Operation.ref of the operations involved

    @property
    def contract(self) -> str:
        return self.rule.split()[0]

    def __str__(self) -> str:
        ops = f" [ops {', '.join(self.operations)}]" if self.operations else ""
        return f"{self.rule}: {self.message}{ops}"


@dataclass
class HistoryAnalysis:
    """What ``analyse_history`` found: violations, and notes on what it could not check (and why)."""

    violations: list[Violation]
    notes: list[str]
    operations: list[Operation]


def history_json(history: Iterable[Event]) -> str:
    """The history as compact JSON (a list of event objects)."""
    return json.dumps([event.to_dict() for event in history], separators=(",", ":"))


def history_from_json(text: str) -> list[Event]:
    """Events from ``history_json`` text; a ``ValueError`` names a malformed event."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError(f"a history is a JSON list of events, got {type(data).__name__}")
    events = []
    for position, item in enumerate(data):
        try:
            events.append(Event.from_dict(item))
        except (TypeError, ValueError) as error:
            raise ValueError(f"history event {position} is malformed: {error}") from None
    return events


def operations(history: Iterable[Event]) -> list[Operation]:
    """Pair invocations with completions, in invocation order. A ``ValueError`` names a malformed pair."""
    invoked: dict[tuple[str, int], Event] = {}
    done: dict[tuple[str, int], Event] = {}
    in_flight: dict[str, int] = {}
    for event in sorted(history, key=lambda e: (e.time_ns, e.kind != "invoke")):
        key = (event.client, event.index)
        if event.kind == "invoke":
            if key in invoked:
                raise ValueError(f"operation {event.client}#{event.index} is invoked twice")
            other = in_flight.get(event.client)
            if other is not None:
                raise ValueError(
                    f"client {event.client!r} invoked #{event.index} while #{other} was still in flight"
                )
            invoked[key] = event
            in_flight[event.client] = event.index
        else:
            if key not in invoked:
                raise ValueError(f"operation {event.client}#{event.index} completes without an invocation")
            if key in done:
                raise ValueError(f"operation {event.client}#{event.index} completes twice")
            done[key] = event
            in_flight.pop(event.client, None)
    result = []
    for key, call in invoked.items():
        end = done.get(key)
        outcome = "pending" if end is None else end.kind
        result.append(
            Operation(
                client=call.client,
                index=call.index,
                op=call.op,
                args=dict(call.args),
                outcome=outcome,
                invoke_ns=call.time_ns,
                complete_ns=None if end is None or end.kind == "info" else end.time_ns,
                value=None if end is None else end.value,
                error=None if end is None else end.error,
                message=None if end is None else end.message,
            )
        )
    result.sort(key=lambda op: (op.invoke_ns, op.client, op.index))
    return result


# -- the per-rollout model -------------------------------------------------------------------------


class _Attempt(NamedTuple):
    attempt_id: str
    sequence_id: int
    status: str
    by_store: bool  # ended by the store (expiry, superseded, rollout ended): late reports are dropped
    spans: tuple[int, ...]  # sequence ids of its spans, in the order they were added


class _Rollout(NamedTuple):
    status: str
    via: str  # how it got that status: "enqueue", "claim", "update_rollout", "policy:<attempt status>#<n>"
    attempts: tuple[_Attempt, ...]
    metadata: str  # canonical JSON


_NOTHING = _Rollout(_ABSENT, "", (), "{}")


@dataclass(frozen=True)
class _Config:
    max_attempts: int
    retry_condition: frozenset[str]
    timeout_seconds: float | None
    unresponsive_seconds: float | None

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> _Config:
        data = data or {}
        return cls(
            max_attempts=int(data.get("max_attempts", 1)),
            retry_condition=frozenset(data.get("retry_condition") or ()),
            timeout_seconds=data.get("timeout_seconds"),
            unresponsive_seconds=data.get("unresponsive_seconds"),
        )

    def describe(self) -> str:
        return (
            f"RolloutConfig(max_attempts={self.max_attempts}, retry_condition={sorted(self.retry_condition)})"
        )


@dataclass(frozen=True)
class _Reason:
    rule: str
    text: str


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _with_attempt(state: _Rollout, position: int, attempt: _Attempt) -> _Rollout:
    attempts = list(state.attempts)
    attempts[position] = attempt
    return state._replace(attempts=tuple(attempts))


def _end_attempt(
    state: _Rollout, position: int, status: str, *, by_store: bool, propagate: bool, config: _Config
) -> _Rollout:
    attempt = state.attempts[position]
    state = _with_attempt(state, position, attempt._replace(status=status, by_store=by_store))
    if not propagate or position != len(state.attempts) - 1 or state.status not in _CLAIMED:
        return state  # a superseded attempt never changes its rollout
    via = f"policy:{status}#{attempt.sequence_id}"
    if status == "succeeded":
        return state._replace(status="succeeded", via=via)
    if status in config.retry_condition and attempt.sequence_id < config.max_attempts:
        return state._replace(status="requeuing", via=via)
    return state._replace(status="failed", via=via)


def _set_running(state: _Rollout, position: int) -> _Rollout:
    state = _with_attempt(state, position, state.attempts[position]._replace(status="running"))
    if position == len(state.attempts) - 1 and state.status == "preparing":
        state = state._replace(status="running")
    return state


def _active(state: _Rollout) -> int | None:
    if state.attempts and state.attempts[-1].status in ACTIVE_ATTEMPT_STATUSES:
        return len(state.attempts) - 1
    return None


def _expiries(state: _Rollout, config: _Config) -> list[_Rollout]:
    """The states the store may move to on its own: the active attempt timing out or going silent."""
    position = _active(state)
    if position is None:
        return []
    ends = []
    if config.timeout_seconds is not None:
        ends.append("timeout")
    if config.unresponsive_seconds is not None:
        ends.append("unresponsive")
    return [_end_attempt(state, position, end, by_store=True, propagate=True, config=config) for end in ends]


def _closure(states: Iterable[_Rollout], config: _Config) -> frozenset[_Rollout]:
    result: set[_Rollout] = set()
    todo = list(states)
    while todo:
        state = todo.pop()
        if state in result:
            continue
        result.add(state)
        todo.extend(_expiries(state, config))
    return frozenset(result)


def _describe(state: _Rollout) -> str:
    if state.status == _ABSENT:
        return "not yet enqueued"
    attempts = ", ".join(f"#{a.sequence_id} {a.attempt_id} {a.status}" for a in state.attempts)
    return f"{state.status} (attempts: {attempts or 'none'})"


def _attempt_position(state: _Rollout, attempt_id: str) -> int | None:
    if attempt_id == "latest":
        return len(state.attempts) - 1 if state.attempts else None
    for position, attempt in enumerate(state.attempts):
        if attempt.attempt_id == attempt_id:
            return position
    return None


def _status_rule(state: _Rollout, reported: str, default: str) -> str:
    """Which rule a rollout status that differs from the model's breaks."""
    if state.via.startswith("policy:") and {state.status, reported} <= {"requeuing", "failed"}:
        return "T3 retry-policy"
    if state.status in TERMINAL_ROLLOUT_STATUSES:
        return "T1 terminal-final"
    return default


@dataclass
class _KeyContext:
    """What is fixed for one rollout: its id, config, input, and the enqueue that created it."""

    rollout_id: str
    config: _Config
    config_data: dict[str, Any]
    input: Any


class _Applied(NamedTuple):
    state: _Rollout
    refused: bool  # the semantics require the store to refuse the call in that state
    reason: _Reason | None  # why the observed result does not match (ok outcomes only)


def _rollout_mismatch(
    state: _Rollout, ctx: _KeyContext, value: Mapping[str, Any], default_rule: str
) -> _Reason | None:
    reported = value.get("status")
    if reported != state.status:
        rule = _status_rule(state, str(reported), default_rule)
        return _Reason(rule, f"rollout {ctx.rollout_id} reported {reported!r}; it is {_describe(state)}")
    metadata = _canonical(value.get("metadata", {}))
    if metadata != state.metadata:
        return _Reason(
            "T5 read-consistency",
            f"rollout {ctx.rollout_id} metadata reads {metadata}; the acknowledged value is {state.metadata}",
        )
    if _canonical(value.get("input")) != _canonical(ctx.input):
        return _Reason(
            "T5 read-consistency",
            f"rollout {ctx.rollout_id} input reads {_canonical(value.get('input'))}; "
            f"it was enqueued with {_canonical(ctx.input)}",
        )
    if "config" in value and _canonical(value["config"]) != _canonical(ctx.config_data):
        return _Reason(
            "T5 read-consistency",
            f"rollout {ctx.rollout_id} config reads {_canonical(value['config'])}; "
            f"it was enqueued with {_canonical(ctx.config_data)}",
        )
    return None


def _attempt_mismatch(attempt: _Attempt, value: Mapping[str, Any], rule: str) -> _Reason | None:
    seen = (value.get("attempt_id"), value.get("sequence_id"), value.get("status"))
    wanted = (attempt.attempt_id, attempt.sequence_id, attempt.status)
    if seen != wanted:
        return _Reason(
            rule,
            f"attempt reads {seen[0]} #{seen[1]} {seen[2]!r}; it is {wanted[0]} #{wanted[1]} {wanted[2]!r}",
        )
    return None


def _attempts_mismatch(state: _Rollout, values: Sequence[Mapping[str, Any]]) -> _Reason | None:
    if len(values) != len(state.attempts):
        seen = [f"#{v.get('sequence_id')} {v.get('status')}" for v in values]
        return _Reason("T5 read-consistency", f"attempts read as {seen}; the rollout is {_describe(state)}")
    for attempt, value in zip(state.attempts, values, strict=True):
        reason = _attempt_mismatch(attempt, value, "T5 read-consistency")
        if reason is not None:
            return reason
    return None


# Each _apply_* takes (state, ctx, op, outcome-independent) and says what the call does in that state:
# the new state, whether the store must refuse it, and (for ok outcomes) why its result cannot be.


def _apply_enqueue(state: _Rollout, ctx: _KeyContext, op: Operation) -> _Applied:
    if state.status != _ABSENT:
        return _Applied(state, True, None)
    metadata = _canonical(op.args.get("metadata") or {})
    new = _Rollout("queuing", "enqueue", (), metadata)
    reason = None
    if op.outcome == "ok":
        reason = _rollout_mismatch(new, ctx, op.value, "T1 transition")
    return _Applied(new, False, reason)


def _apply_claim(state: _Rollout, ctx: _KeyContext, op: Operation) -> _Applied:
    value = op.value or {}
    attempt = value.get("attempt") or {}
    attempt_id = str(attempt.get("attempt_id"))
    sequence = attempt.get("sequence_id")
    if state.status not in _QUEUED:
        live = _active(state)
        if state.status == _ABSENT:
            reason = _Reason("T2 double-claim", f"rollout {ctx.rollout_id} handed out before it was enqueued")
        elif live is not None:
            holder = state.attempts[live]
            reason = _Reason(
                "T2 double-claim",
                f"rollout {ctx.rollout_id} handed to attempt #{sequence} {attempt_id} while attempt "
                f"#{holder.sequence_id} {holder.attempt_id} is still {holder.status}",
            )
        elif state.via.startswith("policy:"):
            ended, _, number = state.via.removeprefix("policy:").partition("#")
            reason = _Reason(
                "T3 retry-policy",
                f"rollout {ctx.rollout_id} handed out again (attempt #{sequence}) although attempt #{number} "
                f"ended {ended!r} and its {ctx.config.describe()} makes it {state.status!r}",
            )
        else:
            reason = _Reason(
                "T1 terminal-final",
                f"rollout {ctx.rollout_id} handed out (attempt #{sequence}) after it ended {state.status!r}",
            )
        return _Applied(state, False, reason)
    expected = len(state.attempts) + 1
    if any(a.attempt_id == attempt_id for a in state.attempts):
        return _Applied(
            state,
            False,
            _Reason("T2 double-claim", f"attempt {attempt_id} of rollout {ctx.rollout_id} handed out twice"),
        )
    new_attempt = _Attempt(attempt_id, expected, "preparing", False, ())
    new = state._replace(status="preparing", via="claim", attempts=(*state.attempts, new_attempt))
    mismatch = _attempt_mismatch(new_attempt, attempt, "T2 double-claim")
    if mismatch is None:
        mismatch = _rollout_mismatch(new, ctx, value, "T1 transition")
    return _Applied(new, False, mismatch)


def _apply_empty_dequeue(state: _Rollout, ctx: _KeyContext, op: Operation) -> _Applied:
    reason = None
    if state.status in _QUEUED:
        reason = _Reason(
            "T2 lost", f"dequeue_rollout returned None while rollout {ctx.rollout_id} was {state.status!r}"
        )
    return _Applied(state, False, reason)


def _apply_update_attempt(state: _Rollout, ctx: _KeyContext, op: Operation) -> _Applied:
    attempt_id = str(op.args.get("attempt_id"))
    position = _attempt_position(state, attempt_id)
    if position is None:
        reason = _Reason(
            "T1 unknown-id",
            f"update_attempt accepted unknown attempt {attempt_id} of rollout {ctx.rollout_id}",
        )
        return _Applied(state, True, reason)
    attempt = state.attempts[position]
    old = attempt.status
    wanted = op.args.get("status")
    heartbeat = op.args.get("last_heartbeat_time") is not None
    if wanted == old:
        wanted = None
    elif wanted is not None and wanted not in _ATTEMPT_UPDATES[old]:
        if not attempt.by_store:
            reason = _Reason(
                "T1 transition",
                f"attempt {attempt.attempt_id} of rollout {ctx.rollout_id} went from {old!r} to {wanted!r}",
            )
            return _Applied(state, True, reason)
        wanted = None  # a late report about an attempt the store ended: dropped
    new = state
    if wanted in TERMINAL_ATTEMPT_STATUSES:
        new = _end_attempt(new, position, wanted, by_store=False, propagate=True, config=ctx.config)
    elif old == "preparing" and (wanted == "running" or heartbeat):
        new = _set_running(new, position)
    mismatch = None
    if op.outcome == "ok":
        mismatch = _attempt_mismatch(new.attempts[position], op.value or {}, "T1 transition")
    return _Applied(new, False, mismatch)


def _apply_add_span(state: _Rollout, ctx: _KeyContext, op: Operation) -> _Applied:
    attempt_id = str(op.args.get("attempt_id"))
    position = _attempt_position(state, attempt_id)
    if position is None:
        reason = _Reason(
            "T7 spans", f"a span was accepted for unknown attempt {attempt_id} of {ctx.rollout_id}"
        )
        return _Applied(state, True, reason)
    attempt = state.attempts[position]
    value = op.value or {}
    sequence = value.get("sequence_id") if op.outcome == "ok" else None
    if op.outcome != "ok":
        return _Applied(state, False, None)
    last = max(attempt.spans, default=0)
    if not isinstance(sequence, int) or sequence <= last:
        reason = _Reason(
            "T7 spans",
            f"span of attempt {attempt.attempt_id} got sequence id {sequence!r}; the attempt's spans so far "
            f"are {list(attempt.spans)} (ids must increase)",
        )
        return _Applied(state, False, reason)
    new = _with_attempt(state, position, attempt._replace(spans=(*attempt.spans, sequence)))
    if attempt.status == "preparing":
        new = _set_running(new, position)
    return _Applied(new, False, None)


def _apply_update_rollout(state: _Rollout, ctx: _KeyContext, op: Operation) -> _Applied:
    old = state.status
    wanted = op.args.get("status")
    if state.status == _ABSENT:
        return _Applied(state, True, _Reason("T1 unknown-id", f"update_rollout accepted {ctx.rollout_id}"))
    if wanted == old:
        wanted = None
    elif wanted is not None and wanted not in _ROLLOUT_UPDATES[old]:
        rule = "T1 terminal-final" if old in TERMINAL_ROLLOUT_STATUSES else "T1 transition"
        return _Applied(
            state, True, _Reason(rule, f"rollout {ctx.rollout_id} went from {old!r} to {wanted!r}")
        )
    new = state
    if "metadata" in op.args:
        new = new._replace(metadata=_canonical(op.args["metadata"]))
    if wanted is not None:
        position = _active(new)
        if wanted == "running" and position is not None:
            new = _set_running(new, position)
        else:
            if position is not None:
                end = _ATTEMPT_END_FOR_ROLLOUT[wanted]
                new = _end_attempt(new, position, end, by_store=True, propagate=False, config=ctx.config)
            new = new._replace(status=wanted, via="update_rollout")
    reason = None
    if op.outcome == "ok":
        reason = _rollout_mismatch(new, ctx, op.value or {}, "T1 transition")
    return _Applied(new, False, reason)


def _read(state: _Rollout, reason: _Reason | None) -> _Applied:
    return _Applied(state, False, reason)


def _apply_get_rollout(state: _Rollout, ctx: _KeyContext, op: Operation) -> _Applied:
    if op.value is None:
        if state.status == _ABSENT:
            return _read(state, None)
        return _read(
            state, _Reason("T5 read-consistency", f"get_rollout_by_id({ctx.rollout_id}) returned None")
        )
    if state.status == _ABSENT:
        return _read(state, _Reason("T5 read-consistency", f"{ctx.rollout_id} read before it was enqueued"))
    return _read(state, _rollout_mismatch(state, ctx, op.value, "T5 read-consistency"))


def _listed(op: Operation, rollout_id: str) -> Mapping[str, Any] | None:
    for item in op.value or ():
        if isinstance(item, Mapping) and item.get("rollout_id") == rollout_id:
            return item
    return None


def _apply_query(state: _Rollout, ctx: _KeyContext, op: Operation) -> _Applied:
    statuses = op.args.get("status")
    item = _listed(op, ctx.rollout_id)
    if item is None:
        if state.status == _ABSENT or (statuses is not None and state.status not in statuses):
            return _read(state, None)
        return _read(
            state,
            _Reason("T5 read-consistency", f"query_rollouts left out {ctx.rollout_id}, {_describe(state)}"),
        )
    if state.status == _ABSENT:
        return _read(
            state, _Reason("T5 read-consistency", f"query_rollouts listed {ctx.rollout_id} too early")
        )
    if statuses is not None and item.get("status") not in statuses:
        return _read(
            state,
            _Reason(
                "T5 read-consistency", f"query_rollouts(status={statuses}) listed it {item.get('status')!r}"
            ),
        )
    return _read(state, _rollout_mismatch(state, ctx, item, "T5 read-consistency"))


def _apply_wait(state: _Rollout, ctx: _KeyContext, op: Operation) -> _Applied:
    if state.status == _ABSENT:
        return _Applied(state, True, _Reason("T4 wait", f"waited on {ctx.rollout_id} before it existed"))
    item = _listed(op, ctx.rollout_id)
    if item is None:
        if state.status in TERMINAL_ROLLOUT_STATUSES:
            # Left out a rollout its retry policy failed: most likely the store requeued it instead.
            rule = _status_rule(state, "requeuing", "T4 wait")
            return _read(
                state,
                _Reason(
                    "T4 wait" if rule == "T1 terminal-final" else rule,
                    f"wait_for_rollouts left out {ctx.rollout_id}, which was already {state.status!r} "
                    f"({state.via.replace('policy:', 'by its retry policy after attempt ')})",
                ),
            )
        return _read(state, None)
    if state.status not in TERMINAL_ROLLOUT_STATUSES:
        return _read(
            state,
            _Reason(
                "T4 wait",
                f"wait_for_rollouts returned {ctx.rollout_id} as {item.get('status')!r}; "
                f"it is {_describe(state)}",
            ),
        )
    return _read(state, _rollout_mismatch(state, ctx, item, "T4 wait"))


def _apply_query_attempts(state: _Rollout, ctx: _KeyContext, op: Operation) -> _Applied:
    return _read(state, _attempts_mismatch(state, list(op.value or ())))


def _apply_latest_attempt(state: _Rollout, ctx: _KeyContext, op: Operation) -> _Applied:
    if op.value is None:
        if not state.attempts:
            return _read(state, None)
        return _read(state, _Reason("T5 read-consistency", f"get_latest_attempt({ctx.rollout_id}) was None"))
    if not state.attempts:
        return _read(state, _Reason("T5 read-consistency", f"{ctx.rollout_id} has no attempt yet"))
    return _read(state, _attempt_mismatch(state.attempts[-1], op.value, "T5 read-consistency"))


def _apply_query_spans(state: _Rollout, ctx: _KeyContext, op: Operation) -> _Applied:
    attempt_id = op.args.get("attempt_id")
    if attempt_id is None:
        chosen = list(state.attempts)
    else:
        position = _attempt_position(state, str(attempt_id))
        chosen = [] if position is None else [state.attempts[position]]
    wanted = [sequence for attempt in chosen for sequence in sorted(attempt.spans)]
    seen = [item.get("sequence_id") for item in op.value or ()]
    if seen != wanted:
        return _read(
            state,
            _Reason(
                "T7 spans", f"query_spans({ctx.rollout_id}, {attempt_id}) read {seen}; spans are {wanted}"
            ),
        )
    return _read(state, None)


_ROLLOUT_STEPS: Mapping[str, Callable[[_Rollout, _KeyContext, Operation], _Applied]] = {
    "enqueue": _apply_enqueue,
    "claim": _apply_claim,
    "empty": _apply_empty_dequeue,
    "update_attempt": _apply_update_attempt,
    "add_span": _apply_add_span,
    "update_rollout": _apply_update_rollout,
    "get_rollout": _apply_get_rollout,
    "query": _apply_query,
    "wait": _apply_wait,
    "query_attempts": _apply_query_attempts,
    "latest_attempt": _apply_latest_attempt,
    "query_spans": _apply_query_spans,
}
_READS = frozenset(
    {"empty", "get_rollout", "query", "wait", "query_attempts", "latest_attempt", "query_spans"}
)


# -- the resources model ---------------------------------------------------------------------------


class _Resources(NamedTuple):
    latest: str | None
    added: frozenset[str]


def _resources_apply(state: _Resources, op: Operation) -> tuple[_Resources, _Reason | None]:
    """What one resources operation does: a snapshot added becomes the latest; reads must agree."""
    value = op.value
    if op.op == "add_resources":
        rid = str((value or {}).get("resources_id"))
        return _Resources(rid, state.added | {rid}), None
    if op.op == "get_latest_resources":
        seen = None if value is None else value.get("resources_id")
        if seen != state.latest:
            return state, _Reason(
                "T6 resources", f"get_latest_resources returned {seen}; the latest snapshot is {state.latest}"
            )
        return state, None
    wanted = str(op.args.get("resources_id"))
    if value is None and wanted in state.added:
        return state, _Reason(
            "T6 resources", f"get_resources_by_id({wanted}) returned None after it was added"
        )
    if value is not None and wanted not in state.added:
        return state, _Reason("T6 resources", f"get_resources_by_id({wanted}) found it before it was added")
    return state, None


def _resources_step(states: frozenset[Any], kop: _KeyOp) -> tuple[frozenset[Any], list[_Reason]]:
    after: list[_Resources] = []
    reasons: list[_Reason] = []
    op = kop.op
    for state in states:
        if op.outcome == "fail":
            after.append(state)  # a refused call changes nothing
            continue
        new, reason = _resources_apply(state, op)
        if op.outcome != "ok":
            after += [state, new]
        elif reason is None:
            after.append(new)
        else:
            reasons.append(reason)
    return frozenset(after), _pick(reasons)


# -- the search ------------------------------------------------------------------------------------


@dataclass
class _KeyOp:
    op: Operation
    kind: str
    invoke: int
    complete: float  # inf when unknown


@dataclass
class _Search:
    ok: bool
    inconclusive: bool = False
    order: tuple[int, ...] = ()
    blocked: list[tuple[int, _Reason]] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)


def _linearize(
    kops: Sequence[_KeyOp],
    initial: frozenset[Any],
    step: Callable[[frozenset[Any], _KeyOp], tuple[frozenset[Any], list[_Reason]]],
    reads: Callable[[_KeyOp], bool],
) -> _Search:
    """Wing-Gong search for an order of ``kops`` that respects real time and that ``step`` accepts.

    A configuration is (the set of ops linearized so far, the set of possible model states); it is
    memoised, so each is explored once. A read that leaves the states as they are is linearized at once
    (it can only help). Ops with an unknown completion may be left out. Returns the deepest order found
    and, when none exists, why each op that could come next cannot.
    """
    count = len(kops)
    finite = 0
    for index, kop in enumerate(kops):
        if kop.complete != float("inf"):
            finite |= 1 << index
    seen: set[tuple[int, frozenset[Any]]] = set()
    stack: list[tuple[int, frozenset[Any], tuple[int, ...]]] = [(0, initial, ())]
    deepest: tuple[int, frozenset[Any], tuple[int, ...]] = (0, initial, ())
    # Per op that could not come next somewhere: the reason seen in the order closest to invocation order
    # (fewest ops invoked after it already linearized, then the longest): how a person reads a timeline.
    refused: dict[int, tuple[tuple[int, int], _Reason]] = {}
    while stack:
        mask, states, order = stack.pop()
        while True:
            if mask & finite == finite:
                return _Search(ok=True, order=order)
            if len(order) > len(deepest[2]):
                deepest = (mask, states, order)
            candidates = _candidates(kops, mask, count)
            for index in candidates:
                if reads(kops[index]):
                    after, _ = step(states, kops[index])
                    if after == states:
                        mask |= 1 << index
                        order = (*order, index)
                        break
            else:
                break
        for index in candidates:
            after, reasons = step(states, kops[index])
            if not after:
                if reasons:
                    late = sum(1 for i in order if kops[i].invoke > kops[index].invoke)
                    rank = (late, -len(order))
                    if index not in refused or rank < refused[index][0]:
                        refused[index] = (rank, reasons[0])
                continue
            key = (mask | 1 << index, after)
            if key in seen:
                continue
            seen.add(key)
            if len(seen) > _SEARCH_LIMIT:
                return _Search(ok=False, inconclusive=True)
            stack.append((key[0], after, (*order, index)))
    mask, states, order = deepest
    blocked = []
    for index in _candidates(kops, mask, count):
        after, reasons = step(states, kops[index])
        if not after and reasons:
            blocked.append((index, refused.get(index, ((0, 0), reasons[0]))[1]))
    pending = [i for i in range(count) if not mask >> i & 1]
    blocked.sort(key=lambda item: (kops[item[0]].complete, kops[item[0]].invoke))
    return _Search(ok=False, order=order, blocked=blocked, pending=pending)


def _candidates(kops: Sequence[_KeyOp], mask: int, count: int) -> list[int]:
    """Ops not yet linearized that were invoked before every unlinearized op had completed."""
    first_return = min((kops[i].complete for i in range(count) if not mask >> i & 1), default=float("inf"))
    return [i for i in range(count) if not mask >> i & 1 and kops[i].invoke <= first_return]


_PRIORITY = ("T3", "T4", "T2", "T6", "T7", "T1", "T5")


def _pick(reasons: Iterable[_Reason]) -> list[_Reason]:
    unique = list(dict.fromkeys(reasons))
    return sorted(unique, key=lambda r: _PRIORITY.index(r.rule.split()[0]))


def _rollout_step(
    ctx: _KeyContext,
) -> Callable[[frozenset[Any], _KeyOp], tuple[frozenset[Any], list[_Reason]]]:
    def step(states: frozenset[Any], kop: _KeyOp) -> tuple[frozenset[Any], list[_Reason]]:
        apply = _ROLLOUT_STEPS[kop.kind]
        after: list[_Rollout] = []
        reasons: list[_Reason] = []
        op = kop.op
        for state in states:
            applied = apply(state, ctx, op)
            if op.outcome == "ok":
                if applied.refused:
                    reasons.append(applied.reason or _Reason("T1 transition", f"{op.op} must be refused"))
                elif applied.reason is not None:
                    reasons.append(applied.reason)
                else:
                    after.append(applied.state)
            elif op.outcome == "fail":
                if applied.refused:
                    after.append(state)
                else:
                    reasons.append(_refused_reason(op, ctx, state))
            else:  # info or pending: it happened or it did not
                after.append(state)
                if not applied.refused:
                    after.append(applied.state)
        return _closure(after, ctx.config), _pick(reasons)

    return step


def _refused_reason(op: Operation, ctx: _KeyContext, state: _Rollout) -> _Reason:
    rule = {"add_span": "T7 spans", "wait": "T4 wait"}.get(op.op, "T1 transition")
    if op.op in (
        "query_rollouts",
        "get_rollout_by_id",
        "query_attempts",
        "get_latest_attempt",
        "query_spans",
    ):
        rule = "T5 read-consistency"
    return _Reason(
        rule,
        f"{op.op} on rollout {ctx.rollout_id} was refused ({op.error}: {op.message}) although it is allowed "
        f"while the rollout is {_describe(state)}",
    )


# -- projecting operations onto keys ------------------------------------------------------------


_RESULT_DEPENDENT = frozenset(
    {"enqueue_rollout", "dequeue_rollout", "add_span", "add_resources", "start_attempt"}
)
_SINGLE_KEY: Mapping[str, str] = {
    "update_attempt": "update_attempt",
    "add_span": "add_span",
    "update_rollout": "update_rollout",
    "get_rollout_by_id": "get_rollout",
    "query_attempts": "query_attempts",
    "get_latest_attempt": "latest_attempt",
    "query_spans": "query_spans",
}
_RESOURCE_OPS = frozenset({"add_resources", "get_latest_resources", "get_resources_by_id"})
_KNOWN_OPS = frozenset(
    {
        "enqueue_rollout",
        "dequeue_rollout",
        "query_rollouts",
        "wait_for_rollouts",
        *_SINGLE_KEY,
        *_RESOURCE_OPS,
    }
)


def _complete(op: Operation) -> float:
    return float("inf") if op.complete_ns is None else float(op.complete_ns)


class _Projection:
    """The history split into keys: each rollout's operations, the resources' operations, and notes."""

    def __init__(self, ops: Sequence[Operation]) -> None:
        self.contexts: dict[str, _KeyContext] = {}
        self.created: dict[str, Operation] = {}
        self.keyed: dict[str, list[_KeyOp]] = {}
        self.resources: list[_KeyOp] = []
        self.notes: list[str] = []
        self.violations: list[Violation] = []
        unknown = sorted({op.op for op in ops} - _KNOWN_OPS)
        if unknown:
            raise ValueError(f"the history has operations the checker does not know: {unknown}")
        for op in ops:
            if op.op == "enqueue_rollout" and op.outcome == "ok" and isinstance(op.value, Mapping):
                rid = str(op.value.get("rollout_id"))
                config = op.args.get("config")
                self.contexts[rid] = _KeyContext(
                    rid, _Config.of(config), dict(config or {}), op.args.get("input")
                )
                self.created[rid] = op
        self._global_cut = min(
            (
                op.invoke_ns
                for op in ops
                if not op.definite and op.op in ("dequeue_rollout", "enqueue_rollout")
            ),
            default=None,
        )
        cuts: dict[str, int] = {}
        for op in ops:
            if not op.definite and op.op in _RESULT_DEPENDENT:
                key = _RESOURCES_KEY if op.op == "add_resources" else str(op.args.get("rollout_id"))
                cuts[key] = min(cuts.get(key, op.invoke_ns), op.invoke_ns)
        if self._global_cut is not None:
            self.notes.append(
                "an enqueue or dequeue with an unknown outcome: only operations that completed before it "
                "was invoked are checked"
            )
        for key in sorted(cuts):
            self.notes.append(f"{key}: an operation with an unknown result; checked up to it only")
        for op in ops:
            self._project(op, cuts)

    def _keep(self, op: Operation, key: str, cuts: Mapping[str, int]) -> bool:
        """Whether ``op`` completed before any unknown-outcome operation that may have touched ``key``."""
        limits = [cut for cut in (cuts.get(key), self._global_cut) if cut is not None]
        return not limits or _complete(op) < min(limits)

    def _add(self, key: str, op: Operation, kind: str, cuts: Mapping[str, int]) -> None:
        if key not in self.contexts or not self._keep(op, key, cuts):
            return
        self.keyed.setdefault(key, []).append(_KeyOp(op, kind, op.invoke_ns, _complete(op)))

    def _present(self, op: Operation) -> list[str]:
        """Rollouts whose enqueue was invoked before ``op`` completed (others are certainly absent)."""
        end = _complete(op)
        return [rid for rid, made in self.created.items() if made.invoke_ns <= end]

    def _project(self, op: Operation, cuts: Mapping[str, int]) -> None:
        name = op.op
        if name in _RESOURCE_OPS:
            if self._keep(op, _RESOURCES_KEY, cuts):
                self.resources.append(_KeyOp(op, name, op.invoke_ns, _complete(op)))
            return
        if name == "enqueue_rollout":
            if op.outcome == "ok":
                self._add(str(op.value.get("rollout_id")), op, "enqueue", cuts)
            return
        if name == "dequeue_rollout":
            if op.outcome != "ok":
                return
            if op.value is None:
                for rid in self._present(op):
                    self._add(rid, op, "empty", cuts)
                return
            rid = str(op.value.get("rollout_id"))
            if rid not in self.contexts and self._global_cut is None:
                self.violations.append(
                    Violation(
                        "T2 double-claim",
                        f"dequeue_rollout handed out {rid}, which nobody enqueued",
                        (rid,),
                        (op.ref,),
                    )
                )
            self._add(rid, op, "claim", cuts)
            return
        if name == "query_rollouts":
            if op.outcome == "ok":
                listed = {item.get("rollout_id") for item in op.value or () if isinstance(item, Mapping)}
                for rid in dict.fromkeys([*self._present(op), *(str(r) for r in listed)]):
                    self._add(rid, op, "query", cuts)
            return
        if name == "wait_for_rollouts":
            for rid in dict.fromkeys(str(r) for r in op.args.get("rollout_ids") or ()):
                self._add(rid, op, "wait", cuts)
            return
        rid = str(op.args.get("rollout_id"))
        if rid not in self.contexts and op.outcome == "ok" and self._global_cut is None:
            reads_none = name in ("get_rollout_by_id", "get_latest_attempt") and op.value is None
            if not (reads_none or (name in ("query_attempts", "query_spans") and not op.value)):
                self.violations.append(
                    Violation("T1 unknown-id", f"{name} accepted unknown rollout id {rid}", (rid,), (op.ref,))
                )
            return
        self._add(rid, op, _SINGLE_KEY[name], cuts)


# -- direct rules ----------------------------------------------------------------------------------


def _direct_rules(ops: Sequence[Operation], projection: _Projection) -> list[Violation]:
    found: list[Violation] = []
    handed: dict[str, Operation] = {}
    claims: dict[str, Operation] = {}  # attempt id -> the dequeue that created it
    for op in ops:
        if op.outcome != "ok":
            continue
        if op.op == "dequeue_rollout" and isinstance(op.value, Mapping):
            attempt = op.value.get("attempt") or {}
            aid = str(attempt.get("attempt_id"))
            rid = str(op.value.get("rollout_id"))
            if aid in handed:
                first = handed[aid]
                found.append(
                    Violation(
                        "T2 double-claim",
                        f"attempt {aid} (rollout {rid}) was handed out twice",
                        (rid, aid),
                        (first.ref, op.ref),
                    )
                )
            handed[aid] = op
            claims[aid] = op
        found.extend(_end_time_rule(op))
        if op.op == "wait_for_rollouts":
            found.extend(_wait_rules(op))
    found.extend(_expiry_rule(ops, claims, projection))
    return found


def _objects(op: Operation) -> list[tuple[str, Mapping[str, Any]]]:
    """The rollouts ("rollout") and attempts ("attempt") in an ok result."""
    value = op.value
    items = value if isinstance(value, list) else [value]
    found: list[tuple[str, Mapping[str, Any]]] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        if "attempt_id" in item and "sequence_id" in item and "span_id" not in item:
            found.append(("attempt", item))
        elif "rollout_id" in item and "status" in item and "span_id" not in item:
            found.append(("rollout", item))
            if isinstance(item.get("attempt"), Mapping):
                found.append(("attempt", item["attempt"]))
    return found


def _end_time_rule(op: Operation) -> list[Violation]:
    found = []
    for kind, item in _objects(op):
        status = item.get("status")
        terminal = TERMINAL_ROLLOUT_STATUSES if kind == "rollout" else TERMINAL_ATTEMPT_STATUSES
        if status not in (ROLLOUT_STATUSES if kind == "rollout" else ATTEMPT_STATUSES):
            found.append(
                Violation(
                    "T1 transition", f"{op.op} returned a {kind} in unknown status {status!r}", (), (op.ref,)
                )
            )
            continue
        stamped = item.get("end_time") is not None
        if stamped != (status in terminal):
            ident = item.get("attempt_id" if kind == "attempt" else "rollout_id")
            state = "without an end_time" if not stamped else "with an end_time"
            found.append(
                Violation(
                    "T1 end-time",
                    f"{op.op} returned {kind} {ident} {status!r} {state}",
                    (str(ident),),
                    (op.ref,),
                )
            )
    return found


def _wait_rules(op: Operation) -> list[Violation]:
    asked = [str(r) for r in op.args.get("rollout_ids") or ()]
    got = [item for item in op.value or () if isinstance(item, Mapping)]
    found = []
    for item in got:
        if item.get("status") not in TERMINAL_ROLLOUT_STATUSES:
            rid = str(item.get("rollout_id"))
            found.append(
                Violation(
                    "T4 wait",
                    f"wait_for_rollouts returned {rid} in status {item.get('status')!r}",
                    (rid,),
                    (op.ref,),
                )
            )
    ids = [str(item.get("rollout_id")) for item in got]
    position = 0
    for rid in ids:
        try:
            position = asked.index(rid, position) + 1
        except ValueError:
            found.append(
                Violation(
                    "T4 wait",
                    f"wait_for_rollouts returned {ids}, not a subsequence of the ids asked {asked}",
                    tuple(ids),
                    (op.ref,),
                )
            )
            break
    timeout = op.args.get("timeout")
    if timeout is not None and op.complete_ns is not None and len(set(ids)) < len(set(asked)):
        elapsed = op.complete_ns - op.invoke_ns
        if elapsed + _SLACK_NS < float(timeout) * 1e9:
            missing = [rid for rid in asked if rid not in ids]
            found.append(
                Violation(
                    "T4 wait",
                    f"wait_for_rollouts(timeout={timeout}) returned after {elapsed / 1e6:.1f} ms "
                    f"with {missing} still not terminal",
                    tuple(missing),
                    (op.ref,),
                )
            )
    return found


def _expiry_rule(
    ops: Sequence[Operation], claims: Mapping[str, Operation], projection: _Projection
) -> list[Violation]:
    """An attempt seen 'timeout' or 'unresponsive' by the store's own verdict only after its bound."""
    asked: dict[tuple[str, str], int] = {}  # (attempt id, status) -> earliest invocation asking for it
    for op in ops:
        if op.op == "update_attempt" and op.args.get("status") in ("timeout", "unresponsive"):
            key = (str(op.args.get("attempt_id")), str(op.args["status"]))
            asked[key] = min(asked.get(key, op.invoke_ns), op.invoke_ns)
    found = []
    flagged: set[str] = set()
    for op in ops:
        if op.outcome != "ok" or op.complete_ns is None:
            continue
        for kind, item in _objects(op):
            if kind != "attempt" or item.get("status") not in ("timeout", "unresponsive"):
                continue
            aid = str(item.get("attempt_id"))
            status = str(item["status"])
            claim = claims.get(aid)
            ctx = projection.contexts.get(str(item.get("rollout_id")))
            if claim is None or ctx is None or aid in flagged:
                continue
            if asked.get((aid, status), op.complete_ns + 1) <= op.complete_ns:
                continue  # a client reported it so
            bound = ctx.config.timeout_seconds if status == "timeout" else ctx.config.unresponsive_seconds
            if bound is None:
                continue  # the state machine says whether it may happen at all
            elapsed = op.complete_ns - claim.invoke_ns
            if elapsed + _SLACK_NS < bound * 1e9:
                flagged.add(aid)
                found.append(
                    Violation(
                        "T3 early-expiry",
                        f"attempt {aid} was {status!r} {elapsed / 1e6:.1f} ms after it was claimed; "
                        f"its bound is {bound * 1e3:.0f} ms",
                        (ctx.rollout_id, aid),
                        (claim.ref, op.ref),
                    )
                )
    return found


# -- the checker -----------------------------------------------------------------------------------


def _search_violation(key: str, kops: Sequence[_KeyOp], search: _Search) -> Violation:
    if search.blocked:
        index, reason = min(search.blocked, key=lambda item: _PRIORITY.index(item[1].rule.split()[0]))
        blocking = kops[index].op
    else:
        reason = _Reason("T5 read-consistency", "no order of its operations is allowed")
        blocking = kops[search.pending[0]].op if search.pending else kops[-1].op
    done = [kops[i].op.ref for i in search.order]
    involved = tuple(dict.fromkeys([*done[-3:], blocking.ref]))
    context = (
        f" (after {', '.join(done)} in that order, nothing else fits)"
        if done
        else " (its first operation cannot fit)"
    )
    ids = tuple(dict.fromkeys([key, *_attempt_ids(blocking)]))
    return Violation(reason.rule, reason.text + context, ids, involved)


def _attempt_ids(op: Operation) -> list[str]:
    found = [str(op.args["attempt_id"])] if "attempt_id" in op.args else []
    if isinstance(op.value, Mapping) and isinstance(op.value.get("attempt"), Mapping):
        found.append(str(op.value["attempt"].get("attempt_id")))
    return found


def _resources_violations(projection: _Projection) -> tuple[list[Violation], list[str]]:
    kops = sorted(projection.resources, key=lambda k: k.invoke)
    if not kops:
        return [], []
    found: list[Violation] = []
    contents: dict[str, str] = {}
    added_by: dict[str, str] = {}
    for kop in kops:
        op = kop.op
        if op.op == "add_resources" and op.outcome == "ok":
            value = op.value or {}
            rid = str(value.get("resources_id"))
            if rid in added_by:
                found.append(
                    Violation(
                        "T6 resources",
                        f"add_resources returned {rid}, the version {added_by[rid]} added: every snapshot "
                        "published is a new version, even with content published before",
                        (rid,),
                        (added_by[rid], op.ref),
                    )
                )
            added_by.setdefault(rid, op.ref)
            contents[rid] = _canonical(op.args.get("resources"))
            if _canonical(value.get("resources")) != contents[rid]:
                found.append(
                    Violation(
                        "T6 resources", f"add_resources returned {rid} with other content", (rid,), (op.ref,)
                    )
                )
    for kop in kops:
        op = kop.op
        if op.outcome == "ok" and op.op != "add_resources" and isinstance(op.value, Mapping):
            rid = str(op.value.get("resources_id"))
            if rid in contents and _canonical(op.value.get("resources")) != contents[rid]:
                found.append(
                    Violation(
                        "T6 resources",
                        f"{op.op} read {rid} as {_canonical(op.value.get('resources'))}; it was written as "
                        f"{contents[rid]}",
                        (rid,),
                        (op.ref,),
                    )
                )
            elif rid not in contents and not projection.notes:
                found.append(
                    Violation(
                        "T6 resources", f"{op.op} returned {rid}, which nobody added", (rid,), (op.ref,)
                    )
                )
    search = _linearize(
        kops,
        frozenset({_Resources(None, frozenset())}),
        _resources_step,
        lambda k: k.op.op != "add_resources",
    )
    if search.inconclusive:
        return found, ["resources: too many interleavings to check exhaustively"]
    if not search.ok:
        found.append(_search_violation(_RESOURCES_KEY, kops, search))
    return found, []


def analyse_history(history: Iterable[Event]) -> HistoryAnalysis:
    """Check a history against T1-T7 (see the module docstring for how); also say what went unchecked."""
    ops = operations(history)
    projection = _Projection(ops)
    violations = list(projection.violations)
    violations.extend(_direct_rules(ops, projection))
    notes = list(projection.notes)
    flagged = {(v.rule, i) for v in violations for i in v.ids}
    for rid, kops in projection.keyed.items():
        kops.sort(key=lambda k: k.invoke)
        ctx = projection.contexts[rid]
        search = _linearize(kops, frozenset({_NOTHING}), _rollout_step(ctx), lambda k: k.kind in _READS)
        if search.inconclusive:
            notes.append(f"{rid}: too many interleavings to check exhaustively; not checked")
        elif not search.ok:
            violation = _search_violation(rid, kops, search)
            if (violation.rule, rid) not in flagged:
                violations.append(violation)
    found, more = _resources_violations(projection)
    violations.extend(found)
    notes.extend(more)
    return HistoryAnalysis(violations=violations, notes=notes, operations=ops)


def check_history(history: Iterable[Event]) -> list[Violation]:
    """The rules of T1-T7 that ``history`` breaks (empty when a correct store could have produced it)."""
    return analyse_history(history).violations


# -- the timeline ----------------------------------------------------------------------------------


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_short(item) for item in value) + "]"
    if not isinstance(value, Mapping):
        return json.dumps(value, default=str) if value is not None else "None"
    if "span_id" in value:
        return f"span #{value.get('sequence_id')} of {value.get('attempt_id')}"
    if "resources_id" in value and "resources" in value:
        return f"{value['resources_id']} {_canonical(value['resources'])}"
    if "attempt_id" in value and "sequence_id" in value:
        return f"{value['attempt_id']} #{value['sequence_id']} {value.get('status')}"
    if "rollout_id" in value:
        text = f"{value['rollout_id']} {value.get('status')}"
        attempt = value.get("attempt")
        if isinstance(attempt, Mapping):
            text += f" / {attempt.get('attempt_id')} #{attempt.get('sequence_id')} {attempt.get('status')}"
        if value.get("metadata"):
            text += f" meta={_canonical(value['metadata'])}"
        return text
    return _canonical(value)


_SHOWN_ARGS = ("rollout_id", "attempt_id", "status", "rollout_ids", "timeout", "metadata", "resources_id")


def _call(op: Operation) -> str:
    args = op.args
    parts = []
    for name in _SHOWN_ARGS:
        if name in args:
            value = args[name]
            if name in ("rollout_id", "attempt_id", "resources_id"):
                parts.append(str(value))
            elif name == "rollout_ids":
                parts.append("[" + ", ".join(map(str, value)) + "]")
            else:
                parts.append(f"{name}={_canonical(value)}")
    if op.op == "enqueue_rollout" and args.get("config"):
        config = _Config.of(args["config"])
        parts.append(f"max_attempts={config.max_attempts} retry={sorted(config.retry_condition)}")
        for bound in ("timeout_seconds", "unresponsive_seconds"):
            if args["config"].get(bound) is not None:
                parts.append(f"{bound}={args['config'][bound]}")
    if "last_heartbeat_time" in args:
        parts.append("heartbeat")
    if op.op == "add_resources":
        parts.append(_canonical(args.get("resources")))
    return f"{op.op}({', '.join(parts)})"


def format_history(
    history: Iterable[Event] | Iterable[Operation], *, highlight: Iterable[str] = (), title: str = "history"
) -> str:
    """A readable timeline: one line per operation, times in ms from the first invocation.

    ``highlight`` marks operations (``client#index``) with ``!``, e.g. those a violation names.
    """
    items = list(history)
    events = [item for item in items if isinstance(item, Event)]
    ops = operations(events) + [item for item in items if isinstance(item, Operation)]
    ops.sort(key=lambda op: (op.invoke_ns, op.client, op.index))
    marked = set(highlight)
    if not ops:
        return f"{title}: no operations"
    start = ops[0].invoke_ns
    width = max(len(op.ref) for op in ops)
    clients = len({op.client for op in ops})
    lines = [f"{title}: {len(ops)} operation(s), {clients} client(s); ms from the first call"]
    for op in ops:
        begin = (op.invoke_ns - start) / 1e6
        end = "   ?    " if op.complete_ns is None else f"{(op.complete_ns - start) / 1e6:8.3f}"
        if op.outcome == "ok":
            result = _short(op.value)
        elif op.outcome == "pending":
            result = "(no answer)"
        else:
            result = f"{op.outcome.upper()} {op.error}: {op.message}"
        mark = "!" if op.ref in marked else " "
        lines.append(f"{mark} {begin:8.3f} {end}  {op.ref:<{width}}  {_call(op)} -> {result}")
    return "\n".join(lines)
