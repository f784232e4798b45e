"""T9's workloads: concurrent client programs run against any ``LightningStore``, recorded as histories.

A ``Workload`` is data only: a set-up (rollouts enqueued with named ``RolloutConfig``s, resource
snapshots published) and one program per client, each a list of ``Step``s. Steps name what they act on
symbolically (``claim:-1`` is the attempt this client dequeued last, ``setup:0`` the first set-up
rollout, ``mine:-1`` the rollout it enqueued last), because ids are the store's to assign; a step
whose reference does not resolve yet (no claim so far) is skipped. ``run_client`` executes one program
against any store object (in-process, thread-safe wrapper, HTTP or ipc client) and records every call
as ``conformance.history`` events; after recording a result it scribbles on the returned object, so a
store that hands out its own state instead of a copy shows up as a read that does not match.

``workloads()`` is the hypothesis strategy (small on purpose: fewer clients, fewer and simpler steps
shrink first); ``explore`` runs it with the kit's seed against fresh stores, checks each history with
``conformance.history.check_history``, and on failure returns the minimal workload with its history,
its violations, its ``encode``d form for ``--conformance-replay`` and how often it reproduced.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from pydantic import BaseModel

from agentlightning.store.base import LightningStore
from agentlightning.types import RolloutConfig, Span
from conformance.exploration import (
    CI_PROFILE,
    THOROUGH_PROFILE,
    b64_form,
    describe_reproduction,
    replay_text,
    search,
)
from conformance.history import Event, Violation, analyse_history, format_history

__all__ = [
    "AUDIT",
    "CONFIGS",
    "STEP_OPS",
    "ClientProgram",
    "ClientsRunner",
    "RunClients",
    "Step",
    "Workload",
    "WorkloadBounds",
    "WorkloadExploration",
    "WorkloadFinding",
    "WorkloadRun",
    "WorkloadRunner",
    "bind_programs",
    "decode",
    "default_replay_command",
    "encode",
    "explore",
    "format_workload",
    "record_workload",
    "replay",
    "run_client",
    "run_in_threads",
    "run_workload",
    "setup_program",
    "workloads",
]

# Only ``expiring`` lets the store end attempts itself: the others opt out of RolloutConfig's default
# unresponsive window (600 s), which the checker would otherwise have to consider possible at any moment.
CONFIGS: Mapping[str, Mapping[str, Any]] = {
    "once": {"max_attempts": 1, "retry_condition": [], "unresponsive_seconds": None},
    "no-retry": {"max_attempts": 1, "retry_condition": ["failed"], "unresponsive_seconds": None},
    "retry": {
        "max_attempts": 2,
        "retry_condition": ["failed", "timeout", "unresponsive"],
        "unresponsive_seconds": None,
    },
    "expiring": {
        "max_attempts": 2,
        "retry_condition": ["failed", "timeout", "unresponsive"],
        "unresponsive_seconds": 0.03,
        "timeout_seconds": 0.1,
    },
}
"""The retry policies a workload's rollouts use, by name (``expiring`` lets the store end attempts itself)."""

STEP_OPS: Mapping[str, str] = {
    "dequeue": "claim the next queued rollout",
    "work": "claim the next queued rollout and end its attempt with the step's status",
    "update_attempt": "set the status of a claimed attempt (target claim:i, or bogus: an unknown id)",
    "heartbeat": "send a heartbeat for a claimed attempt",
    "add_span": "add a span to a claimed attempt (or to an unknown one: bogus)",
    "query_spans": "read a claimed attempt's spans",
    "enqueue": "enqueue a rollout with the named config",
    "update_rollout": "set a rollout's status",
    "set_metadata": "replace a rollout's metadata",
    "get_rollout": "read a rollout",
    "query_rollouts": "list rollouts, optionally of one status",
    "query_attempts": "list a rollout's attempts",
    "get_latest_attempt": "read a rollout's latest attempt",
    "wait": "wait_for_rollouts on one rollout or all this client knows, with the step's timeout",
    "add_resources": "publish a resources snapshot (value 0 or 1: one of two contents any client may "
    "publish again, a rollback; none: content of this client's own)",
    "get_latest_resources": "read the latest resources snapshot",
    "get_resources": "read a snapshot this client added (mine:i) or saw (seen:i) by id",
    "pause": "sleep a few milliseconds",
    "audit": "read everything: every rollout, each one's attempts and spans, the latest resources",
}
"""What each step does (the target and value a step carries are described here too)."""

_HANG_BOUND = 60.0  # seconds a client thread may take before the run is declared hung
_ATTEMPT_STATUSES = ("failed", "succeeded", "running", "timeout", "unresponsive", "preparing")
_ROLLOUT_STATUSES = ("cancelled", "succeeded", "failed", "requeuing", "queuing", "running", "preparing")
_REFUSALS = (ValueError, TypeError, LookupError)  # the store refused the call: it changed nothing


@dataclass(frozen=True)
class Step:
    """One step of a client program: an op of ``STEP_OPS``, a symbolic target, a value (status, config
    name, timeout or seconds)."""

    op: str
    target: str = ""
    value: str | float | int | None = None

    def __post_init__(self) -> None:
        if self.op not in STEP_OPS:
            raise ValueError(f"unknown workload step op {self.op!r}; known: {sorted(STEP_OPS)}")

    def __str__(self) -> str:
        parts = [self.op, self.target, "" if self.value is None else str(self.value)]
        return " ".join(part for part in parts if part)


@dataclass(frozen=True)
class Workload:
    """Set-up (config names of rollouts enqueued first, resource snapshots published first) and programs."""

    setup: tuple[str, ...] = ()
    resources: int = 0
    clients: tuple[tuple[Step, ...], ...] = ()

    def __post_init__(self) -> None:
        unknown = [name for name in self.setup if name not in CONFIGS]
        if unknown:
            raise ValueError(f"unknown rollout config {unknown[0]!r}; known: {sorted(CONFIGS)}")
        if self.resources < 0:
            raise ValueError(f"resources must be >= 0, got {self.resources!r}")


@dataclass(frozen=True)
class ClientProgram:
    """A program bound to one run: the client's name, its steps and the ids the set-up produced."""

    client: str
    steps: tuple[Step, ...]
    setup_rollouts: tuple[str, ...] = ()
    setup_resources: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkloadBounds:
    """How big drawn workloads may be: small on purpose, so a failure shrinks to a few steps."""

    max_clients: int = 3
    max_steps: int = 8
    max_setup: int = 3

    def __post_init__(self) -> None:
        for name in ("max_clients", "max_steps", "max_setup"):
            if getattr(self, name) < (1 if name == "max_clients" else 0):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")


RunClients = Callable[[LightningStore, Sequence[ClientProgram]], list[list[Event]]]
"""Runs bound programs concurrently against the store the set-up used; returns each client's events.

The store argument is what ``store_factory`` made for this run (the set-up has used it); a runner that
reaches the same store another way (a server it started for it, clients in other processes) may use
that instead, as long as every client program runs against it.
"""


# -- encoding ----------------------------------------------------------------------------------------------


def _plain(workload: Workload) -> dict[str, Any]:
    return {
        "kind": "T9",
        "setup": list(workload.setup),
        "resources": workload.resources,
        "clients": [[[s.op, s.target, s.value] for s in program] for program in workload.clients],
    }


def encode(workload: Workload) -> str:
    """The workload as ``b64:<base64 of compact JSON>``: one shell word for a replay command line."""
    return b64_form(json.dumps(_plain(workload), separators=(",", ":")))


def decode(text: str) -> Workload:
    """A workload from ``encode``'s form, its JSON, or a file holding it; a ``ValueError`` names the fault."""
    try:
        data = json.loads(replay_text(text))
        if not isinstance(data, dict) or data.get("kind") != "T9":
            raise ValueError('not a T9 workload (no "kind": "T9")')
        clients = tuple(
            tuple(Step(str(op), str(target), value) for op, target, value in program)
            for program in data["clients"]
        )
        return Workload(tuple(str(name) for name in data["setup"]), int(data["resources"]), clients)
    except (ValueError, KeyError, TypeError) as error:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise ValueError(
            f"--conformance-replay {shown!r} is not a T9 workload (b64:..., JSON, or a file): "
            f"{type(error).__name__}: {error}"
        ) from None


def format_workload(workload: Workload) -> str:
    """The workload as readable text: the set-up, then one line per client program."""
    setup = ", ".join(workload.setup) or "none"
    lines = [f"set-up: rollouts [{setup}], {workload.resources} resources snapshot(s)"]
    for number, program in enumerate(workload.clients):
        lines.append(f"c{number}: " + ("; ".join(str(step) for step in program) or "(nothing)"))
    return "\n".join(lines)


# -- running a program -------------------------------------------------------------------------------------


def _json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_json(item) for item in value]
    return value


def _scribble(value: Any, client: str) -> None:
    """Mutate a returned object the way a careless caller might: a store must have handed out a copy."""
    if isinstance(value, (list, tuple)):
        for item in value:
            _scribble(item, client)
        return
    for name in ("metadata", "resources"):
        container = getattr(value, name, None)
        if isinstance(container, dict):
            container[f"scribbled-by-{client}"] = True
    attempt = getattr(value, "attempt", None)
    if attempt is not None:
        _scribble(attempt, client)


class _Client:
    """One client's run: its event list and what it has learnt (claims, enqueued rollouts, snapshots)."""

    def __init__(self, program: ClientProgram, store: LightningStore) -> None:
        self.program = program
        self.store = store
        self.events: list[Event] = []
        self.counter = itertools.count()
        self.mine: list[str] = []
        self.claims: list[tuple[str, str]] = []
        self.added: list[str] = []
        self.seen: list[str] = []

    async def call(self, op: str, args: Mapping[str, Any], make: Callable[[], Awaitable[Any]]) -> Any:
        index = next(self.counter)
        name = self.program.client
        self.events.append(Event("invoke", name, index, op, time.monotonic_ns(), dict(args)))
        try:
            result = await make()
        except _REFUSALS as error:
            self.events.append(
                Event(
                    "fail",
                    name,
                    index,
                    op,
                    time.monotonic_ns(),
                    error=type(error).__name__,
                    message=str(error),
                )
            )
            return None
        except Exception as error:  # transport failures and the like: the outcome is unknown
            self.events.append(
                Event(
                    "info",
                    name,
                    index,
                    op,
                    time.monotonic_ns(),
                    error=type(error).__name__,
                    message=str(error),
                )
            )
            return None
        done = time.monotonic_ns()
        self.events.append(Event("ok", name, index, op, done, value=_json(result)))
        _scribble(result, name)
        return result

    # -- symbolic references --------------------------------------------------------------------------

    @staticmethod
    def _pick(items: Sequence[Any], position: str) -> Any:
        try:
            return items[int(position)]
        except (IndexError, ValueError):
            return None

    def rollout(self, target: str) -> str | None:
        kind, _, position = target.partition(":")
        if kind == "setup":
            return self._pick(self.program.setup_rollouts, position)  # type: ignore[no-any-return]
        if kind == "mine":
            return self._pick(self.mine, position)  # type: ignore[no-any-return]
        if kind == "claim":
            claim = self._pick(self.claims, position)
            return None if claim is None else str(claim[0])
        return None

    def attempt(self, target: str) -> tuple[str, str] | None:
        if target == "bogus":
            rollout = self.rollout("claim:-1") or self.rollout("setup:0") or self.rollout("mine:-1")
            return None if rollout is None else (rollout, f"at-bogus-{self.program.client}")
        kind, _, position = target.partition(":")
        return self._pick(self.claims, position) if kind == "claim" else None

    def known(self) -> list[str]:
        return list(dict.fromkeys([*self.program.setup_rollouts, *self.mine, *(r for r, _ in self.claims)]))

    def resources(self, target: str) -> str | None:
        kind, _, position = target.partition(":")
        pool = self.added if kind == "mine" else self.seen if kind == "seen" else []
        return self._pick(pool, position)  # type: ignore[no-any-return]

    # -- steps ----------------------------------------------------------------------------------------------

    async def dequeue(self) -> tuple[str, str] | None:
        got = await self.call("dequeue_rollout", {}, self.store.dequeue_rollout)
        if got is None:
            return None
        claim = (got.rollout_id, got.attempt.attempt_id)
        self.claims.append(claim)
        return claim

    async def update_attempt(self, claim: tuple[str, str], **fields: Any) -> None:
        args = {"rollout_id": claim[0], "attempt_id": claim[1], **fields}
        await self.call(
            "update_attempt", args, lambda: self.store.update_attempt(claim[0], claim[1], **fields)
        )

    async def step(self, step: Step) -> None:
        op, target, value = step.op, step.target, step.value
        if op == "pause":
            await asyncio.sleep(float(value or 0.0))
        elif op == "dequeue":
            await self.dequeue()
        elif op == "work":
            claim = await self.dequeue()
            if claim is not None:
                await self.update_attempt(claim, status=str(value))
        elif op in ("update_attempt", "heartbeat", "add_span", "query_spans"):
            claim = self.attempt(target or "claim:-1")
            if claim is not None:
                await self.attempt_step(op, claim, value)
        elif op in ("add_resources", "get_latest_resources", "get_resources"):
            await self.resources_step(op, target, value)
        elif op in ("enqueue", "query_rollouts", "wait"):
            await self.queue_step(op, target, value)
        elif op == "audit":
            await self.audit()
        else:
            rid = self.rollout(target)
            if rid is not None:
                await self.rollout_step(op, rid, value)

    async def audit(self) -> None:
        store = self.store
        everything = await self.call("query_rollouts", {}, store.query_rollouts)
        for rid in [found.rollout_id for found in everything or ()]:
            await self.rollout_step("query_attempts", rid, None)
            await self.call(
                "query_spans",
                {"rollout_id": rid, "attempt_id": None},
                functools.partial(store.query_spans, rid),
            )
        await self.call("get_latest_resources", {}, store.get_latest_resources)

    async def attempt_step(self, op: str, claim: tuple[str, str], value: Any) -> None:
        store = self.store
        rid, aid = claim
        if op == "update_attempt":
            await self.update_attempt(claim, status=str(value))
        elif op == "heartbeat":
            await self.update_attempt(claim, last_heartbeat_time=time.time())
        elif op == "add_span":
            number = len(self.events)
            span: dict[str, Any] = {
                "rollout_id": rid,
                "attempt_id": aid,
                "span_id": f"{self.program.client}-s{number}",
                "name": f"step {number}",
            }
            await self.call("add_span", span, lambda: store.add_span(Span(**span)))
        else:
            args = {"rollout_id": rid, "attempt_id": aid}
            await self.call("query_spans", args, lambda: store.query_spans(rid, aid))

    async def resources_step(self, op: str, target: str, value: Any) -> None:
        store = self.store
        if op == "add_resources":
            resources: dict[str, Any] = (
                {"model": f"{self.program.client}-v{len(self.added)}", "weights": [len(self.added), 1.5]}
                if value is None
                else {"model": f"shared-v{value}", "weights": [int(value), 1.5]}
            )
            added = await self.call(
                "add_resources", {"resources": resources}, lambda: store.add_resources(resources)
            )
            if added is not None:
                self.added.append(added.resources_id)
        elif op == "get_latest_resources":
            latest = await self.call("get_latest_resources", {}, store.get_latest_resources)
            if latest is not None:
                self.seen.append(latest.resources_id)
        else:
            wanted = self.resources(target)
            if wanted is not None:
                await self.call(
                    "get_resources_by_id", {"resources_id": wanted}, lambda: store.get_resources_by_id(wanted)
                )

    async def queue_step(self, op: str, target: str, value: Any) -> None:
        store = self.store
        if op == "enqueue":
            config = RolloutConfig(**CONFIGS[str(value)])
            task = {"client": self.program.client, "n": len(self.mine), "text": "tâche"}
            made = await self.call(
                "enqueue_rollout",
                {"input": task, "config": _json(config)},
                lambda: store.enqueue_rollout(task, config=config),
            )
            if made is not None:
                self.mine.append(made.rollout_id)
        elif op == "query_rollouts":
            statuses: Any = None if value is None else [str(value)]
            query = {} if statuses is None else {"status": statuses}
            await self.call("query_rollouts", query, lambda: store.query_rollouts(status=statuses))
        else:
            ids = self.known() if target == "all" else [r for r in [self.rollout(target)] if r is not None]
            if ids:
                timeout = float(value or 0.0)
                await self.call(
                    "wait_for_rollouts",
                    {"rollout_ids": ids, "timeout": timeout},
                    lambda: store.wait_for_rollouts(rollout_ids=ids, timeout=timeout),
                )

    async def rollout_step(self, op: str, rid: str, value: Any) -> None:
        store = self.store
        if op == "update_rollout":
            status: Any = str(value)
            await self.call(
                "update_rollout",
                {"rollout_id": rid, "status": status},
                lambda: store.update_rollout(rid, status=status),
            )
        elif op == "set_metadata":
            metadata = {"tag": value, "by": self.program.client}
            await self.call(
                "update_rollout",
                {"rollout_id": rid, "metadata": metadata},
                lambda: store.update_rollout(rid, metadata=metadata),
            )
        elif op == "get_rollout":
            await self.call("get_rollout_by_id", {"rollout_id": rid}, lambda: store.get_rollout_by_id(rid))
        elif op == "query_attempts":
            await self.call("query_attempts", {"rollout_id": rid}, lambda: store.query_attempts(rid))
        elif op == "get_latest_attempt":
            await self.call("get_latest_attempt", {"rollout_id": rid}, lambda: store.get_latest_attempt(rid))


async def run_client(program: ClientProgram, store: LightningStore) -> list[Event]:
    """Run one client program against ``store`` (any ``LightningStore``) and return its recorded events.

    Store errors are recorded, never raised: ``ValueError``/``TypeError``/``LookupError`` as ``fail``
    (refused, nothing changed), anything else as ``info`` (outcome unknown).
    """
    client = _Client(program, store)
    for step in program.steps:
        await client.step(step)
    return client.events


def setup_program(workload: Workload) -> ClientProgram:
    """The set-up as a program of its own (client ``setup``), run before the clients start."""
    steps = [Step("enqueue", "", name) for name in workload.setup]
    steps += [Step("add_resources") for _ in range(workload.resources)]
    return ClientProgram("setup", tuple(steps))


AUDIT = ClientProgram("audit", (Step("audit"),))
"""Run after the clients: the final read that makes any wrong end state visible to the checker."""


def bind_programs(workload: Workload, setup_events: Sequence[Event]) -> list[ClientProgram]:
    """The client programs with the ids the set-up's events show (rollouts and snapshots, in order)."""
    rollouts = tuple(
        e.value["rollout_id"] for e in setup_events if e.kind == "ok" and e.op == "enqueue_rollout"
    )
    snapshots = tuple(
        e.value["resources_id"] for e in setup_events if e.kind == "ok" and e.op == "add_resources"
    )
    return [
        ClientProgram(f"c{number}", steps, rollouts, snapshots)
        for number, steps in enumerate(workload.clients)
    ]


def run_in_threads(store: LightningStore, programs: Sequence[ClientProgram]) -> list[list[Event]]:
    """The default runner: each program in its own thread with its own event loop, started together."""
    start = threading.Barrier(len(programs)) if programs else None
    results: list[list[Event]] = [[] for _ in programs]
    errors: list[BaseException] = []

    def body(position: int, program: ClientProgram) -> None:
        try:
            if start is not None:
                start.wait(_HANG_BOUND)
            results[position] = asyncio.run(run_client(program, store))
        except BaseException as error:  # re-raised in the caller below
            errors.append(error)

    threads = [
        threading.Thread(target=body, args=(i, p), name=f"t9-{p.client}", daemon=True)
        for i, p in enumerate(programs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(_HANG_BOUND)
    hung = [thread.name for thread in threads if thread.is_alive()]
    if hung:
        raise RuntimeError(
            f"T9 client thread(s) {hung} still running after {_HANG_BOUND:g} s: the store hangs"
        )
    if errors:
        raise errors[0]
    return results


# -- running and exploring workloads -------------------------------------------------------------------------


@dataclass
class WorkloadRun:
    """One run of a workload: its whole history and the violations found in it."""

    history: list[Event]
    violations: list[Violation]
    notes: list[str]


ClientsRunner = Callable[[Sequence[ClientProgram]], Awaitable[list[list[Event]]]]
"""Runs bound programs concurrently against the store under test; returns each client's events."""

WorkloadRunner = Callable[["Workload"], "WorkloadRun"]
"""Runs one workload against a fresh store and returns its checked history (``run_workload`` bound)."""


async def record_workload(workload: Workload, store: LightningStore, clients: ClientsRunner) -> WorkloadRun:
    """The set-up and the audit on ``store``, the clients through ``clients``; the history checked.

    ``store`` is the caller's (fresh, and closed by the caller); the set-up, the audit and every client
    program run against it, the clients concurrently, however ``clients`` runs them.
    """
    setup = await run_client(setup_program(workload), store)
    histories = await clients(bind_programs(workload, setup))
    audit = await run_client(AUDIT, store)
    history = [*setup, *(event for events in histories for event in events), *audit]
    analysis = analyse_history(history)
    return WorkloadRun(history, analysis.violations, analysis.notes)


def run_workload(
    workload: Workload, store_factory: Callable[[], LightningStore], run_clients: RunClients = run_in_threads
) -> WorkloadRun:
    """A fresh store; the set-up, the clients (through ``run_clients``), the audit; the history checked."""
    store = store_factory()

    async def drive() -> WorkloadRun:
        # One loop for every driver-side call (set-up, audit, close): a store client bound to the loop
        # it was first used on (an HTTP session) works; run_clients blocks, so it runs in a thread.
        try:
            return await record_workload(
                workload, store, lambda programs: asyncio.to_thread(run_clients, store, programs)
            )
        finally:
            await store.close()

    return asyncio.run(drive())


def _runner(
    store_factory: Callable[[], LightningStore] | None, run_clients: RunClients, runner: WorkloadRunner | None
) -> WorkloadRunner:
    if runner is not None:
        return runner
    if store_factory is None:
        raise ValueError("give a store_factory (and run_clients) or a runner")
    return functools.partial(run_workload, store_factory=store_factory, run_clients=run_clients)


def default_replay_command(encoding: str) -> str:
    """The replay line when the caller gives none (the kit passes one naming its ``--store``)."""
    return f"pytest -k T9 --conformance-replay {encoding}"


@dataclass
class WorkloadFinding:
    """The minimal failing workload: its history and violations, its encoding, and how often it reproduced."""

    workload: Workload
    history: list[Event]
    violations: list[Violation]
    encoding: str
    replay_command: str
    reproduced: int = 0
    reruns: int = 0
    rerun_violations: list[list[str]] = field(default_factory=list)

    @property
    def timing_dependent(self) -> bool:
        return self.reruns > 0 and self.reproduced == 0

    @property
    def contracts(self) -> list[str]:
        """The contracts broken, in catalogue order (T1 ... T7)."""
        return sorted({violation.contract for violation in self.violations})

    def report(self) -> str:
        """What a failure message shows: violations, reproduction, the workload, its timeline, the replay."""
        involved = [ref for violation in self.violations for ref in violation.operations]
        lines = [f"{len(self.violations)} violation(s):"]
        lines += [f"  {violation}" for violation in self.violations]
        lines.append(describe_reproduction(self.reproduced, self.reruns, "workload"))
        lines.append("minimal workload:")
        lines += [f"  {line}" for line in format_workload(self.workload).splitlines()]
        timeline = format_history(self.history, highlight=involved, title="its history (! = named above)")
        lines += [f"  {line}" for line in timeline.splitlines()]
        lines += ["replay:", f"  {self.replay_command}"]
        return "\n".join(lines)


@dataclass
class WorkloadExploration:
    """What one T9 exploration did: examples run, shrink runs, wall time, and the finding if any."""

    profile: str
    examples: int = 0
    shrink_runs: int = 0
    seconds: float = 0.0
    budget_hit: bool = False
    finding: WorkloadFinding | None = None


def _steps() -> st.SearchStrategy[Step]:
    claim = st.sampled_from(("claim:-1", "claim:0"))
    rollout = st.sampled_from(("claim:-1", "setup:0", "mine:-1", "setup:1", "claim:0"))
    attempt_status = st.sampled_from(_ATTEMPT_STATUSES)
    dequeue = st.just(Step("dequeue"))
    work = st.builds(Step, st.just("work"), st.just(""), attempt_status)
    # Earlier branches are what shrinking moves towards; claiming is drawn more often (most rules need it).
    return st.one_of(
        dequeue,
        work,
        st.builds(Step, st.just("update_attempt"), claim, attempt_status),
        st.builds(
            Step,
            st.just("wait"),
            st.sampled_from(("all", "claim:-1", "setup:0")),
            st.sampled_from((0.0, 0.02)),
        ),
        st.builds(Step, st.just("get_rollout"), rollout),
        dequeue,
        work,
        st.builds(Step, st.just("add_resources"), st.just(""), st.sampled_from((None, 0, 1))),
        st.just(Step("get_latest_resources")),
        st.builds(Step, st.just("enqueue"), st.just(""), st.sampled_from(tuple(CONFIGS))),
        st.builds(Step, st.just("update_rollout"), rollout, st.sampled_from(_ROLLOUT_STATUSES)),
        st.builds(Step, st.just("add_span"), st.sampled_from(("claim:-1", "claim:0", "bogus"))),
        st.builds(Step, st.just("heartbeat"), claim),
        st.builds(
            Step,
            st.just("query_rollouts"),
            st.just(""),
            st.sampled_from((None, "queuing", "running", "failed")),
        ),
        st.builds(Step, st.just("query_attempts"), rollout),
        st.builds(Step, st.just("get_latest_attempt"), rollout),
        st.builds(Step, st.just("query_spans"), claim),
        st.builds(Step, st.just("set_metadata"), rollout, st.integers(0, 3)),
        st.builds(Step, st.just("get_resources"), st.sampled_from(("seen:-1", "mine:-1", "seen:0"))),
        st.builds(Step, st.just("update_attempt"), st.just("bogus"), attempt_status),
        st.builds(Step, st.just("pause"), st.just(""), st.sampled_from((0.001, 0.005, 0.02))),
    )


def _sized(strategy: st.SearchStrategy[Any], most: int, least: int = 0) -> st.SearchStrategy[list[Any]]:
    # The count first (uniform), then the items: a plain list strategy mostly draws very short lists.
    return st.integers(least, most).flatmap(lambda count: st.lists(strategy, min_size=count, max_size=count))


def workloads(bounds: WorkloadBounds | None = None) -> st.SearchStrategy[Workload]:
    """Hypothesis strategy of T9 workloads; shrinks towards fewer clients, fewer and simpler steps."""
    bounds = bounds or WorkloadBounds()
    programs = _sized(_sized(_steps(), bounds.max_steps).map(tuple), bounds.max_clients, least=1).map(tuple)
    setup = _sized(st.sampled_from(tuple(CONFIGS)), bounds.max_setup).map(tuple)
    return st.builds(Workload, setup, st.integers(0, 2), programs)


def _rerun(finding: WorkloadFinding, runner: WorkloadRunner, times: int) -> None:
    for _ in range(times):
        again = runner(finding.workload)
        finding.reruns += 1
        if again.violations:
            finding.reproduced += 1
        finding.rerun_violations.append([str(violation) for violation in again.violations])


def explore(
    store_factory: Callable[[], LightningStore] | None = None,
    *,
    runner: WorkloadRunner | None = None,
    seed: int = 0,
    max_examples: int = 150,
    run_clients: RunClients = run_in_threads,
    replay_command: Callable[[str], str] = default_replay_command,
    reruns: int = 3,
    bounds: WorkloadBounds | None = None,
    budget: float | None = None,
    shrink_runs: int = 150,
    shrink_budget: float = 45.0,
    thorough: bool = False,
) -> WorkloadExploration:
    """T9's property: hypothesis-drawn workloads against fresh stores, every history checked.

    Each example runs on a store from ``store_factory`` through ``run_clients``, or through ``runner``
    when given (a runner of its own: another access path, clients in other processes). On failure the minimal
    workload (shrunk within ``shrink_runs``/``shrink_budget``) is re-run ``reruns`` times and returned
    with its history, violations, encoding and ``replay_command(encoding)``; one that never fails again
    is reported as timing-dependent (``WorkloadFinding.timing_dependent``), still as a failure.
    """
    run_one = _runner(store_factory, run_clients, runner)
    found = search(
        workloads(bounds),
        run_one,
        lambda outcome: bool(outcome.violations),
        encode,
        seed_value=seed,
        profile=THOROUGH_PROFILE if thorough else CI_PROFILE,
        max_examples=max_examples,
        budget=budget,
        shrink_runs=shrink_runs,
        shrink_budget=shrink_budget,
    )
    exploration = WorkloadExploration(
        profile=found.profile,
        examples=found.examples,
        shrink_runs=found.shrink_runs,
        seconds=found.seconds,
        budget_hit=found.budget_hit,
    )
    if found.failing is not None:
        workload, outcome = found.failing
        encoding = encode(workload)
        finding = WorkloadFinding(
            workload, outcome.history, outcome.violations, encoding, replay_command(encoding)
        )
        _rerun(finding, run_one, reruns)
        exploration.finding = finding
    return exploration


def replay(
    workload: Workload | str,
    store_factory: Callable[[], LightningStore] | None = None,
    *,
    run_clients: RunClients = run_in_threads,
    runner: WorkloadRunner | None = None,
    replay_command: Callable[[str], str] = default_replay_command,
    runs: int = 3,
) -> WorkloadFinding | None:
    """Run one workload (or its encoding) ``runs`` times; the finding when any run failed, else ``None``.

    The finding shows the first failing run's history; ``reproduced``/``reruns`` count every run.
    ``runner`` replaces ``store_factory`` and ``run_clients`` as in ``explore``.
    """
    run_one = _runner(store_factory, run_clients, runner)
    if isinstance(workload, str):
        workload = decode(workload)
    encoding = encode(workload)
    finding: WorkloadFinding | None = None
    outcomes: list[list[str]] = []
    failures = 0
    for _ in range(runs):
        outcome = run_one(workload)
        outcomes.append([str(violation) for violation in outcome.violations])
        if outcome.violations:
            failures += 1
            if finding is None:
                finding = WorkloadFinding(
                    workload, outcome.history, outcome.violations, encoding, replay_command(encoding)
                )
    if finding is not None:
        finding.reproduced, finding.reruns, finding.rerun_violations = failures, runs, outcomes
    return finding
