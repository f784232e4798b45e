"""``InMemoryLightningStore``: the reference store, kept in one process's memory.

Every operation is O(1) or O(log n) amortised: rollouts, attempts and resources are indexed by id, the
claim queue is a deque invalidated lazily (each rollout remembers the serial of its one live entry; one
that leaves the queue by another route forgets it), and attempt deadlines sit in a ``DeadlineSchedule``
(a FIFO for the ones that arrive in order, a heap for the rest) checked at the start of every operation.
Internally a rollout or attempt is a dict of its atomic fields plus slots for its containers, turned into
fresh pydantic models (containers deep-copied) on the way out: cheap to copy,
and the atom-only dicts are never tracked by the garbage collector, so full collections stay cheap when
hundreds of thousands of rollouts are kept.

Allocation is what large batches pay for: CPython runs a full collection whenever the tracked objects that
survived young collections grow by a quarter of those that survived the last full one, so over a burst each
tracked survivor costs about five traversals, and a 100k-id wait spends most of its time collecting rather
than copying. The collector's passes are also paced by allocations: every container made (tracked or not)
counts toward the next young collection, and with the default thresholds at most every 121st young
collection (about 85,000 containers) is a full one. Hence a stored rollout with one attempt is two tracked
objects (its record and its attempt's), and empty metadata is kept as ``None`` rather than a dict (a 20k
batch then runs two full passes, not three); a returned ``Rollout`` is two (the model and its ``__dict__``:
the rollout's ``RolloutConfig`` is frozen, so every reader shares the store's one instance, where a copy
would be three more); the attempt-deadline schedule holds atoms only (the attempt's id, not its record), which
the collector untracks at its first pass; and a ``wait_for_rollouts`` call registers under each id the
waiter itself, not a set per id.

One ``threading.Lock`` guards all state and is only ever held inside synchronous sections, never across
an ``await``, so the store is safe to share between threads that each run an event loop.
``wait_for_rollouts`` registers a future of the *calling* loop; terminal transitions resolve it through
``call_soon_threadsafe``, and a timer wakes it at the next attempt deadline, so a dead runner is noticed
without any other traffic.

Explicit status changes. ``update_rollout`` may finish (succeeded, failed, cancelled) or requeue
(queuing, requeuing) any non-terminal rollout, and move a preparing one to running; claiming (-> preparing)
only happens through ``dequeue_rollout`` or ``start_attempt``, which create the attempt it needs.
Finishing or requeuing ends the active attempt (succeeded -> succeeded, otherwise failed); an explicit
requeue is not bounded by ``max_attempts``. ``start_attempt`` on a claimed rollout supersedes (fails) its
active attempt. Terminal states are final; asking for the current status again is a no-op.

Late writes. An attempt the store ended itself (timed out, unresponsive, superseded by a newer attempt,
or ended because its rollout was finished, cancelled or requeued) may still hear from its runner. Such
writes never change the rollout: spans are kept, ``worker_id``/``metadata``/heartbeats are recorded, and
a status report is dropped (the returned ``Attempt`` shows the store's verdict) rather than raising, so a
runner presumed dead does not crash when it reports in. Status changes the caller itself made final
(e.g. ``succeeded`` then ``failed``) raise ``ValueError`` naming both states.

Liveness is measured on the store's ``clock`` (injectable for tests): ``timeout_seconds`` from the
attempt's start, ``unresponsive_seconds`` from its last span, heartbeat or start, whichever is latest.
``RolloutConfig`` gives every rollout an unresponsive window by default, so nearly every active attempt has
a deadline: the schedule drops stale entries at its head as attempts end, and is rebuilt without the
others each time it doubles, so it stays proportional to the attempts in flight.
``close()`` is a no-op: the store holds no thread, file or socket, and stays usable.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel

from agentlightning.store.base import UNSET, LightningStore, Unset
from agentlightning.store.collection import collection_paused
from agentlightning.store.deadlines import DeadlineSchedule
from agentlightning.store.values import DEFAULT_LIMITS, ValueLimits, check_json, check_span, check_text
from agentlightning.types import (
    ACTIVE_ATTEMPT_STATUSES,
    ATTEMPT_STATUSES,
    ROLLOUT_STATUSES,
    TERMINAL_ATTEMPT_STATUSES,
    TERMINAL_ROLLOUT_STATUSES,
    Attempt,
    AttemptedRollout,
    AttemptStatus,
    NamedResources,
    ResourcesUpdate,
    Rollout,
    RolloutConfig,
    RolloutMode,
    RolloutStatus,
    Span,
    TaskInput,
)

__all__ = ["InMemoryLightningStore"]

_QUEUED: frozenset[str] = frozenset({"queuing", "requeuing"})
_CLAIMED: frozenset[str] = frozenset({"preparing", "running"})
_MODES: frozenset[str] = frozenset({"train", "val", "test"})

# Status changes ``update_rollout`` may ask for. Claiming (-> preparing) goes through ``dequeue_rollout``
# or ``start_attempt``, which create the attempt that a preparing rollout needs.
_ROLLOUT_UPDATES: dict[str, frozenset[str]] = {
    "queuing": frozenset({"requeuing", "succeeded", "failed", "cancelled"}),
    "requeuing": frozenset({"queuing", "succeeded", "failed", "cancelled"}),
    "preparing": frozenset({"running", "queuing", "requeuing", "succeeded", "failed", "cancelled"}),
    "running": frozenset({"queuing", "requeuing", "succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
_ATTEMPT_UPDATES: dict[str, frozenset[str]] = {
    "preparing": frozenset({"running", "succeeded", "failed", "timeout", "unresponsive"}),
    "running": frozenset({"succeeded", "failed", "timeout", "unresponsive"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "timeout": frozenset(),
    "unresponsive": frozenset(),
}
# What a rollout-level terminal status does to its active attempt.
_ATTEMPT_END_FOR_ROLLOUT: dict[str, AttemptStatus] = {
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "failed",
    "queuing": "failed",
    "requeuing": "failed",
}
# Floor on a wait's re-check delay: keeps clock granularity from turning a wait into a spin.
_MIN_DELAY = 0.001

_M = TypeVar("_M", bound=BaseModel)
_ATOMS: frozenset[type] = frozenset({str, int, float, bool, type(None), bytes, complex})


# BaseModel's own slots, set directly: the cheapest way to make a model from already-valid values.
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_new = object.__new__


def _fields(cls: type[BaseModel]) -> set[str]:
    return set(cls.model_fields)


# One fields-set per model class, shared by every model ``_build`` makes: it always names every field,
# and pydantic's only writes to it (assigning a field, ``model_copy(update=...)`` on its own copy) add a
# name that is already there. A set per model would be one more tracked object, and about 700 bytes, for
# each of the hundreds of thousands a bulk read returns.
_ROLLOUT_FIELDS = _fields(Rollout)
_ATTEMPTED_FIELDS = _fields(AttemptedRollout)
_ATTEMPT_FIELDS = _fields(Attempt)
_CONFIG_FIELDS = _fields(RolloutConfig)
_SPAN_FIELDS = _fields(Span)
_RESOURCES_FIELDS = _fields(ResourcesUpdate)


def _build(cls: type[_M], values: dict[str, Any], fields: set[str]) -> _M:
    """A model from already-valid ``values`` (every field present) without re-validation: what
    ``model_construct`` does, minus the default filling that we never need; ``fields`` is the class's
    shared fields-set (above)."""
    model = _new(cls)
    _set_dict(model, values)
    _set_fields_set(model, fields)
    _set_extra(model, None)
    _set_private(model, None)
    return model


def _clone(value: Any) -> Any:
    """A deep copy that is cheap for the JSON-like data rollouts carry (atoms are shared)."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is dict:
        for item in value.values():
            if type(item) not in _ATOMS:
                return {key: _clone(item) for key, item in value.items()}
        return value.copy()
    if kind is list:
        return [_clone(item) for item in value]
    if kind is tuple:
        return tuple(_clone(item) for item in value)
    return copy.deepcopy(value)


def _own_config(config: RolloutConfig) -> RolloutConfig:
    """The config the store keeps and hands to every reader of the rollout: frozen, so shared and never
    copied on the way out. The caller's own when it is a validated ``RolloutConfig`` (its
    ``retry_condition`` a tuple: nothing in it can change) marked as every returned model is (every field
    set); else such a copy, validated again when it came from a subclass or ``model_construct``."""
    if type(config) is not RolloutConfig or type(config.retry_condition) is not tuple:
        config = RolloutConfig.model_validate({name: getattr(config, name) for name in _CONFIG_FIELDS})
    if config.model_fields_set == _CONFIG_FIELDS:
        return config
    return _build(RolloutConfig, config.__dict__.copy(), _CONFIG_FIELDS)


def _rollout_values_out(record: _RolloutRecord) -> dict[str, Any]:
    # The hot path of every read: the common cases (atomic input, empty metadata) skip ``_clone``.
    values = record.data.copy()
    data = record.input
    values["input"] = data if type(data) in _ATOMS else _clone(data)
    metadata = record.metadata
    values["metadata"] = _clone(metadata) if metadata else {}
    values["config"] = record.config  # frozen: shared by every reader, never copied
    return values


def _rollout_out(record: _RolloutRecord) -> Rollout:
    return _build(Rollout, _rollout_values_out(record), _ROLLOUT_FIELDS)


def _rollouts_out(records: Collection[_RolloutRecord]) -> list[Rollout]:
    """``_rollout_out`` of each record, inlined: a bulk read (a 100k-id wait) pays per rollout only for
    the copies and the model, not for three calls, and not for collections while the result is built."""
    atoms, clone, new, fields = _ATOMS, _clone, _new, _ROLLOUT_FIELDS
    out: list[Rollout] = []
    append = out.append
    with collection_paused(len(records)):
        for record in records:
            values = record.data.copy()
            data = record.input
            values["input"] = data if type(data) in atoms else clone(data)
            metadata = record.metadata
            values["metadata"] = clone(metadata) if metadata else {}
            values["config"] = record.config
            model = new(Rollout)
            _set_dict(model, values)
            _set_fields_set(model, fields)
            _set_extra(model, None)
            _set_private(model, None)
            append(model)
    return out


def _attempt_out(arec: _AttemptRecord) -> Attempt:
    values = arec.data.copy()
    metadata = arec.metadata
    values["metadata"] = _clone(metadata) if metadata else {}
    return _build(Attempt, values, _ATTEMPT_FIELDS)


def _span_out(values: dict[str, Any]) -> Span:
    values = values.copy()
    attributes = values["attributes"]
    values["attributes"] = _clone(attributes) if attributes else {}
    return _build(Span, values, _SPAN_FIELDS)


def _resources_out(update: ResourcesUpdate) -> ResourcesUpdate:
    values = update.__dict__.copy()
    values["resources"] = _clone(values["resources"])
    return _build(ResourcesUpdate, values, _RESOURCES_FIELDS)


# -- argument checks: each names the parameter and the value it got ---------------------------------


def _check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if not value:
        raise ValueError(f"{name} must be a non-empty str, got {value!r}")
    return check_text(name, value)


def _check_optional_str(name: str, value: object) -> str | None:
    if value is None:
        return None
    return _check_str(name, value)


def _check_choice(name: str, value: object, allowed: frozenset[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {sorted(allowed)}, got {type(value).__name__} {value!r}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return value


def _check_mode(value: object) -> RolloutMode | None:
    if value is None:
        return None
    return _check_choice("mode", value, _MODES)  # type: ignore[return-value]


def _check_config(value: object) -> RolloutConfig | None:
    if value is None:
        return None
    if not isinstance(value, RolloutConfig):
        raise TypeError(f"config must be a RolloutConfig or None, got {type(value).__name__} {value!r}")
    return value


def _check_mapping(name: str, value: object) -> dict[Any, Any]:
    """A dict of ``value``; its keys and values are checked by the value rule (``check_json``)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict with str keys, got {type(value).__name__} {value!r}")
    return value if type(value) is dict else dict(value)


def _check_seconds(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(value).__name__} {value!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    return float(value)


def _check_time(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number (a timestamp), got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite timestamp, got {value!r}")
    return float(value)


def _check_str_list(name: str, value: object) -> list[str]:
    if type(value) is list and all(type(item) is str for item in value):
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, set, frozenset)):
        raise TypeError(f"{name} must be a list of str, got {type(value).__name__} {value!r}")
    items = list(value)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{name} must contain only str, got {type(item).__name__} {item!r}")
    return items


def _check_status_list(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    statuses = _check_str_list("status", value)
    wrong = [status for status in statuses if status not in ROLLOUT_STATUSES]
    if wrong:
        raise ValueError(f"status must name rollout statuses {sorted(ROLLOUT_STATUSES)}, got {wrong[0]!r}")
    return frozenset(statuses)


# -- internal records ----------------------------------------------------------------------------------


class _RolloutRecord:
    """A rollout: its atomic fields (``data``), its containers, attempts, creation rank and queue serial.

    ``data`` holds only atoms (containers are ``None`` placeholders there, kept in slots instead), so the
    garbage collector never tracks it: full collections stay cheap with many rollouts stored. For the same
    reason the attempts are the ``latest`` one plus a tuple of the ``earlier`` ones (shared and empty for
    a rollout with at most one attempt) rather than a list per rollout, and empty ``metadata`` (here and
    on ``_AttemptRecord``) may be ``None``: readers test it for truth, and writers persist ``{}``.
    """

    __slots__ = ("config", "data", "earlier", "input", "latest", "metadata", "order", "queue_serial")

    def __init__(
        self, data: dict[str, Any], input: Any, metadata: dict[str, Any] | None, config: RolloutConfig
    ) -> None:
        self.data = data
        self.input = input
        self.metadata = metadata
        self.config = config
        self.order = 0
        self.latest: _AttemptRecord | None = None
        self.earlier: tuple[_AttemptRecord, ...] = ()
        self.queue_serial = -1

    def attempts(self) -> tuple[_AttemptRecord, ...]:
        """Every attempt, oldest first."""
        latest = self.latest
        return () if latest is None else (*self.earlier, latest)


class _AttemptRecord:
    """An attempt's fields, its spans and its liveness bookkeeping.

    ``watch_token`` invalidates deadline-schedule entries; ``ended_by_store`` marks an attempt the store
    ended on its runner's behalf, whose later status reports are dropped instead of raising.
    """

    __slots__ = (
        "data",
        "ended_by_store",
        "last_activity",
        "metadata",
        "next_sequence",
        "owner",
        "spans",
        "watch_token",
    )

    def __init__(self, data: dict[str, Any], owner: _RolloutRecord) -> None:
        self.data = data  # atoms only, like _RolloutRecord.data
        self.metadata: dict[str, Any] | None = None  # None until set: one dict fewer per attempt
        self.owner = owner
        self.spans: list[dict[str, Any]] | None = None  # created with the first span
        self.next_sequence = 1
        self.last_activity: float = data["start_time"]
        self.watch_token = 0
        self.ended_by_store = False


class _Waiter:
    """One ``wait_for_rollouts`` call: the ids still pending and a future of the caller's loop."""

    __slots__ = ("future", "loop", "pending", "thread_id", "wake_at")

    def __init__(self, pending: set[str], loop: asyncio.AbstractEventLoop) -> None:
        self.pending = pending
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()  # replaced each round of the wait
        self.thread_id = threading.get_ident()
        self.wake_at = math.inf  # on the store's clock: when this round's timer fires at the latest


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class InMemoryLightningStore(LightningStore):
    """The reference ``LightningStore``: fast, thread-safe, and exact about the status machine.

    ``clock`` gives the time used for start/end stamps and liveness deadlines (``time.time`` by
    default; tests inject a fake one to drive timeouts without sleeping).
    """

    thread_safe: ClassVar[bool] = True
    """Safe to call from several threads, each with its own loop (``ThreadedLightningStore`` relies on it)."""

    def __init__(
        self, *, clock: Callable[[], float] = time.time, limits: ValueLimits = DEFAULT_LIMITS
    ) -> None:
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        if not isinstance(limits, ValueLimits):
            raise TypeError(f"limits must be a ValueLimits, got {type(limits).__name__} {limits!r}")
        self._clock = clock
        self.limits = limits
        self._lock = threading.Lock()
        self._salt = secrets.token_hex(4)
        self._counter = itertools.count(1)
        self._default_config = _own_config(RolloutConfig())
        self._rollouts: dict[str, _RolloutRecord] = {}
        self._by_status: dict[str, dict[str, _RolloutRecord]] = {status: {} for status in ROLLOUT_STATUSES}
        self._attempts: dict[str, _AttemptRecord] = {}
        # FIFO of rollouts; the n-th entry ever pushed has serial n, so a popped entry is live exactly
        # when its rollout's queue_serial still equals the pop count.
        self._queue: deque[_RolloutRecord] = deque()
        self._pushed = 0
        self._popped = 0
        # (deadline, push serial, attempt id, watch token): atoms only, so the collector untracks each
        # entry at its first pass instead of carrying one more object per attempt in flight.
        attempts = self._attempts  # not the store itself: a bound method would make a reference cycle
        self._deadlines = DeadlineSchedule(lambda entry: entry[3] == attempts[entry[2]].watch_token)
        # Rollout id -> its waiter, or a list of them when several waits share the id: most ids have
        # exactly one, and a bulk wait then registers without allocating anything per id.
        self._waiters: dict[str, _Waiter | list[_Waiter]] = {}
        self._all_waiters: set[_Waiter] = set()
        self._resources: dict[str, ResourcesUpdate] = {}
        self._latest_resources: ResourcesUpdate | None = None

    def __repr__(self) -> str:
        return f"<InMemoryLightningStore rollouts={len(self._rollouts)}>"

    # -- rollouts -------------------------------------------------------------------------------------

    async def start_rollout(
        self,
        input: TaskInput,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AttemptedRollout:
        record = self._new_rollout(input, mode, resources_id, config, metadata, "preparing")
        with self._lock:
            now = self._tick()
            self._add_rollout(record, now)
            attempt = self._new_attempt(record, now)
            return self._attempted_out(record, attempt)

    async def enqueue_rollout(
        self,
        input: TaskInput,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Rollout:
        record = self._new_rollout(input, mode, resources_id, config, metadata, "queuing")
        with self._lock:
            now = self._clock()
            if self._deadlines.due <= now:
                self._sweep(now)
            self._add_rollout(record, now)
            self._push_queue(record)
            return _rollout_out(record)

    async def dequeue_rollout(self) -> AttemptedRollout | None:
        with self._lock:
            now = self._clock()
            if self._deadlines.due <= now:
                self._sweep(now)
            queue = self._queue
            while queue:
                record = queue.popleft()
                serial = self._popped
                self._popped = serial + 1
                # Stale entries (cancelled, claimed by start_attempt, requeued again) are skipped here.
                if record.queue_serial == serial and record.data["status"] in _QUEUED:
                    # A queued rollout has no active attempt: nothing to supersede.
                    record.queue_serial = -1
                    self._set_rollout_status(record, "preparing", now)
                    attempt = self._new_attempt(record, now)
                    return self._attempted_out(record, attempt)
            return None

    async def start_attempt(self, rollout_id: str) -> AttemptedRollout:
        _check_str("rollout_id", rollout_id)
        with self._lock:
            now = self._tick()
            record = self._rollout_record(rollout_id)
            status = record.data["status"]
            if status in TERMINAL_ROLLOUT_STATUSES:
                raise ValueError(f"rollout {rollout_id}: cannot go from {status!r} to 'preparing'")
            attempt = self._claim(record, now)
            return self._attempted_out(record, attempt)

    async def update_rollout(
        self,
        rollout_id: str,
        input: TaskInput | Unset = UNSET,
        mode: RolloutMode | Unset | None = UNSET,
        resources_id: str | Unset | None = UNSET,
        status: RolloutStatus | Unset = UNSET,
        config: RolloutConfig | Unset = UNSET,
        metadata: dict[str, Any] | Unset = UNSET,
    ) -> Rollout:
        _check_str("rollout_id", rollout_id)
        changes: dict[str, Any] = {}
        containers: dict[str, Any] = {}
        if input is not UNSET:
            containers["input"] = check_json("input", input, self.limits)
        if mode is not UNSET:
            changes["mode"] = _check_mode(mode)
        if resources_id is not UNSET:
            changes["resources_id"] = _check_optional_str("resources_id", resources_id)
        if config is not UNSET:
            if not isinstance(config, RolloutConfig):
                raise TypeError(f"config must be a RolloutConfig, got {type(config).__name__} {config!r}")
            containers["config"] = _own_config(config)
        if metadata is not UNSET:
            containers["metadata"] = check_json("metadata", _check_mapping("metadata", metadata), self.limits)
        new_status = None if status is UNSET else _check_choice("status", status, ROLLOUT_STATUSES)
        with self._lock:
            now = self._tick()
            record = self._rollout_record(rollout_id)
            data = record.data
            old_status = data["status"]
            if new_status == old_status:
                new_status = None
            elif new_status is not None and new_status not in _ROLLOUT_UPDATES[old_status]:
                hint = (
                    " (claim it with dequeue_rollout or start_attempt)" if new_status == "preparing" else ""
                )
                raise ValueError(
                    f"rollout {rollout_id}: cannot go from {old_status!r} to {new_status!r}{hint}"
                )
            data.update(changes)
            for name, value in containers.items():
                setattr(record, name, value)
            self._rollout_changed(record)
            if "config" in containers:
                active = self._active_attempt(record)
                if active is not None:
                    self._watch(active)
            if new_status is not None:
                self._apply_rollout_status(record, new_status, now)
            return _rollout_out(record)

    async def query_rollouts(
        self,
        *,
        status: Sequence[RolloutStatus] | None = None,
        rollout_ids: Sequence[str] | None = None,
    ) -> list[Rollout]:
        statuses = _check_status_list(status)
        ids = None if rollout_ids is None else _check_str_list("rollout_ids", rollout_ids)
        with self._lock:
            self._tick()
            records: Iterable[_RolloutRecord]
            if ids is not None:
                found = {rid: self._rollouts[rid] for rid in ids if rid in self._rollouts}
                records = sorted(found.values(), key=_by_order)
                if statuses is not None:
                    records = [rec for rec in records if rec.data["status"] in statuses]
            elif statuses is not None:
                picked = [rec for s in statuses for rec in self._by_status[s].values()]
                records = sorted(picked, key=_by_order)
            else:
                records = self._rollouts.values()
            return _rollouts_out(records)

    async def get_rollout_by_id(self, rollout_id: str) -> Rollout | None:
        _check_str("rollout_id", rollout_id)
        with self._lock:
            self._tick()
            record = self._rollouts.get(rollout_id)
            return None if record is None else _rollout_out(record)

    async def wait_for_rollouts(
        self, *, rollout_ids: list[str], timeout: float | None = None
    ) -> list[Rollout]:
        ids = _check_str_list("rollout_ids", rollout_ids)
        if timeout is not None:
            timeout = _check_seconds("timeout", timeout)
        loop = asyncio.get_running_loop()
        give_up = None if timeout is None else loop.time() + timeout
        with self._lock:
            self._tick()
            found = self._rollouts
            try:
                records = [found[rid] for rid in ids]
            except KeyError:
                unknown = [rid for rid in ids if rid not in found]
                raise ValueError(f"wait_for_rollouts: unknown rollout ids {unknown}") from None
            pending: set[str] | None = None
            for record in records:
                data = record.data
                if data["status"] not in TERMINAL_ROLLOUT_STATUSES:
                    if pending is None:
                        pending = set()
                    pending.add(data["rollout_id"])
            if pending is None:
                return _rollouts_out(records)
            if give_up is not None and give_up <= loop.time():
                return self._terminal_out(records)
            # Registered once; each round below only swaps in a fresh one-shot future.
            waiter = _Waiter(pending, loop)
            waiters = self._waiters
            for rid in pending:
                present = waiters.setdefault(rid, waiter)
                if present is not waiter:
                    if isinstance(present, list):
                        present.append(waiter)
                    else:
                        waiters[rid] = [present, waiter]
            self._all_waiters.add(waiter)
        try:
            while True:
                with self._lock:
                    now = self._tick()  # may expire attempts, which completes rollouts and shrinks pending
                    remaining = None if give_up is None else give_up - loop.time()
                    if not waiter.pending or (remaining is not None and remaining <= 0):
                        return self._terminal_out(records)
                    waiter.future = loop.create_future()
                    # Also wake at the next attempt deadline, so a wait alone detects a dead runner.
                    delay = remaining
                    if self._deadlines.due < math.inf:
                        until_deadline = max(self._deadlines.due - now, _MIN_DELAY)
                        delay = until_deadline if delay is None else min(delay, until_deadline)
                    waiter.wake_at = math.inf if delay is None else now + delay
                future = waiter.future
                timer = None if delay is None else loop.call_later(delay, _resolve, future)
                try:
                    await future
                finally:
                    if timer is not None:
                        timer.cancel()
        finally:
            with self._lock:
                self._forget_waiter(waiter)

    # -- attempts -------------------------------------------------------------------------------------

    async def query_attempts(self, rollout_id: str) -> list[Attempt]:
        _check_str("rollout_id", rollout_id)
        with self._lock:
            self._tick()
            record = self._rollouts.get(rollout_id)
            if record is None:
                return []
            return [_attempt_out(arec) for arec in record.attempts()]

    async def get_latest_attempt(self, rollout_id: str) -> Attempt | None:
        _check_str("rollout_id", rollout_id)
        with self._lock:
            self._tick()
            record = self._rollouts.get(rollout_id)
            if record is None or record.latest is None:
                return None
            return _attempt_out(record.latest)

    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str | Literal["latest"],
        status: AttemptStatus | Unset = UNSET,
        worker_id: str | Unset | None = UNSET,
        last_heartbeat_time: float | Unset = UNSET,
        metadata: dict[str, Any] | Unset = UNSET,
    ) -> Attempt:
        # The common, valid case is checked inline: this is a runner's hottest call.
        if type(rollout_id) is not str or not rollout_id:
            _check_str("rollout_id", rollout_id)
        if type(attempt_id) is not str or not attempt_id:
            _check_str("attempt_id", attempt_id)
        new_status: str | None = None
        if status is not UNSET:
            valid = type(status) is str and status in ATTEMPT_STATUSES
            new_status = status if valid else _check_choice("status", status, ATTEMPT_STATUSES)
        changes: dict[str, Any] = {}
        if worker_id is not UNSET:
            changes["worker_id"] = _check_optional_str("worker_id", worker_id)
        if last_heartbeat_time is not UNSET:
            changes["last_heartbeat_time"] = _check_time("last_heartbeat_time", last_heartbeat_time)
        new_metadata = (
            UNSET
            if metadata is UNSET
            else check_json("metadata", _check_mapping("metadata", metadata), self.limits)
        )
        with self._lock:
            now = self._clock()
            if self._deadlines.due <= now:
                self._sweep(now)
            arec = self._attempt_record(rollout_id, attempt_id)
            data = arec.data
            old_status = data["status"]
            if new_status == old_status:
                new_status = None
            elif new_status is not None and new_status not in _ATTEMPT_UPDATES[old_status]:
                if not arec.ended_by_store:
                    raise ValueError(
                        f"attempt {data['attempt_id']} of rollout {rollout_id}: "
                        f"cannot go from {old_status!r} to {new_status!r}"
                    )
                new_status = None  # a late report from a runner the store gave up on: dropped
            if changes:
                data.update(changes)
            if new_metadata is not UNSET:
                arec.metadata = new_metadata
            if changes or new_metadata is not UNSET:
                self._rollout_changed(arec.owner)
            heartbeat = "last_heartbeat_time" in changes
            if old_status in ACTIVE_ATTEMPT_STATUSES and (new_status or heartbeat):
                arec.last_activity = now
            if new_status in TERMINAL_ATTEMPT_STATUSES:
                self._end_attempt(arec, new_status, now, by_store=False)  # type: ignore[arg-type]
            elif old_status == "preparing" and (new_status == "running" or heartbeat):
                self._set_attempt_running(arec)
            return _attempt_out(arec)

    # -- spans ----------------------------------------------------------------------------------------

    async def add_span(self, span: Span) -> Span:
        if not isinstance(span, Span):
            raise TypeError(f"span must be a Span, got {type(span).__name__} {span!r}")
        stored = check_span(span, self.limits)
        with self._lock:
            now = self._tick()
            rollout_id = stored["rollout_id"]
            if rollout_id not in self._rollouts:
                raise ValueError(f"add_span: unknown rollout id {rollout_id!r}")
            arec = self._attempt_record(rollout_id, stored["attempt_id"])
            sequence_id = stored["sequence_id"]
            if sequence_id == 0:
                stored["sequence_id"] = sequence_id = arec.next_sequence
            arec.next_sequence = max(arec.next_sequence, sequence_id + 1)
            spans = arec.spans
            if spans is None:
                spans = arec.spans = []
            spans.append(stored)
            if len(spans) > 1 and spans[-2]["sequence_id"] > sequence_id:
                spans.sort(key=_by_sequence)  # an explicit, out-of-order sequence id
            if arec.data["status"] in ACTIVE_ATTEMPT_STATUSES:
                arec.last_activity = now
                arec.data["last_heartbeat_time"] = now
                if arec.data["status"] == "preparing":
                    self._set_attempt_running(arec)
            self._span_added(arec, stored)
            return _span_out(stored)

    async def query_spans(
        self, rollout_id: str, attempt_id: str | Literal["latest"] | None = None
    ) -> list[Span]:
        _check_str("rollout_id", rollout_id)
        if attempt_id is not None:
            _check_str("attempt_id", attempt_id)
        with self._lock:
            self._tick()
            record = self._rollouts.get(rollout_id)
            if record is None or record.latest is None:
                return []
            chosen: Sequence[_AttemptRecord]
            if attempt_id is None:
                chosen = record.attempts()
            elif attempt_id == "latest":
                chosen = [record.latest]
            else:
                arec = self._attempts.get(attempt_id)
                chosen = [arec] if arec is not None and arec.owner is record else []
            return [_span_out(span) for arec in chosen if arec.spans for span in arec.spans]

    # -- resources ------------------------------------------------------------------------------------

    async def add_resources(self, resources: NamedResources) -> ResourcesUpdate:
        values = check_json("resources", _check_mapping("resources", resources), self.limits)
        with self._lock:
            now = self._tick()
            update = _build(
                ResourcesUpdate,
                {"resources_id": self._new_id("rs"), "resources": values, "create_time": now},
                _RESOURCES_FIELDS,
            )
            self._resources[update.resources_id] = update
            self._latest_resources = update
            self._resources_added(update)
            return _resources_out(update)

    async def get_latest_resources(self) -> ResourcesUpdate | None:
        with self._lock:
            latest = self._latest_resources
            return None if latest is None else _resources_out(latest)

    async def get_resources_by_id(self, resources_id: str) -> ResourcesUpdate | None:
        _check_str("resources_id", resources_id)
        with self._lock:
            update = self._resources.get(resources_id)
            return None if update is None else _resources_out(update)

    async def close(self) -> None:
        """Nothing to release; the store stays usable."""

    # -- internals (called with the lock held) ------------------------------------------------------

    @staticmethod
    def _terminal_out(records: list[_RolloutRecord]) -> list[Rollout]:
        return _rollouts_out([rec for rec in records if rec.data["status"] in TERMINAL_ROLLOUT_STATUSES])

    def _new_id(self, prefix: str) -> str:
        # A per-store random salt plus a counter: unique, and far cheaper than a uuid per call.
        return f"{prefix}-{self._salt}{next(self._counter):08x}"

    def _tick(self) -> float:
        """The current time, after expiring every attempt whose deadline has passed.

        The hottest methods (enqueue, dequeue, update_attempt) inline these lines: the call would cost as
        much as the check.
        """
        now = self._clock()
        if self._deadlines.due <= now:
            self._sweep(now)
        return now

    def _new_rollout(
        self,
        input: TaskInput,
        mode: object,
        resources_id: object,
        config: object,
        metadata: object,
        status: RolloutStatus,
    ) -> _RolloutRecord:
        """A validated record, not yet stored (id and start time are set under the lock)."""
        checked_config = None if config is None else _check_config(config)
        data = {
            "rollout_id": "",
            "input": None,
            "start_time": 0.0,
            "end_time": None,
            "mode": None if mode is None else _check_mode(mode),
            "resources_id": None if resources_id is None else _check_str("resources_id", resources_id),
            "status": status,
            "config": None,
            "metadata": None,
        }
        return _RolloutRecord(
            data,
            check_json("input", input, self.limits),
            None
            if metadata is None
            else check_json("metadata", _check_mapping("metadata", metadata), self.limits),
            # Configs are frozen, so rollouts without one share the default.
            self._default_config if checked_config is None else _own_config(checked_config),
        )

    # Change hooks: no-ops here. A store that keeps a copy of its state elsewhere (``sqlite.py``) overrides
    # them; with the other internals they see every change, in the order the lock serialised it.

    def _rollout_changed(self, record: _RolloutRecord) -> None:
        """A caller set fields, input, metadata or config of ``record`` or of one of its attempts."""

    def _span_added(self, arec: _AttemptRecord, span: dict[str, Any]) -> None:
        """``span`` (as stored) was added to ``arec``."""

    def _resources_added(self, update: ResourcesUpdate) -> None:
        """``update`` became the latest resources."""

    def _add_rollout(self, record: _RolloutRecord, now: float) -> None:
        data = record.data
        rollout_id = self._new_id("ro")
        data["rollout_id"] = rollout_id
        data["start_time"] = now
        record.order = len(self._rollouts)
        self._rollouts[rollout_id] = record
        self._by_status[data["status"]][rollout_id] = record

    def _push_queue(self, record: _RolloutRecord) -> None:
        record.queue_serial = self._pushed
        self._pushed += 1
        self._queue.append(record)

    def _rollout_record(self, rollout_id: str) -> _RolloutRecord:
        record = self._rollouts.get(rollout_id)
        if record is None:
            raise ValueError(f"unknown rollout id {rollout_id!r}")
        return record

    def _attempt_record(self, rollout_id: str, attempt_id: str) -> _AttemptRecord:
        record = self._rollout_record(rollout_id)
        if attempt_id == "latest":
            if record.latest is None:
                raise ValueError(f"rollout {rollout_id} has no attempt yet (attempt_id='latest')")
            return record.latest
        arec = self._attempts.get(attempt_id)
        if arec is None:
            raise ValueError(f"unknown attempt id {attempt_id!r} (rollout {rollout_id})")
        if arec.owner is not record:
            raise ValueError(
                f"attempt {attempt_id!r} belongs to rollout {arec.owner.data['rollout_id']!r}, "
                f"not {rollout_id!r}"
            )
        return arec

    @staticmethod
    def _active_attempt(record: _RolloutRecord) -> _AttemptRecord | None:
        latest = record.latest
        if latest is not None and latest.data["status"] in ACTIVE_ATTEMPT_STATUSES:
            return latest
        return None

    def _new_attempt(self, record: _RolloutRecord, now: float) -> _AttemptRecord:
        attempt_id = self._new_id("at")
        arec = _AttemptRecord(
            {
                "rollout_id": record.data["rollout_id"],
                "attempt_id": attempt_id,
                "sequence_id": len(record.earlier) + (1 if record.latest is None else 2),
                "start_time": now,
                "end_time": None,
                "status": "preparing",
                "worker_id": None,
                "last_heartbeat_time": None,
                "metadata": None,
            },
            record,
        )
        if record.latest is not None:
            record.earlier = (*record.earlier, record.latest)
        record.latest = arec
        self._attempts[attempt_id] = arec
        config = record.config
        if config.timeout_seconds is not None or config.unresponsive_seconds is not None:
            self._watch(arec)
        return arec

    def _claim(self, record: _RolloutRecord, now: float) -> _AttemptRecord:
        """Take the rollout out of the queue (or from its current attempt) and start its next attempt."""
        superseded = self._active_attempt(record)
        if superseded is not None:
            self._end_attempt(superseded, "failed", now, by_store=True, propagate=False)
        record.queue_serial = -1  # whatever queue entry is left for it is now stale
        self._set_rollout_status(record, "preparing", now)
        return self._new_attempt(record, now)

    @staticmethod
    def _attempted_out(record: _RolloutRecord, arec: _AttemptRecord) -> AttemptedRollout:
        values = _rollout_values_out(record)
        values["attempt"] = _attempt_out(arec)
        return _build(AttemptedRollout, values, _ATTEMPTED_FIELDS)

    def _set_attempt_running(self, arec: _AttemptRecord) -> None:
        arec.data["status"] = "running"
        record = arec.owner
        if record.latest is arec and record.data["status"] == "preparing":
            self._set_rollout_status(record, "running", arec.last_activity)

    def _set_rollout_status(self, record: _RolloutRecord, status: str, now: float) -> None:
        data = record.data
        old = data["status"]
        if old == status:
            return
        rollout_id = data["rollout_id"]
        del self._by_status[old][rollout_id]
        self._by_status[status][rollout_id] = record
        data["status"] = status
        if status in TERMINAL_ROLLOUT_STATUSES:
            data["end_time"] = now
            if self._waiters:
                self._notify(rollout_id)
        elif status in _QUEUED and old not in _QUEUED:
            self._push_queue(record)

    def _apply_rollout_status(self, record: _RolloutRecord, status: str, now: float) -> None:
        """An explicit ``update_rollout(status=...)``: also settles the active attempt."""
        active = self._active_attempt(record)
        if active is not None:
            if status == "running":
                active.last_activity = now
                self._set_attempt_running(active)
                return
            self._end_attempt(active, _ATTEMPT_END_FOR_ROLLOUT[status], now, by_store=True, propagate=False)
        self._set_rollout_status(record, status, now)

    def _end_attempt(
        self,
        arec: _AttemptRecord,
        status: AttemptStatus,
        now: float,
        *,
        by_store: bool,
        propagate: bool = True,
    ) -> None:
        data = arec.data
        data["status"] = status
        data["end_time"] = now
        arec.watch_token += 1
        arec.ended_by_store = by_store
        # Attempts mostly end in the order they started: drop the stale entries at the head as they
        # appear, so a wait's timer aims at a live deadline and not at one that no longer matters.
        self._deadlines.drop_stale()
        record = arec.owner
        if not propagate or record.latest is not arec or record.data["status"] not in _CLAIMED:
            return  # a superseded attempt never changes its rollout
        if status == "succeeded":
            self._set_rollout_status(record, "succeeded", now)
            return
        config = record.config
        if status in config.retry_condition and data["sequence_id"] < config.max_attempts:
            self._set_rollout_status(record, "requeuing", now)
        else:
            self._set_rollout_status(record, "failed", now)

    # -- liveness -------------------------------------------------------------------------------------

    @staticmethod
    def _next_deadline(arec: _AttemptRecord) -> float | None:
        config = arec.owner.config
        deadline: float | None = None
        if config.timeout_seconds is not None:
            deadline = arec.data["start_time"] + config.timeout_seconds
        if config.unresponsive_seconds is not None:
            silent = arec.last_activity + config.unresponsive_seconds
            deadline = silent if deadline is None else min(deadline, silent)
        return deadline

    def _watch(self, arec: _AttemptRecord) -> None:
        """(Re)schedule the attempt's liveness check; older schedule entries for it become stale."""
        arec.watch_token += 1
        deadline = self._next_deadline(arec)
        if deadline is None:
            return
        entry = (deadline, next(self._counter), arec.data["attempt_id"], arec.watch_token)
        if self._deadlines.push(entry):
            # Earlier than every other deadline: a wait whose timer fires later must re-arm it. (Not
            # every wait: with a default window on every attempt, a new head is common, and most waits
            # already wake sooner, at their own timeout.)
            for waiter in self._all_waiters:
                if deadline < waiter.wake_at:
                    self._fire(waiter)

    def _sweep(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines.due <= now:
            _, _, attempt_id, token = deadlines.pop()
            arec = self._attempts[attempt_id]
            if token != arec.watch_token or arec.data["status"] not in ACTIVE_ATTEMPT_STATUSES:
                continue
            config = arec.owner.config
            timeout = config.timeout_seconds
            silence = config.unresponsive_seconds
            if timeout is not None and now >= arec.data["start_time"] + timeout:
                self._end_attempt(arec, "timeout", now, by_store=True)
            elif silence is not None and now >= arec.last_activity + silence:
                self._end_attempt(arec, "unresponsive", now, by_store=True)
            else:
                # Heartbeats moved the deadline on since this entry was pushed: check again later.
                deadline = self._next_deadline(arec)
                if deadline is not None:
                    deadlines.push((deadline, next(self._counter), attempt_id, token))

    # -- waiters --------------------------------------------------------------------------------------

    def _notify(self, rollout_id: str) -> None:
        present = self._waiters.pop(rollout_id, None)
        if present is None:
            return
        for waiter in present if isinstance(present, list) else (present,):
            waiter.pending.discard(rollout_id)
            if not waiter.pending:
                self._fire(waiter)

    @staticmethod
    def _fire(waiter: _Waiter) -> None:
        try:
            if waiter.thread_id == threading.get_ident():
                _resolve(waiter.future)
            else:
                waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
        except RuntimeError:
            pass  # that loop is closed: nobody is waiting any more

    def _forget_waiter(self, waiter: _Waiter) -> None:
        self._all_waiters.discard(waiter)
        waiters = self._waiters
        for rollout_id in waiter.pending:
            present = waiters.get(rollout_id)
            if present is waiter:
                del waiters[rollout_id]
            elif isinstance(present, list) and waiter in present:
                present.remove(waiter)
                if not present:
                    del waiters[rollout_id]


def _by_order(record: _RolloutRecord) -> int:
    return record.order


def _by_sequence(span: dict[str, Any]) -> int:
    return int(span["sequence_id"])
