"""The sandbox: every scenario runs ``execute()`` in a fresh process of its own session, never in pytest.

A *zygote* (one per pytest process, started with ``subprocess``) pre-imports the kit, agentlightning when
present and each target's strategy and store modules, freezes its heap for the garbage collector, and
forks one *scenario process* per ``run_scenario`` call. The zygote is single-threaded (forking is safe),
is a child subreaper (orphans of a scenario are reparented to it and reaped, never left as zombies) and
reports each scenario process's exit status.

The scenario process makes itself a session leader, gets a private TMPDIR and default signal
dispositions, builds the strategy and the store, opens the cluster connection the strategy expects its
caller to hold (``conformance.caller_connection``, if it declares one), snapshots its resources, runs
``execute()`` with the scripted bundles (``scenario.repeat`` times), captures the outcome, settles and
snapshots again, writes its result file and leaves with ``os._exit``.

The observer (``run_scenario``, in the pytest process) tails the journal to deliver external faults at
their gates, enforces the hang bound (dumping every thread's stack of every journaled process, then
killing the whole group with SIGKILL), collects survivors and the group's stderr, and returns the
``ScenarioResult``. ``run_call`` runs any picklable call the same way (the store suite's checks: section
T), with the same isolation, hang bound and stacks, and returns a ``CallResult``. ``shutdown_sandboxes``
stops the zygote (also registered with ``atexit``).

``ScenarioResult.measurements`` keys: ``repeat_counts`` (threads/fds/children/rss after each repeat,
R6), ``returned_value`` (repr of a non-None return), ``strategy_class``, ``caller_store_id``,
``late_signals`` (SIGINTs that arrived after ``execute()`` finished), ``orphans`` (F4: worker pid ->
seconds it outlived its killed parent, ``None`` = still alive at the end of the watch), ``survivors``
(processes alive after the scenario process exited; also merged into ``leaks.processes``),
``fault_errors``, ``observer_wall``, ``settle_seconds`` (the settle window actually used),
``cleanup_seconds`` (observer: helpers' exit, survivors, kill).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import gc
import os
import pickle
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from conformance import leaks
from conformance.bundles import ScriptedAlgorithm, ScriptedRunner, collect_stack_dumps, register_stack_dump
from conformance.caller_connection import connection_state, open_caller_connection
from conformance.faults import BEFORE_START_GATE, FaultDriver
from conformance.journal import held_open, read_journal, write_record
from conformance.perturbation import installed
from conformance.remote_resources import RemoteProbe, probe_of, remote_leftovers
from conformance.scenarios import (
    ExceptionInfo,
    JournalRecord,
    LeakReport,
    Scenario,
    ScenarioResult,
    Target,
)
from conformance.signal_defaults import restore_default_signals
from conformance.verdicts import SetupError

__all__ = ["CallResult", "SandboxError", "run_call", "run_scenario", "shutdown_sandboxes"]

_HEADER = struct.Struct(">I")
_FAULT_POLL = 0.003  # journal tail period while faults wait for their gates
_ZYGOTE_START_TIMEOUT = 60.0
_EXIT_WAIT = 10.0  # after SIGKILL of a group, how long the zygote may take to report the exit
_STACK_WAIT = 2.0  # how long hung processes get to write their stack dumps
_REPEAT_SETTLE = 1.0  # per-repeat settle (R6) before the counts are recorded
_F4_WATCH = 5.0  # seconds (scaled) the observer watches workers after their parent was killed
# The stdlib's forkserver and resource tracker exit on their own once the scenario process is gone, but
# a forkserver that preloaded a large module spends its interpreter shutdown freeing it: on a loaded
# machine that alone took over two seconds. A hang bound, not a settle window: the wait ends when they do.
_HELPER_EXIT_WAIT = 15.0
_STDERR_KEEP = 64 * 1024


class SandboxError(SetupError):
    """The sandbox itself failed (zygote died, target could not be built): not a strategy verdict."""


@dataclass(frozen=True)
class CallResult:
    """What became of one ``run_call``: the value returned, the exception raised, or a hang or crash.

    ``stacks`` holds every thread of every journaled process when the call hung; ``survivors`` the
    processes of the call still running after it returned (killed by the observer).
    """

    outcome: Literal["returned", "raised", "hang", "crashed"]
    value: Any = None
    exception: ExceptionInfo | None = None
    journal: tuple[JournalRecord, ...] = ()
    stacks: str = ""
    stderr: str = ""
    exit_status: int | None = None
    survivors: tuple[str, ...] = ()
    duration: float = 0.0
    hang_bound: float = 0.0  # seconds, scaled, after which the call was killed
    measurements: dict[str, Any] = field(default_factory=dict)


# -- framing -------------------------------------------------------------------------------------------


def _send(fd: int, message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    data = _HEADER.pack(len(payload)) + payload
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _read_exact(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError("sandbox pipe closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _receive(fd: int) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    return pickle.loads(_read_exact(fd, size))


# -- the zygote (its own process) ------------------------------------------------------------------------


def _become_subreaper() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _preimport(target: Target, preload: Sequence[str] = ()) -> None:
    """Import what the sandbox processes will need, so each fork starts warm. Errors surface later."""
    import importlib

    from conformance.target import resolve_store_factory, resolve_strategy_class

    if target.strategy:
        with contextlib.suppress(Exception):
            resolve_strategy_class(target.strategy)
    with contextlib.suppress(Exception):
        resolve_store_factory(target.store_factory)
    for name in preload:
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def _zygote_main() -> None:
    """Serve fork requests on the protocol pipe until it closes (pytest ended, even without atexit)."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # a stray print of an imported module must not corrupt the protocol
    os.close(devnull)
    _become_subreaper()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd sees SIGCHLD
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pytest process decides; Ctrl+C goes to pytest

    init = _receive(proto_in)
    sys.path[:] = init["sys_path"]
    os.chdir(init["cwd"])
    import asyncio  # noqa: F401 - warm imports shared by every scenario process
    import multiprocessing  # noqa: F401

    import conformance.target  # noqa: F401

    with contextlib.suppress(ImportError):
        import agentlightning.execution.events
        import agentlightning.store.base
        import agentlightning.types  # noqa: F401
    warmed: set[tuple[str, str, tuple[str, ...]]] = set()
    running: set[int] = set()
    _send(proto_out, ("ready", os.getpid()))

    while True:
        try:
            readable, _, _ = select.select([proto_in, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
            _reap(running, proto_out)
        if proto_in not in readable:
            continue
        try:
            message = _receive(proto_in)
        except EOFError:
            message = ("stop",)
        if message[0] == "stop":
            for pid in running:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            if init.get("root"):  # also when pytest died without its atexit: no scratch dir is left
                shutil.rmtree(init["root"], ignore_errors=True)
            os._exit(0)
        request = message[1]
        target: Target = request["target"]
        preload: tuple[str, ...] = tuple(request.get("preload", ()))
        key = (target.strategy, target.store_factory, preload)
        if key not in warmed:
            _preimport(target, preload)
            warmed.add(key)
        if threading.active_count() != 1:
            _send(proto_out, ("error", f"importing {target.strategy!r} started threads; cannot fork safely"))
            continue
        gc.freeze()  # the heap so far is shared copy-on-write and never rescanned by the child's gc
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                for fd in (proto_in, proto_out, wake_r, wake_w):
                    os.close(fd)
                signal.set_wakeup_fd(-1)
                code = _call_main(request) if "call" in request else _scenario_main(request)
            except BaseException:
                with contextlib.suppress(Exception):
                    traceback.print_exc()
                    sys.stderr.flush()
            os._exit(code)
        running.add(pid)
        _send(proto_out, ("forked", pid))


def _reap(running: set[int], proto_out: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in running:  # orphans adopted as subreaper are reaped silently
            running.discard(pid)
            _send(proto_out, ("exit", pid, os.waitstatus_to_exitcode(status)))


# -- the scenario process --------------------------------------------------------------------------------


def _redirect_stdio(directory: str) -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    for number, name in ((1, "stdout.txt"), (2, "stderr.txt")):
        fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, number)
        os.close(fd)


def _exception_info(exc: BaseException, depth: int = 0) -> ExceptionInfo:
    kind = type(exc)
    cause = (
        exc.__cause__
        if exc.__cause__ is not None
        else (None if exc.__suppress_context__ else exc.__context__)
    )
    return ExceptionInfo(
        type_name=f"{kind.__module__}.{kind.__qualname__}",
        message=str(exc),
        traceback="".join(traceback.format_exception(kind, exc, exc.__traceback__)),
        notes=tuple(str(note) for note in (getattr(exc, "__notes__", None) or ())),
        cause=_exception_info(cause, depth + 1) if cause is not None and depth < 8 else None,
    )


def _settle_counts(
    baseline: leaks.Snapshot, window: float, remote: RemoteProbe | None = None
) -> dict[str, int]:
    """R6 figures after one repeat, polled briefly towards the baseline (slow teardown is not growth).

    Remote resources the strategy reports alive count as children.
    """
    deadline = time.monotonic() + window
    while True:
        snapshot = leaks.take_snapshot()
        figures = leaks.counts(snapshot)
        figures["children"] += len(remote_leftovers(remote))
        base = leaks.counts(baseline)
        settled = all(figures[key] <= base[key] for key in ("threads", "fds", "children"))
        if settled or time.monotonic() >= deadline:
            return figures
        time.sleep(0.01)


def _enter_sandbox(request: dict[str, Any]) -> str:
    """What every sandbox process does first: its own session, stdio to files, default signal
    dispositions, a private TMPDIR, stack dumps on SIGUSR1. Returns the private TMPDIR."""
    os.setsid()
    directory: str = request["dir"]
    _redirect_stdio(directory)
    restore_default_signals()
    tmpdir = os.path.join(directory, "t")
    os.environ["TMPDIR"] = tmpdir
    tempfile.tempdir = None
    # Spawned children start with default warning filters; make theirs report leaked resources too.
    os.environ["PYTHONWARNINGS"] = "always::ResourceWarning"
    import faulthandler

    faulthandler.enable(file=sys.stderr, all_threads=True)
    register_stack_dump(directory)
    return tmpdir


def _call_main(request: dict[str, Any]) -> int:
    """Run one ``run_call`` in this (forked) process; its value or exception goes to ``result.pkl``."""
    _enter_sandbox(request)
    import random

    random.seed(request["seed"])
    function, args = request["call"]
    try:
        result: dict[str, Any] = {"outcome": "returned", "value": function(*args)}
    except BaseException as exc:
        result = {"outcome": "raised", "exception": _exception_info(exc)}
    try:
        _write_result(request["dir"], result)
    except Exception as exc:  # a value that does not pickle is the call's error, not a lost result
        _write_result(request["dir"], {"outcome": "raised", "exception": _exception_info(exc)})
    _run_exit_finalizers()
    return 0


def _scenario_main(request: dict[str, Any]) -> int:
    """Run one scenario in this (forked) process; the result goes to ``result.pkl``. Never returns early."""
    tmpdir = _enter_sandbox(request)
    directory: str = request["dir"]
    journal_path: str = request["journal"]
    target: Target = request["target"]
    scenario: Scenario = request["scenario"]
    scale: float = request["timeout_scale"]
    import random

    random.seed(request["seed"])
    result: dict[str, Any] = {}
    try:
        if target.start_method:
            import multiprocessing

            multiprocessing.set_start_method(target.start_method, force=True)
        from conformance.target import build_store, build_strategy

        options = dict(target.options)
        options.setdefault("n_runners", scenario.n_runners)
        strategy = build_strategy(dataclasses.replace(target, options=options))
        store = build_store(target)
        connection = open_caller_connection(strategy)  # the caller's own cluster connection, if any (R7)
    except BaseException as exc:
        result["setup_error"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        _write_result(directory, result)
        return 0
    hold = BEFORE_START_GATE if any(fault.after == BEFORE_START_GATE for fault in scenario.faults) else None
    gate_dir = directory
    algorithm = ScriptedAlgorithm(scenario.algorithm, journal_path, gate_dir, scenario.store_faults, hold)
    scripts = tuple(scenario.runner_script(i) for i in range(scenario.n_runners)) if scenario.runners else ()
    runner = ScriptedRunner(scripts, journal_path, gate_dir, scenario.store_faults, hold)
    write_record(
        journal_path,
        "kit",
        "sandbox-ready",
        type(strategy).__qualname__,
        {"store_id": id(store), "store_type": f"{type(store).__module__}.{type(store).__qualname__}"},
    )

    journal_held = held_open(journal_path)
    journal_held.__enter__()  # before the first leak snapshot; closed after the last one
    state_before = {**leaks.caller_state(), **connection_state(connection)}
    collector = leaks.Collector()
    collector.__enter__()
    before = leaks.take_snapshot(tmpdir, loops=True)
    durations: list[float] = []
    repeat_counts: list[dict[str, int]] = []
    outcome = "returned"
    info: ExceptionInfo | None = None
    returned_value: str | None = None
    late_signals = 0
    state_after: dict[str, Any] = {}
    perturbed = installed(scenario.perturbation)
    perturbation = perturbed.__enter__()  # left once every run has ended, before the leak snapshots
    if scenario.perturbation is not None:
        write_record(journal_path, "kit", "perturbation", repr(scenario.perturbation))
    for index in range(max(1, scenario.repeat)):
        write_record(journal_path, "kit", "execute-start", f"run {index + 1}/{scenario.repeat}")
        started = time.monotonic()
        ended: float | None = None
        caught: BaseException | None = None
        try:
            value = strategy.execute(algorithm, runner, store)
            ended = time.monotonic()
            if value is not None:
                returned_value = repr(value)[:200]
        except BaseException as exc:
            caught = exc
        while True:
            # A SIGINT the observer sent just as execute() finished lands here, in the sandbox, not in
            # the strategy: count it and carry on, so the report is never cut short. Formatting the
            # exception happens inside this guard too (K5: a fast strategy restores the default handler
            # and the kit's second SIGINT may land while the traceback is being rendered).
            try:
                if ended is None:
                    ended = time.monotonic()
                if caught is not None and info is None:
                    outcome, info = "raised", _exception_info(caught)
                if len(durations) == index:
                    durations.append(ended - started)
                write_record(
                    journal_path, "kit", "execute-end", outcome, {"type": info.type_name if info else ""}
                )
                break
            except KeyboardInterrupt:
                late_signals += 1
        if outcome != "returned":
            break
        if scenario.repeat > 1:
            repeat_counts.append(_settle_counts(before, _REPEAT_SETTLE * scale, probe_of(strategy)))
    perturbed.__exit__(None, None, None)  # every patched racing point is the original again
    if perturbation is not None:
        write_record(journal_path, "kit", "perturbation-removed", perturbation.summary())
    while not state_after:
        try:
            state_after = {**leaks.caller_state(), **connection_state(connection)}
        except KeyboardInterrupt:
            late_signals += 1
    while True:
        try:
            # No later SIGINT (K5's second one, a terminal) may cut the report short; R7 is recorded.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            break
        except KeyboardInterrupt:
            late_signals += 1
    settle_started = time.monotonic()
    report, _ = leaks.settle(
        before,
        window=scenario.settle * scale,
        tmpdir=tmpdir,
        collector=collector,
        state_before=state_before,
        state_after=state_after,
        remote=probe_of(strategy),
    )
    with contextlib.suppress(Exception):
        collector.__exit__(None, None, None)
    journal_held.__exit__(None, None, None)
    if scenario.inspect_caller_store:  # S3, S6: after the leak snapshot, on purpose
        from conformance.store_snapshot import describe_caller_store

        result["caller_store"] = describe_caller_store(store, timeout=10.0 * scale)
    result.update(
        outcome=outcome,
        exception=info,
        durations=tuple(durations),
        leaks=report,
        helper_pids=sorted(leaks.stdlib_helper_pids()),
        measurements={
            "repeat_counts": repeat_counts,
            "returned_value": returned_value,
            "strategy_class": f"{type(strategy).__module__}.{type(strategy).__qualname__}",
            "caller_store_id": id(store),
            "late_signals": late_signals,
            "settle_seconds": time.monotonic() - settle_started,
        },
    )
    _write_result(directory, result)
    _run_exit_finalizers()
    return 0


def _run_exit_finalizers() -> None:
    """What a normal interpreter exit would do for multiprocessing objects still alive in this process
    (semaphores unlink and unregister themselves), which ``os._exit`` skips: without it, the resource
    tracker would report every live semaphore as leaked. Real leaks (never-unlinked shared memory,
    objects of a killed worker) are still reported."""
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        with contextlib.suppress(Exception):
            gc.collect()
            util._run_finalizers(0)


def _write_result(directory: str, result: dict[str, Any]) -> None:
    path = os.path.join(directory, "result.pkl")
    with open(path + ".tmp", "wb") as handle:
        pickle.dump(result, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".tmp", path)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()


# -- the observer (pytest side) --------------------------------------------------------------------------


class _Zygote:
    def __init__(self, timeout_scale: float = 1.0) -> None:
        self.owner = os.getpid()
        self.root = tempfile.mkdtemp(prefix=f"cfk{os.getpid()}-")
        self.counter = 0
        log = open(os.path.join(self.root, "zygote.log"), "wb")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "import conformance.sandbox as s; s._zygote_main()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                close_fds=True,
                start_new_session=True,  # a terminal's Ctrl+C reaches pytest, which stops us in order
            )
        finally:
            log.close()
        assert self.process.stdin is not None and self.process.stdout is not None
        self.to_zygote = self.process.stdin.fileno()
        self.from_zygote = self.process.stdout.fileno()
        self.exits: dict[int, int] = {}
        _send(self.to_zygote, {"sys_path": list(sys.path), "cwd": os.getcwd(), "root": self.root})
        # Scaled like every other bound: importing a heavy target (upstream pulls litellm) on a loaded
        # machine takes longer, and a zygote that is merely slow is not a broken one.
        message = self.receive(_ZYGOTE_START_TIMEOUT * max(1.0, timeout_scale))
        if message is None or message[0] != "ready":
            self.stop()
            raise SandboxError(f"the sandbox zygote did not start: {message!r}; see {self.root}/zygote.log")

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def receive(self, timeout: float | None) -> Any:
        """The next message, or ``None`` when ``timeout`` passes first. Records exit reports."""
        readable, _, _ = select.select([self.from_zygote], [], [], timeout)
        if not readable:
            return None
        try:
            message = _receive(self.from_zygote)
        except EOFError as error:
            raise SandboxError(f"the sandbox zygote died; see {self.root}/zygote.log") from error
        if message[0] == "exit":
            self.exits[message[1]] = message[2]
        return message

    def send(self, message: Any) -> None:
        try:
            _send(self.to_zygote, message)
        except BrokenPipeError as error:
            raise SandboxError(f"the sandbox zygote died; see {self.root}/zygote.log") from error

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            _send(self.to_zygote, ("stop",))
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


_lock = threading.Lock()
_zygote: _Zygote | None = None


def _get_zygote(timeout_scale: float = 1.0) -> _Zygote:
    global _zygote
    if _zygote is not None and (_zygote.owner != os.getpid() or not _zygote.alive()):
        if _zygote.owner == os.getpid():
            _zygote.stop()
        _zygote = None  # a forked copy of another process's handle is not ours to use
    if _zygote is None:
        _zygote = _Zygote(timeout_scale)
    return _zygote


def shutdown_sandboxes() -> None:
    """Stop this process's zygote and remove its scenario directories (idempotent; also at exit)."""
    global _zygote
    with _lock:
        if _zygote is not None and _zygote.owner == os.getpid():
            _zygote.stop()
        _zygote = None


atexit.register(shutdown_sandboxes)


def run_scenario(
    target: Target, scenario: Scenario, *, timeout_scale: float = 1.0, seed: int = 0
) -> ScenarioResult:
    """Run ``scenario`` against ``target`` in a fresh sandbox process and report what happened.

    Blocks until the scenario process has exited (or was killed after ``scenario.hang_bound *
    timeout_scale`` seconds: outcome ``hang``, with the stacks of every thread of every process).
    Raises ``SandboxError`` when the sandbox itself cannot run the scenario (e.g. the target cannot be
    built), which is never a verdict on the strategy.
    """
    if timeout_scale <= 0:
        raise ValueError(f"timeout_scale must be > 0, got {timeout_scale!r}")
    FaultDriver(scenario, journal_path="", gate_dir="", scenario_pid=0)  # validates the gates up front
    with _lock:
        zygote = _get_zygote(timeout_scale)
        zygote.counter += 1
        # Short on purpose: strategies put AF_UNIX sockets (108-byte paths) under the private TMPDIR.
        directory = tempfile.mkdtemp(prefix=f"{zygote.counter:04d}-", dir=zygote.root)
        try:
            return _observe(zygote, directory, target, scenario, timeout_scale, seed)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def run_call(
    function: Callable[..., Any],
    args: Sequence[Any] = (),
    *,
    target: Target,
    hang_bound: float,
    timeout_scale: float = 1.0,
    seed: int = 0,
    preload: Sequence[str] = (),
) -> CallResult:
    """Run ``function(*args)`` in a fresh sandbox process (its own session and private TMPDIR) and report
    what it returned or raised.

    ``function`` and ``args`` are pickled to the zygote (``function`` by reference: a module-level
    callable), and so is the value returned. ``target`` names the modules to warm in the zygote (its store
    factory), ``preload`` further module names. ``args`` may carry ``SANDBOX_DIR`` and ``JOURNAL``, which
    are replaced by the call's directory and journal path. Past ``hang_bound * timeout_scale`` seconds the
    call is reported as ``hang`` with the stacks of every journaled process, and its whole group is killed.
    Raises ``SandboxError`` when the sandbox itself cannot run the call.
    """
    if timeout_scale <= 0:
        raise ValueError(f"timeout_scale must be > 0, got {timeout_scale!r}")
    with _lock:
        zygote = _get_zygote(timeout_scale)
        zygote.counter += 1
        directory = tempfile.mkdtemp(prefix=f"{zygote.counter:04d}-", dir=zygote.root)
        try:
            os.mkdir(os.path.join(directory, "t"))
            journal_path = os.path.join(directory, "journal.jsonl")
            open(journal_path, "wb").close()
            resolved = tuple(
                directory if arg is SANDBOX_DIR else journal_path if arg is JOURNAL else arg for arg in args
            )
            request = {
                "dir": directory,
                "journal": journal_path,
                "target": target,
                "call": (function, resolved),
                "preload": tuple(preload),
                "timeout_scale": timeout_scale,
                "seed": seed,
            }
            started = time.monotonic()
            bound = hang_bound * timeout_scale
            pid = _launch(zygote, request)
            hung, stacks = _supervise(zygote, pid, directory, journal_path, started + bound)
            exit_status = zygote.exits.pop(pid, None)
            duration = time.monotonic() - started
            survivors = _survivors(zygote)
            _kill_everything(zygote, pid)
            data = _load_result(directory)
            outcome: Literal["returned", "raised", "hang", "crashed"] = "crashed"
            if hung:
                outcome = "hang"
            elif data.get("outcome") in ("returned", "raised"):
                outcome = data["outcome"]
            return CallResult(
                outcome=outcome,
                value=data.get("value"),
                exception=data.get("exception"),
                journal=tuple(read_journal(journal_path)),
                stacks=stacks,
                stderr=_read_tail(os.path.join(directory, "stderr.txt")),
                exit_status=exit_status if outcome in ("crashed", "hang") else None,
                survivors=tuple(survivors),
                duration=duration,
                hang_bound=bound,
            )
        finally:
            shutil.rmtree(directory, ignore_errors=True)


class _Placeholder:
    """A marker in ``run_call``'s ``args``, replaced by the observer before the call is sent."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


SANDBOX_DIR: Any = _Placeholder("SANDBOX_DIR")
"""``run_call`` argument replaced by the call's private directory (stack dumps go there)."""
JOURNAL: Any = _Placeholder("JOURNAL")
"""``run_call`` argument replaced by the call's journal path."""


def _launch(zygote: _Zygote, request: dict[str, Any]) -> int:
    """Ask the zygote to fork a sandbox process for ``request``; its pid."""
    zygote.send(("run", request))
    while True:
        message = zygote.receive(_ZYGOTE_START_TIMEOUT)
        if message is None:
            raise SandboxError("the sandbox zygote did not fork a sandbox process in time")
        if message[0] == "error":
            raise SandboxError(message[1])
        if message[0] == "forked":
            return int(message[1])


def _supervise(
    zygote: _Zygote,
    pid: int,
    directory: str,
    journal_path: str,
    deadline: float,
    tick: Callable[[], bool] | None = None,
) -> tuple[bool, str]:
    """Wait until the sandbox process ``pid`` exits; past ``deadline``, dump every journaled process's
    stacks and kill the whole group. Returns (hung, stacks).

    ``tick`` runs on every wake-up; while it returns ``True`` (faults still waiting for their gates), the
    wait polls every few milliseconds instead of sleeping until the process exits.
    """
    try:
        while pid not in zygote.exits:
            now = time.monotonic()
            if now >= deadline:
                stacks = _dump_stacks(zygote, directory, pid, journal_path)
                _kill_everything(zygote, pid)
                _await_exit(zygote, pid)
                return True, stacks
            if tick is not None and tick():
                zygote.receive(min(_FAULT_POLL, deadline - now))
            else:
                zygote.receive(deadline - now)
    except BaseException:
        # pytest-timeout, Ctrl+C or a sandbox error in the observer: nothing of the sandbox may outlive us.
        _kill_everything(zygote, pid)
        with contextlib.suppress(BaseException):
            _await_exit(zygote, pid)
        raise
    return False, ""


def _observe(
    zygote: _Zygote, directory: str, target: Target, scenario: Scenario, scale: float, seed: int
) -> ScenarioResult:
    os.mkdir(os.path.join(directory, "t"))
    journal_path = os.path.join(directory, "journal.jsonl")
    open(journal_path, "wb").close()
    request = {
        "dir": directory,
        "journal": journal_path,
        "target": target,
        "scenario": scenario,
        "timeout_scale": scale,
        "seed": seed,
    }
    pid = _launch(zygote, request)
    started = time.monotonic()
    deadline = started + scenario.hang_bound * scale
    driver = FaultDriver(scenario, journal_path=journal_path, gate_dir=directory, scenario_pid=pid)
    from conformance.journal import JournalTailer

    tailer = JournalTailer(journal_path)

    def deliver_faults() -> bool:
        if not driver.active:
            return False
        tailer.poll()
        driver.feed(tailer.records)
        return True

    hung, stacks = _supervise(zygote, pid, directory, journal_path, deadline, deliver_faults)
    exit_status = zygote.exits.pop(pid, None)
    measurements: dict[str, Any] = {}
    if driver.parent_killed_at is not None:
        measurements["orphans"] = _watch_orphans(zygote, pid, journal_path, driver.parent_killed_at, scale)
    result_data = _load_result(directory)
    helper_pids = result_data.get("helper_pids", [])
    cleanup_started = time.monotonic()
    _await_helpers(helper_pids, max(scenario.settle, _HELPER_EXIT_WAIT) * scale)
    survivors = _survivors(zygote)
    _kill_everything(zygote, pid)
    measurements["cleanup_seconds"] = time.monotonic() - cleanup_started
    stderr = _read_tail(os.path.join(directory, "stderr.txt"))
    journal = tuple(read_journal(journal_path))
    if "setup_error" in result_data:
        raise SandboxError(f"cannot set up the scenario {scenario.name!r}:\n{result_data['setup_error']}")
    incompatible = next((record for record in journal if record.kind == "kit-incompatible"), None)
    if incompatible is not None:
        raise SetupError(f"the kit cannot drive this target in {scenario.name!r}: {incompatible.detail}")
    leak_report: LeakReport = result_data.get("leaks", LeakReport())
    leak_report = _merge_stderr(leak_report, stderr, survivors)
    measurements.update(result_data.get("measurements", {}))
    measurements["fault_errors"] = list(driver.errors)
    measurements["survivors"] = survivors
    measurements["observer_wall"] = time.monotonic() - started
    outcome: Literal["returned", "raised", "hang", "crashed"] = "crashed"
    if hung:
        outcome = "hang"
    elif result_data.get("outcome") in ("returned", "raised"):
        outcome = result_data["outcome"]
    durations = tuple(result_data.get("durations", ()))
    return ScenarioResult(
        scenario=scenario,
        outcome=outcome,
        duration=durations[-1] if durations else time.monotonic() - started,
        exception=result_data.get("exception"),
        journal=journal,
        leaks=leak_report,
        stacks=stacks,
        exit_status=exit_status if outcome in ("crashed", "hang") else None,
        stderr=stderr,
        durations=durations,
        measurements=measurements,
        caller_store=result_data.get("caller_store", {}),
    )


def _load_result(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, "result.pkl")
    try:
        with open(path, "rb") as handle:
            data = pickle.load(handle)
    except (OSError, EOFError, pickle.UnpicklingError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_tail(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _STDERR_KEEP))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def _journal_pids(journal_path: str) -> set[int]:
    return {record.pid for record in read_journal(journal_path)} - {os.getpid()}


def _alive(pid: int) -> bool:
    """Running (a zombie is dead: it only waits for its parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return "?"


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as handle:
                    children = [int(child) for child in handle.read().split()]
            except OSError:
                continue
            found.extend(children)
            stack.extend(children)
    return found


def _group_pids(zygote: _Zygote) -> list[int]:
    """Every live process of the scenario.

    The zygote is a child subreaper, so every process a scenario ever started stays among its
    descendants, whatever session or group it moved to: that subtree is the authority. A journaled pid
    outside it is gone (and possibly reused by a stranger): it is never signalled.
    """
    pids = set(_descendants(zygote.pid))  # the scenario process too, while it lives
    pids.discard(os.getpid())
    return sorted(p for p in pids if _alive(p))


def _survivors(zygote: _Zygote) -> list[str]:
    """Processes of the scenario still running after its scenario process exited."""
    return [f"pid {p} ({_cmdline(p)}) outlived the scenario process" for p in _group_pids(zygote)]


def _kill_everything(zygote: _Zygote, pid: int) -> None:
    """SIGKILL the scenario's group and every straggler, and wait (bounded) until they are gone."""
    victims = _group_pids(zygote)
    # The group first (one syscall, no process can fork its way out), but only while one of ours is
    # in it: an emptied group's id could by now belong to a stranger.
    if any(_pgid(p) == pid for p in victims):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    victims = _group_pids(zygote) or victims
    for other in victims:
        with contextlib.suppress(OSError):
            os.kill(other, signal.SIGKILL)
    deadline = time.monotonic() + _EXIT_WAIT
    delay = 0.001
    while any(_alive(p) for p in victims) and time.monotonic() < deadline:
        time.sleep(delay)  # SIGKILL is asynchronous: wait for the kernel to finish each victim
        delay = min(delay * 2, 0.05)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _await_exit(zygote: _Zygote, pid: int) -> None:
    deadline = time.monotonic() + _EXIT_WAIT
    while pid not in zygote.exits and time.monotonic() < deadline:
        zygote.receive(deadline - time.monotonic())


def _await_helpers(pids: list[int], window: float) -> None:
    """Let the resource tracker and forkserver exit on their own, so their warnings reach stderr."""
    deadline = time.monotonic() + window
    delay = 0.002
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _watch_orphans(
    zygote: _Zygote, pid: int, journal_path: str, killed_at: float, scale: float
) -> dict[str, float | None]:
    """F4: for each worker of a killed parent, seconds until it was gone (``None``: still alive)."""
    workers = [p for p in _journal_pids(journal_path) | set(_descendants(zygote.pid)) if p != pid]
    gone: dict[int, float | None] = {p: None for p in workers}
    deadline = time.monotonic() + _F4_WATCH * scale
    while time.monotonic() < deadline:
        ours = set(_descendants(zygote.pid))  # orphans are reparented to the zygote (subreaper)
        for worker in workers:
            if gone[worker] is None and not (worker in ours and _alive(worker)):
                gone[worker] = time.monotonic() - killed_at
        if all(value is not None for value in gone.values()):
            break
        time.sleep(0.01)
    return {str(worker): value for worker, value in gone.items()}


def _dump_stacks(zygote: _Zygote, directory: str, pid: int, journal_path: str) -> str:
    """SIGUSR1 to every journaled process (each registered a faulthandler dump) and collect the dumps.

    Processes of the scenario that never journaled (so never registered a dump: SIGUSR1 would kill
    them) are listed by pid and command line.
    """
    ours = {pid, *_descendants(zygote.pid)}
    # Only journaled processes registered a dump (SIGUSR1 would kill any other), and only ours.
    targets = sorted(p for p in {pid, *_journal_pids(journal_path)} if p in ours and _alive(p))
    cmdlines = {p: _cmdline(p) for p in targets}
    dumps = collect_stack_dumps({p: directory for p in targets}, _STACK_WAIT)
    parts = []
    silent = [p for p in _descendants(zygote.pid) if p not in targets and _alive(p)]
    for target in targets:
        dump = dumps[target] or "(no stack dump written)"
        parts.append(f"--- process {target} ({cmdlines[target]}) ---\n{dump}")
    parts.extend(f"--- process {p} ({_cmdline(p)}) --- (no stack: it never ran kit code)" for p in silent)
    return "\n".join(parts)


def _merge_stderr(report: LeakReport, stderr: str, survivors: list[str]) -> LeakReport:
    found = leaks.parse_stderr(stderr)
    named = " ".join(report.processes + report.zombies)
    extra_processes = tuple(s for s in survivors if f"pid {s.split()[1]} " not in named + " ")
    return dataclasses.replace(
        report,
        processes=report.processes + extra_processes,
        ipc=tuple(dict.fromkeys(report.ipc + tuple(found["ipc"]))),
        warnings=tuple(dict.fromkeys(report.warnings + tuple(found["warnings"]))),
        asyncio=tuple(dict.fromkeys(report.asyncio + tuple(found["asyncio"]))),
    )
