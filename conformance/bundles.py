"""Scripted bundles: module-level, picklable callables that run a ``Script`` and journal what they see.

``ScriptedAlgorithm`` and ``ScriptedRunner`` match the bundle protocols (``await algorithm(store, event)``,
``await runner(store, worker_id, event)``). All their state is plain picklable data (scripts, the journal
path, the gate directory, the store-fault plan), so a strategy may run them in a thread or ship them to a
child process under fork, spawn or forkserver. Each call journals ``start`` (with worker id, store and
event types, pid, parent pid, process group), one ``step`` per script step, ``saw-stop``, ``set-event``
(before ``event.set()``) and ``set-returned`` (after it), ``cancelled``, ``exception``, ``finally-ran``
and ``end``, and registers a SIGUSR1 stack dump for its process so a hang can be dumped from every
process.

Step details beyond ``scenarios.STEP_KINDS``: ``poll`` and ``wait_event`` with ``seconds=0`` wait until
the event is set, however long; their ``saw-stop`` carries ``ticks``, the times of the bundle's last
turns on its loop while it watched (each poll of ``is_set()``; while blocked in ``wait()``, each tick of
the loop that waits for it): the evidence that the bundle was running, not held up by the machine, for
as long as it did not see the event (L4). ``gate`` (``args["name"]``) also ends the bundle when the
event is set unless ``args["ignore_event"]``; ``ignore_event`` with ``args["on_cancel"] = {"type",
"message"}`` raises that error instead of ``CancelledError`` when cancelled; ``event_protocol`` journals
one ``event-protocol`` record with a finding per protocol promise (L5); ``probe`` journals the TCP
listening sockets of the bundle's session (R3).

Store operations (``Step("store", args={"op": ...})``):

- ``enqueue`` (``count``, ``config`` optional: ``RolloutConfig`` fields): enqueue ``count`` rollouts;
  their ids are journaled (``enqueued``).
- ``wait_all`` (``timeout``): ``wait_for_rollouts`` on every rollout this bundle enqueued; journals how
  many completed and their statuses (``waited``).
- ``work`` (``count`` optional): loop dequeue -> add_span -> update_attempt(succeeded) until the event is
  set or ``count`` rollouts are done; journals each completed rollout id (``completed``), so exactly-once
  can be counted across runners.
- ``dequeue``, ``start_rollout``, ``add_span``, ``complete`` (``status``), ``query``,
  ``add_resources``, ``get_latest_resources``, and ``call`` (``method``, ``kwargs``) for any other method.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import faulthandler
import importlib
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from conformance.compat import KitIncompatible, build_resources, build_span, require_method
from conformance.faults import gate_is_open
from conformance.journal import write_record
from conformance.perturbation import bundle_started
from conformance.scenarios import Script, Step, StoreFault

__all__ = [
    "ScriptedAlgorithm",
    "ScriptedBaseException",
    "ScriptedError",
    "ScriptedRunner",
    "collect_stack_dumps",
    "register_stack_dump",
    "resolve_exception_type",
]

_POLL_INTERVAL = 0.01  # event polling period of "poll"/"gate"/"work": 50x finer than L4's 0.5 s bound
_TICKS_KEPT = 64  # loop turns a watcher's saw-stop carries (L4 needs far fewer as its evidence)
_IDLE_INTERVAL = 0.005  # "work" loop back-off while the queue is empty
# The store methods each store op calls (checked before the op, so a missing one is named as such).
_STORE_OP_METHODS: dict[str, tuple[str, ...]] = {
    "enqueue": ("enqueue_rollout",),
    "wait_all": ("wait_for_rollouts",),
    "work": ("dequeue_rollout", "add_span", "update_attempt"),
    "dequeue": ("dequeue_rollout",),
    "start_rollout": ("start_rollout",),
    "add_span": ("start_rollout", "add_span"),
    "complete": ("update_attempt",),
    "query": ("query_rollouts",),
    "add_resources": ("add_resources",),
    "get_latest_resources": ("get_latest_resources",),
}

_stack_dump: tuple[int, TextIO] | None = None  # (pid, file) of this process's SIGUSR1 registration


class ScriptedError(Exception):
    """The kit's own error type for ``raise`` steps (``args["type"] = "ScriptedError"``)."""


class ScriptedBaseException(BaseException):
    """A ``BaseException`` that is neither ``Exception``, ``SystemExit`` nor ``KeyboardInterrupt`` (E6)."""


def register_stack_dump(directory: str) -> None:
    """Dump every thread's stack to ``<directory>/stacks-<pid>.txt`` on SIGUSR1 (once per process).

    A forked child inherits the parent's registration with the parent's file; it registers its own.
    """
    global _stack_dump
    pid = os.getpid()
    if _stack_dump is not None and _stack_dump[0] == pid:
        return
    if not hasattr(signal, "SIGUSR1"):
        return
    handle = open(os.path.join(directory, f"stacks-{pid}.txt"), "w")  # noqa: SIM115 - lives as long as the process
    faulthandler.register(signal.SIGUSR1, file=handle, all_threads=True, chain=False)
    _stack_dump = (pid, handle)


def collect_stack_dumps(directories: Mapping[int, str], wait: float) -> dict[int, str]:
    """Ask each process ``pid -> directory`` for its stacks (SIGUSR1: ``register_stack_dump``) and return
    what each wrote, ``""`` for none. Only processes that registered a dump may be asked: SIGUSR1 kills
    any other. The dumps are read once their sizes stop changing, or after ``wait`` seconds."""
    for pid in directories:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGUSR1)
    paths = {pid: os.path.join(directory, f"stacks-{pid}.txt") for pid, directory in directories.items()}
    sizes: dict[int, int] = {}
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        current = {pid: (os.path.getsize(path) if os.path.exists(path) else 0) for pid, path in paths.items()}
        if all(current.values()) and current == sizes:
            break
        sizes = current
        time.sleep(0.05)
    dumps = {}
    for pid, path in paths.items():
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                dumps[pid] = handle.read().strip()
        except OSError:
            dumps[pid] = ""
    return dumps


def resolve_exception_type(name: str) -> type[BaseException]:
    """A ``BaseException`` subclass from a builtin name, ``ScriptedError``, or ``module:Name``/dotted path."""
    if name == "ScriptedError":
        return ScriptedError
    if name == "ScriptedBaseException":
        return ScriptedBaseException
    candidate: Any = getattr(builtins, name, None)
    if candidate is None and (":" in name or "." in name):
        module_name, _, attribute = name.partition(":") if ":" in name else name.rpartition(".")
        with contextlib.suppress(ImportError):
            candidate = getattr(importlib.import_module(module_name), attribute, None)
    if not (isinstance(candidate, type) and issubclass(candidate, BaseException)):
        raise ValueError(f"exception type {name!r} is not a builtin exception, ScriptedError or module:Name")
    return candidate


def _qualname(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _raise_scripted(type_name: str, message: str) -> None:
    """Raise the scripted exception (a separate frame, so a transported traceback can be recognised)."""
    raise resolve_exception_type(type_name)(message)


class _FaultyStore:
    """The store as one bundle sees it when the scenario plans store faults for that bundle (S4, S5).

    Counts calls per method; the planned call of a method gets its delay and/or raises. Every other
    attribute is the wrapped store's own.
    """

    def __init__(self, store: Any, faults: Sequence[StoreFault], journal: Callable[..., Any]) -> None:
        self._store = store
        self._faults = tuple(faults)
        self._journal = journal
        self._calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        planned = [fault for fault in self._faults if fault.method == name]
        if not planned or not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            count = self._calls[name] = self._calls.get(name, 0) + 1
            for fault in planned:
                if fault.call != count:
                    continue
                if fault.delay > 0:
                    self._journal("store-delay", f"{name} call {count} +{fault.delay:g}s")
                    await asyncio.sleep(fault.delay)
                if fault.raises:
                    self._journal("store-fault", f"{name} call {count} raises {fault.raises}")
                    _raise_scripted(fault.raises, f"injected fault in store.{name} call {count}")
            return await attribute(*args, **kwargs)

        return call


class _Run:
    """One bundle call: the script interpreter with its journal and per-call store state."""

    def __init__(self, bundle: _ScriptedBundle, name: str, worker_id: int | None, store: Any, event: Any):
        self.bundle = bundle
        self.name = name
        self.worker_id = worker_id
        self.store = store
        self.event = event
        self.enqueued: list[str] = []
        self.current: Any = None  # the rollout (with attempt) this bundle works on
        self.spans = 0

    def journal(self, kind: str, detail: str = "", data: dict[str, Any] | None = None) -> None:
        write_record(self.bundle.journal_path, self.name, kind, detail, data)

    def saw_stop(self, where: str, ticks: Sequence[float] = ()) -> None:
        self.journal("saw-stop", where, {"ticks": [round(t, 6) for t in ticks]} if ticks else None)

    async def run(self, steps: Sequence[Step]) -> None:
        for index, step in enumerate(steps):
            self.journal("step", f"{index} {step.kind}", {"seconds": step.seconds, "args": step.args})
            if await self.step(step):
                return

    async def step(self, step: Step) -> bool:
        """Run one step; ``True`` ends the script (the bundle returns)."""
        kind = step.kind
        if kind == "return":
            return True
        if kind == "sleep":
            await asyncio.sleep(step.seconds)
        elif kind == "poll":
            await self._poll(step.seconds)
        elif kind == "wait_event":
            await self._wait_event_in_thread(step.seconds)
        elif kind == "set_event":
            self.journal("set-event")
            self.event.set()
            self.journal("set-returned")
        elif kind == "store":
            return await self._store_op(step.args)
        elif kind == "raise":
            _raise_scripted(str(step.args.get("type", "ScriptedError")), str(step.args.get("message", "")))
        elif kind == "keyboard_interrupt":
            raise KeyboardInterrupt(str(step.args.get("message", "")))
        elif kind == "ignore_event":
            await self._ignore_event(step)
        elif kind == "event_protocol":
            await self._event_protocol()
        elif kind == "block":
            time.sleep(step.seconds)
            self.journal("unblocked")
        elif kind == "ignore_cancel":
            await self._ignore_cancel(step.seconds)
        elif kind == "exit":
            raise SystemExit(step.args.get("code", 3))
        elif kind == "gate":
            return await self._gate(str(step.args["name"]), watch_event=not step.args.get("ignore_event"))
        elif kind == "probe":
            self.journal("probe", "listening", {"listening": _listening_in_session()})
        return False

    async def _poll(self, seconds: float) -> bool:
        """Poll ``is_set()`` until set (``saw-stop``) or ``seconds`` pass (0: no limit)."""
        deadline = time.monotonic() + seconds if seconds > 0 else None
        ticks: deque[float] = deque(maxlen=_TICKS_KEPT)
        while True:
            ticks.append(time.monotonic())
            if self.event.is_set():
                break
            if deadline is not None and time.monotonic() >= deadline:
                self.journal("poll-timeout")
                return False
            await asyncio.sleep(_POLL_INTERVAL)
        ticks.pop()  # the poll that saw it
        self.saw_stop("poll", ticks)
        return True

    async def _wait_event_in_thread(self, seconds: float) -> None:
        """Block in ``event.wait(seconds)`` on a kit thread (the sync protocol) without blocking the loop."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()

        def settle(value: bool) -> None:
            if not done.done():
                done.set_result(value)

        def wait() -> None:
            woke = bool(self.event.wait(seconds if seconds > 0 else None))
            with contextlib.suppress(RuntimeError):  # the loop may be closed when the wait ends
                loop.call_soon_threadsafe(settle, woke)

        waiter = threading.Thread(target=wait, name=f"conformance-wait-{self.name}", daemon=True)
        waiter.start()
        ticks: deque[float] = deque(maxlen=_TICKS_KEPT)
        while not done.done():
            ticks.append(time.monotonic())
            await asyncio.wait({done}, timeout=_POLL_INTERVAL)
        if done.result():
            self.saw_stop("wait", ticks)
        else:
            self.journal("wait-timeout")

    async def _ignore_event(self, step: Step) -> None:
        """Await ``seconds`` blind to the event; ``args["on_cancel"]`` raises instead of ``CancelledError``
        (an error during the bundle's own cleanup, E4)."""
        try:
            await asyncio.sleep(step.seconds)
        except asyncio.CancelledError:
            replacement = step.args.get("on_cancel")
            if not replacement:
                raise
            self.journal("cancelled", "raising in cleanup")
            _raise_scripted(
                str(replacement.get("type", "ScriptedError")), str(replacement.get("message", ""))
            )

    async def _event_protocol(self) -> None:
        """L5: each protocol method against its promise; one ``event-protocol`` record with every finding."""
        event = self.event
        findings: list[dict[str, Any]] = []

        def note(name: str, ok: bool, observed: str) -> None:
            findings.append({"check": name, "ok": bool(ok), "observed": observed})

        def timed(call: Callable[[], Any]) -> tuple[Any, float]:
            started = time.monotonic()
            value = call()
            return value, time.monotonic() - started

        value, took = timed(event.is_set)
        note("is_set() is False before anyone set it", value is False, f"is_set() -> {value!r}")
        value, took = timed(lambda: event.wait(0.05))
        note("wait(0.05) returns False on timeout", value is False, f"wait(0.05) -> {value!r}")
        note("wait(0.05) waits about 0.05 s", 0.04 <= took <= 1.0, f"took {took:.3f} s")
        # A kit thread blocks in wait() while this loop keeps ticking, then set() from the loop wakes it.
        loop = asyncio.get_running_loop()
        woke: asyncio.Future[tuple[Any, float]] = loop.create_future()

        def deliver(value: tuple[Any, float]) -> None:
            if not woke.done():
                woke.set_result(value)

        def waiter() -> None:
            result = event.wait(5.0)
            at = time.monotonic()  # when the waiting thread woke, not when its loop noticed
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, (result, at))

        thread = threading.Thread(target=waiter, name=f"conformance-l5-{self.name}", daemon=True)
        thread.start()
        ticks = 0
        tick_until = time.monotonic() + 0.05
        while time.monotonic() < tick_until:
            await asyncio.sleep(0.005)
            ticks += 1
        note("the loop keeps running while another thread waits", ticks >= 3, f"{ticks} ticks in 0.05 s")
        set_at = time.monotonic()
        _, took = timed(event.set)
        note("set() returns at once", took < 0.5, f"set() took {took:.3f} s")
        try:
            result, at = await asyncio.wait_for(asyncio.shield(woke), 2.0)
            note("wait() returns True once set", result is True, f"wait(5.0) -> {result!r}")
            note("set() wakes a waiter within 0.5 s", at - set_at <= 0.5, f"woke after {at - set_at:.3f} s")
        except asyncio.TimeoutError:
            note("set() wakes a waiter within 0.5 s", False, "the waiting thread did not wake within 2 s")
        try:
            event.set()
            note(
                "set() is idempotent",
                event.is_set() is True,
                f"is_set() after set() twice -> {event.is_set()!r}",
            )
        except Exception as exc:
            note("set() is idempotent", False, f"second set() raised {type(exc).__name__}: {exc}")
        value, took = timed(lambda: event.wait(1.0))
        note(
            "wait() returns True at once while set",
            value is True and took < 0.5,
            f"-> {value!r} in {took:.3f} s",
        )
        event.clear()
        value = event.is_set()
        note("clear() resets the event", value is False, f"is_set() after clear() -> {value!r}")
        value, took = timed(lambda: event.wait(0.02))
        note("wait() times out again after clear()", value is False, f"wait(0.02) -> {value!r}")
        event.set()  # leave it set, so everyone stops as after any set()
        self.journal("event-protocol", "", {"findings": findings})

    async def _ignore_cancel(self, seconds: float) -> None:
        """Swallow cancellation for ``seconds``; then give up (re-raise) if cancelled meanwhile."""
        deadline = time.monotonic() + seconds
        cancelled = False
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                await asyncio.sleep(remaining)
            except asyncio.CancelledError:
                cancelled = True
                self.journal("cancel-ignored")
        if cancelled:
            raise asyncio.CancelledError

    async def _gate(self, name: str, *, watch_event: bool) -> bool:
        """Wait at gate ``name`` until the kit opens it; a set event ends the bundle unless ignored."""
        self.journal("gate", name)
        while not gate_is_open(self.bundle.gate_dir, name):
            if watch_event and self.event.is_set():
                self.saw_stop(f"gate {name}")
                return True
            await asyncio.sleep(_POLL_INTERVAL / 2)
        self.journal("gate-open", name)
        return False

    async def _store_op(self, args: dict[str, Any]) -> bool:
        op = str(args.get("op", ""))
        store = self.store
        for method in _STORE_OP_METHODS.get(op, (str(args.get("method", "")),) if op == "call" else ()):
            require_method(store, method)
        if op == "enqueue":
            count = int(args.get("count", 1))
            config = _rollout_config(args.get("config"))
            ids = []
            for index in range(count):
                rollout = await store.enqueue_rollout(input={"index": index, "by": self.name}, config=config)
                ids.append(rollout.rollout_id)
            self.enqueued.extend(ids)
            self.journal("enqueued", f"{count} rollouts", {"ids": ids})
        elif op == "wait_all":
            timeout = args.get("timeout")
            done = await store.wait_for_rollouts(rollout_ids=list(self.enqueued), timeout=timeout)
            statuses = {rollout.rollout_id: rollout.status for rollout in done}
            self.journal(
                "waited",
                f"{len(done)}/{len(self.enqueued)} terminal",
                {"asked": len(self.enqueued), "statuses": statuses},
            )
        elif op == "work":
            return await self._work(args.get("count"))
        elif op == "dequeue":
            self.current = await store.dequeue_rollout()
            self.journal("dequeued", self.current.rollout_id if self.current is not None else "none")
        elif op == "start_rollout":
            self.current = await store.start_rollout(input={"by": self.name})
            self.journal("started-rollout", self.current.rollout_id)
        elif op == "add_span":
            if self.current is None:
                self.current = await store.start_rollout(input={"by": self.name})
            await self._add_span(self.current)
            self.journal("span", self.current.rollout_id)
        elif op == "complete":
            if self.current is None:
                raise ValueError(f"{self.name}: store op 'complete' before any rollout was dequeued")
            status = str(args.get("status", "succeeded"))
            await store.update_attempt(
                self.current.rollout_id, self.current.attempt.attempt_id, status=status
            )
            self.journal("completed", self.current.rollout_id, {"status": status})
        elif op == "query":
            rollouts = await store.query_rollouts()
            self.journal("queried", f"{len(rollouts)} rollouts", {"statuses": [r.status for r in rollouts]})
        elif op == "add_resources":
            given = args.get("resources")
            resources = dict(given) if given is not None else build_resources("by", self.name)
            try:
                update = await store.add_resources(resources)
            except Exception as error:
                if type(error).__name__ != "ValidationError":  # pydantic's: the installed types refuse it
                    raise
                refusal = " ".join(str(error).split())
                raise KitIncompatible(
                    f"the store's types refuse the kit's resources {resources!r}: {refusal}"
                ) from None
            self.journal("resources", update.resources_id)
        elif op == "get_latest_resources":
            update = await store.get_latest_resources()
            self.journal("resources", update.resources_id if update is not None else "none")
        elif op == "call":
            method = str(args["method"])
            value = await getattr(store, method)(**dict(args.get("kwargs", {})))
            self.journal("called", method, {"result": repr(value)[:200]})
        else:
            raise ValueError(f"{self.name}: unknown store op {op!r}")
        return False

    async def _work(self, count: Any) -> bool:
        """Claim and complete rollouts until the event is set (bundle ends) or ``count`` are done."""
        limit = None if count is None else int(count)
        done = 0
        while limit is None or done < limit:
            if self.event.is_set():
                self.saw_stop("work")
                return True
            attempted = await self.store.dequeue_rollout()
            if attempted is None:
                await asyncio.sleep(_IDLE_INTERVAL)
                continue
            await self._add_span(attempted)
            await self.store.update_attempt(
                attempted.rollout_id, attempted.attempt.attempt_id, status="succeeded"
            )
            done += 1
            self.journal(
                "completed",
                attempted.rollout_id,
                {"attempt_id": attempted.attempt.attempt_id, "worker_id": self.worker_id},
            )
        return False

    async def _add_span(self, attempted: Any) -> None:
        self.spans += 1
        span_id = f"{self.name.replace(' ', '-')}-{os.getpid()}-{self.spans}"
        span = build_span(attempted.rollout_id, attempted.attempt.attempt_id, span_id, "conformance")
        await self.store.add_span(span)


def _rollout_config(fields: Any) -> Any:
    """The ``RolloutConfig`` an ``enqueue`` step asks for (``args["config"]``: its fields), else ``None``."""
    if fields is None:
        return None
    from agentlightning.types import RolloutConfig

    return RolloutConfig(**dict(fields))


def _listening_in_session() -> list[dict[str, Any]]:
    """TCP sockets in LISTEN state held by any process of this process's session (for R3)."""
    import psutil

    session = os.getsid(0)
    found: list[dict[str, Any]] = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) != session:
                continue
            connections = process.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            continue
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN and conn.laddr:
                found.append({"pid": process.pid, "host": conn.laddr.ip, "port": conn.laddr.port})
    return found


class _ScriptedBundle:
    """Shared state and call path of the scripted bundles (plain data, so it pickles anywhere)."""

    def __init__(
        self,
        journal_path: str,
        gate_dir: str | None = None,
        store_faults: Sequence[StoreFault] = (),
        hold_gate: str | None = None,
    ) -> None:
        self.journal_path = journal_path
        self.gate_dir = gate_dir or os.path.dirname(journal_path)
        self.store_faults = tuple(store_faults)
        self.hold_gate = hold_gate  # when set, wait at this gate before "start" (faults "before start")

    async def _call(self, name: str, worker_id: int | None, script: Script, store: Any, event: Any) -> None:
        register_stack_dump(os.path.dirname(self.journal_path))
        run = _Run(self, name, worker_id, store, event)
        outcome = "returned"
        try:
            if self.hold_gate is not None:
                run.journal("held", self.hold_gate)
                while not gate_is_open(self.gate_dir, self.hold_gate):
                    await asyncio.sleep(_POLL_INTERVAL / 2)
            run.journal("start", "", _start_data(worker_id, store, event))
            await bundle_started(name)  # the bundle's first await: a racing point when perturbed
            faults = [fault for fault in self.store_faults if fault.bundle == name]
            if faults:
                run.store = _FaultyStore(store, faults, run.journal)
            await run.run(script.steps)
        except asyncio.CancelledError:
            outcome = "cancelled"
            run.journal("cancelled")
            raise
        except KitIncompatible as exc:  # the kit's own step cannot run here: a set-up error, named
            outcome = "kit-incompatible"
            run.journal("kit-incompatible", str(exc))
            raise
        except BaseException as exc:
            outcome = f"raised {_qualname(exc)}"
            run.journal("exception", f"{_qualname(exc)}: {exc}")
            raise
        finally:
            run.journal("finally-ran")
            run.journal("end", outcome)


def _start_data(worker_id: int | None, store: Any, event: Any) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "worker_id_type": type(worker_id).__name__,
        "store_type": f"{type(store).__module__}.{type(store).__qualname__}",
        "store_id": id(store),
        "store_is_none": store is None,
        "event_type": f"{type(event).__module__}.{type(event).__qualname__}",
        "event_ok": all(callable(getattr(event, name, None)) for name in ("set", "clear", "is_set", "wait")),
        "ppid": os.getppid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
    }


class ScriptedAlgorithm(_ScriptedBundle):
    """The algorithm bundle: runs ``script`` once per call, journaling as ``algorithm``."""

    def __init__(
        self,
        script: Script,
        journal_path: str,
        gate_dir: str | None = None,
        store_faults: Sequence[StoreFault] = (),
        hold_gate: str | None = None,
    ) -> None:
        super().__init__(journal_path, gate_dir, store_faults, hold_gate)
        self.script = script

    async def __call__(self, store: Any, event: Any) -> None:
        await self._call("algorithm", None, self.script, store, event)

    def __repr__(self) -> str:
        return f"ScriptedAlgorithm({len(self.script.steps)} steps)"


class ScriptedRunner(_ScriptedBundle):
    """The runner bundle: worker ``i`` runs ``scripts[i]`` (or the single script), journaled as ``runner i``.

    (A list of one script is used by every worker.)
    """

    def __init__(
        self,
        scripts: Sequence[Script],
        journal_path: str,
        gate_dir: str | None = None,
        store_faults: Sequence[StoreFault] = (),
        hold_gate: str | None = None,
    ) -> None:
        super().__init__(journal_path, gate_dir, store_faults, hold_gate)
        self.scripts = tuple(scripts) or (Script(),)

    def script_for(self, worker_id: int) -> Script:
        if len(self.scripts) == 1:
            return self.scripts[0]
        if isinstance(worker_id, int) and 0 <= worker_id < len(self.scripts):
            return self.scripts[worker_id]
        return Script()  # an out-of-range worker id runs nothing; L1 reports the id itself

    async def __call__(self, store: Any, worker_id: int, event: Any) -> None:
        await self._call(f"runner {worker_id}", worker_id, self.script_for(worker_id), store, event)

    def __repr__(self) -> str:
        return f"ScriptedRunner({len(self.scripts)} scripts)"
