"""Worker processes for the process strategies: start, supervise, stop and reap them (one mechanism).

``WorkerProcesses`` starts each worker under a chosen start method (fork, spawn, forkserver); the child
runs one async callable in its own event loop and reports how it ended through a private pipe
(returned, raised: pickled with ``remote_errors``, or interrupted). The parent supervises without
polling ticks: ``wait()``/``wait_async()`` wake on a worker's exit sentinel, its report pipe, or the
shared ``MultiprocessingEvent``'s fd.

Stop escalation (``stop()``), each step bounded: set the event and give workers ``graceful_timeout`` to
return; then SIGINT (the child raises ``KeyboardInterrupt`` once: blocking code is interrupted, an idle
loop cancels its tasks, so ``finally`` blocks run); after ``terminate_timeout`` SIGTERM; after another
``terminate_timeout`` SIGKILL. Every child is reaped. A ``KeyboardInterrupt`` during ``stop()`` (a
second Ctrl+C) skips to the next step at once, and is re-raised after everything is reaped (K5).

Default start method (``start_method=None``): each worker is forked from the caller while the caller
has exactly one thread (``single_threaded``: the kernel's count, C libraries' threads included), else it
comes from the forkserver (spawn where there is none). A single-threaded process holds no lock another
thread could hold, so that fork has none of fork's deadlock hazard. Why fork when it is safe: a forked
worker runs the interpreter at the caller's own addresses, a forkserver's (a fresh exec, randomised
anew) elsewhere, and a worker and the caller thread serving it take turns on a core, sharing the CPU's
branch predictors and caches only where the addresses agree. On the ``ipc`` W1 loop (2 runners, 12
alternating pairs, load 12 on 2 cores) forkserver runners and their server threads each cost ~37% more
CPU per rollout (73 and 71 us against 53 and 52); with address randomisation off for both
(``setarch -R``) forkserver matches fork (52 us each), and forked workers whose heap pages were all made
private (no copy-on-write sharing) keep fork's figures: the addresses, not shared pages, nor CPU
placement (both pinned to one core, forkserver still costs more).

A worker whose callable raises sets the shared event itself, at once, so the others stop without waiting
for the parent; its report carries the moment it raised (``raised_at``), so a parent can tell which of
several failures came first even when their reports arrive in another order (E3).

A worker that dies of a signal or exits without reporting is turned into ``WorkerDied`` naming it and
its exit status (F1), as a process pool reports a broken worker.

Ctrl+C in a terminal signals the whole process group (K4). A child's SIGINT handler raises
``KeyboardInterrupt`` once and then ignores SIGINT, the child reports "interrupted" and exits quietly
(no traceback). SIGINT is blocked in the parent thread while it forks (fork, spawn), so a Ctrl+C during
start-up stays pending until the child has installed that handler. Under forkserver the forkserver
forks the child: when it preloads this module it blocks SIGINT in itself (it ignores SIGINT anyway), so
its children start with SIGINT blocked too. A caller's own processes forked by that same process-wide
forkserver get it unblocked again first thing in their bootstrap (an after-fork hook), so they see Ctrl+C
as they would without us.

Parent death (F4): two guards, because neither suffices alone. ``prctl(PR_SET_PDEATHSIG, SIGKILL)``
(Linux, via ctypes) makes the kernel kill the child even when it is stuck in C code holding the GIL,
but it follows the *thread* that forked the child and, under forkserver, the forkserver rather than
the caller. So each child also runs a watchdog thread blocked on a pipe whose only writer is the
caller; EOF there means the caller is gone, and the child SIGKILLs itself. Under fork the inherited
writer is closed first thing in the child, or it would keep its own watchdog from ever seeing EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import inspect
import logging
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import multiprocessing.util
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal, Protocol

from agentlightning import event_loops
from agentlightning.execution.events import MultiprocessingEvent
from agentlightning.execution.threads import claim_signal_wakeup, release_signal_wakeup, sigint_deferred
from agentlightning.remote_errors import dump_exception, load_exception

__all__ = [
    "START_METHODS",
    "WorkerDied",
    "WorkerOutcome",
    "WorkerProcesses",
    "default_start_method",
    "single_threaded",
    "start_forkserver",
    "start_method_now",
    "validate_start_method",
    "validate_timeout",
]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

logger = logging.getLogger(__name__)

START_METHODS: tuple[str, ...] = ("fork", "spawn", "forkserver")
"""The multiprocessing start methods a process strategy accepts."""

WorkerStatus = Literal["returned", "raised", "interrupted", "died", "stopped"]


class _Closable(Protocol):
    def close(self) -> None: ...


_EXIT_RETURNED = 0
_EXIT_RAISED = 1
_EXIT_INTERRUPTED = 128 + int(signal.SIGINT)  # the shell's convention for "ended by Ctrl+C"
_STRENGTH = {int(signal.SIGINT): 1, int(signal.SIGTERM): 2, int(signal.SIGKILL): 3}  # the escalation's order
_REAP_TIMEOUT = 5.0  # after SIGKILL only an uninterruptible kernel wait can delay the exit
# A worker still starting (imports, unpickling) when the grace runs out gets this long to reach its
# callable before the escalation goes on without it: a hang bound for a loaded machine, not a target.
_START_BOUND = 60.0
_EXIT_TEARDOWN_BOUND = 1.0  # a process whose sentinel closed is gone within this (or closed it itself)
_PR_SET_PDEATHSIG = 1
_STARTED = pickle.dumps(("started", None, None))


def default_start_method() -> str:
    """The safe start method here: forkserver where available (POSIX), else spawn.

    fork copies a process's locks in whatever state other threads hold them (the caller's, or a
    strategy's server thread), which can deadlock a child; forkserver forks from a clean single-threaded
    server, starts much faster than spawn once running, and is Python 3.14's own default on POSIX.
    """
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def single_threaded() -> bool:
    """Whether this process has exactly one thread now, by the kernel's count (``/proc/self/task``).

    Counts every thread, those started by C libraries included (``threading`` sees only its own);
    ``False`` where ``/proc`` is not there to ask (not Linux): then nobody can tell.
    """
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def start_method_now(start_method: str | None = None) -> str:
    """How a worker started now with ``start_method`` starts: that method, or for ``None`` fork while
    this process is single-threaded, else ``default_start_method()`` (see the module docstring)."""
    if start_method is not None:
        return start_method
    if single_threaded() and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return default_start_method()


def validate_start_method(value: object, parameter: str = "start_method") -> str:
    """``value`` if it names a start method available here; ``None`` means the default."""
    if value is None:
        return default_start_method()
    available = [m for m in START_METHODS if m in multiprocessing.get_all_start_methods()]
    if not isinstance(value, str) or value not in available:
        raise ValueError(f"{parameter} must be one of {', '.join(available)}; got {value!r}")
    return value


def validate_timeout(value: object, parameter: str) -> float:
    """``value`` as a float if it is a finite number of seconds >= 0, else ``ValueError`` naming it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{parameter} must be a finite number of seconds >= 0; got {value!r}")
    return float(value)


class WorkerDied(RuntimeError):
    """A worker process ended without reporting an outcome: killed by a signal, or ``os._exit``."""

    def __init__(self, name: str, pid: int | None, exitcode: int | None) -> None:
        self.name = name
        self.pid = pid
        self.exitcode = exitcode
        super().__init__(f"worker process {name!r} (pid {pid}) {_describe_exit(exitcode)}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.pid, self.exitcode))


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "did not exit"
    if exitcode < 0:
        try:
            signame = signal.Signals(-exitcode).name
        except ValueError:
            signame = f"signal {-exitcode}"
        return f"was killed by {signame} (exit status {exitcode})"
    return f"exited with status {exitcode} without reporting how its bundle ended"


@dataclass(frozen=True)
class WorkerOutcome:
    """How one worker ended, as seen by the parent.

    ``status``: ``returned`` (its callable returned), ``raised`` (``error`` is the exception, rebuilt
    with its original type; ``KeyboardInterrupt`` and ``SystemExit`` included), ``interrupted`` (it got
    a SIGINT the parent did not send, e.g. Ctrl+C; ``error`` is a ``KeyboardInterrupt``), ``died``
    (``error`` is ``WorkerDied``), ``stopped`` (ended after the parent signalled it; ``signalled``
    names the last signal; not an error). ``ended_at`` is ``time.monotonic()`` when the parent saw it;
    ``raised_at`` is ``time.monotonic()`` in the worker the moment its callable raised (the clock is
    system-wide, so failures of several workers can be put in the order they happened, E3).
    """

    name: str
    pid: int | None
    status: WorkerStatus
    exitcode: int | None
    error: BaseException | None
    signalled: int | None
    ended_at: float
    raised_at: float | None = None


@dataclass
class _Worker:
    name: str
    process: multiprocessing.process.BaseProcess
    report: multiprocessing.connection.Connection
    message: tuple[str, bytes | None, float | None] | None = None
    report_done: bool = False  # message read or EOF seen: stop watching the pipe (no spinning)
    started: bool = False  # the child reported that its callable is about to run
    started_at: float | None = None  # when the parent read that report (``time.monotonic()``)
    signalled: int | None = None


class WorkerProcesses:
    """A group of worker processes sharing one stop event; usable as a context manager.

    Typical use (parent side)::

        with WorkerProcesses(event, start_method="forkserver", graceful_timeout=1.0,
                             terminate_timeout=1.0) as workers:
            for i in range(n):
                workers.start(f"runner-{i}", run_runner, runner, store, i, event)
            while workers.running and not event.is_set():
                for outcome in workers.wait():
                    ...  # decide: an error sets the event
            outcomes = workers.stop()

    ``start(name, target, *args)`` runs ``await target(*args)`` in a new process; ``target`` and
    ``args`` must be picklable under spawn/forkserver. Not thread-safe: drive it from one thread (only
    ``hurry()`` may be called from another).
    ``start_method=None`` (the default) picks for each worker as it starts: fork while this process has a
    single thread (``single_threaded``), else ``default_start_method()`` (see the module docstring).
    ``preload``: modules the forkserver imports once, if it is not running yet, so that workers forked
    from it start without importing them again (it adds to multiprocessing's process-wide list).
    ``close_in_child``: objects of the caller with a ``close()`` (a listening socket) that a worker
    forked from it closes before anything else (see the module docstring).
    """

    def __init__(
        self,
        event: MultiprocessingEvent,
        *,
        start_method: str | None = None,
        graceful_timeout: float = 1.0,
        terminate_timeout: float = 1.0,
        preload: Sequence[str] = (),
        close_in_child: Sequence[_Closable] = (),
    ) -> None:
        self.start_method = None if start_method is None else validate_start_method(start_method)
        self.close_in_child = tuple(close_in_child)
        if self.start_method in (None, "forkserver") and preload:
            _extend_forkserver_preload(preload)
        self.graceful_timeout = validate_timeout(graceful_timeout, "graceful_timeout")
        self.terminate_timeout = validate_timeout(terminate_timeout, "terminate_timeout")
        self.event = event
        self._workers: dict[str, _Worker] = {}
        self._outcomes: list[WorkerOutcome] = []
        self._liveness: tuple[multiprocessing.connection.Connection, multiprocessing.connection.Connection]
        self._liveness = multiprocessing.Pipe(duplex=False)  # (reader for children, writer only we hold)
        # hurry()'s bytes, one per call from any thread; waits watch the read end. The lock keeps a late
        # hurry() from writing to a descriptor number that close() freed and something else reused.
        self._hurries = os.pipe()
        self._hurries_open = True
        self._hurry_lock = threading.Lock()
        self._hurries_taken = 0  # how many times a pending hurry() was consumed
        for fd in self._hurries:
            os.set_blocking(fd, False)
        self._closed = False

    # -- starting -------------------------------------------------------------------------------------

    def start(
        self,
        name: str,
        target: Callable[..., Awaitable[Any]],
        *args: Any,
        cleanup: Callable[[], Awaitable[Any]] | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        """Start worker ``name`` running ``await target(*args)`` in its own process and event loop.

        ``cleanup`` (e.g. a store client's ``close``) is awaited after ``target``, however it ended, on
        the same loop; its own failure is logged in the worker, never reported as the worker's.
        ``loop_factory`` (picklable: a module-level function such as ``event_loops.new_event_loop``)
        makes that loop; ``None`` runs them with ``asyncio.run``.
        """
        if self._closed:
            raise RuntimeError("WorkerProcesses is closed")
        if name in self._workers or any(o.name == name for o in self._outcomes):
            raise ValueError(f"worker name {name!r} is already used in this group")
        method = start_method_now(self.start_method)
        ctx: Any = multiprocessing.get_context(method)  # a concrete context
        report_reader, report_writer = ctx.Pipe(duplex=False)
        liveness_reader, liveness_writer = self._liveness
        child = _ChildConfig(
            name=name,
            report=report_writer,
            liveness=liveness_reader,
            # Under fork the child inherits our writer and more: it closes them (see the module docstring).
            inherited=(liveness_writer, *self.close_in_child) if method == "fork" else (),
            parent_pid=os.getpid(),
            check_parent_pid=method != "forkserver",
            event=self.event,
            cleanup=cleanup,
            loop_factory=loop_factory,
        )
        process = ctx.Process(target=_worker_main, args=(child, target, args), name=name)
        # Registered before it starts, so that an interrupt at any point leaves it in our books.
        self._workers[name] = _Worker(name, process, report_reader)
        # Ours: a Ctrl+C waits until the child is in our books and our end of its pipe is closed (the
        # handler runs on the main thread whichever thread the kernel gave the signal to, so only a
        # deferred handler holds it back here). The child's: under fork and spawn it inherits this
        # thread's signal mask, and SIGINT blocked there stays pending until it has installed its own
        # handler (see the module docstring); the mask is for the child, not for us.
        block_sigint = method in ("fork", "spawn")
        with sigint_deferred():
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if block_sigint else None
            try:
                process.start()
            except BaseException:
                if process.pid is None:  # never forked: forget it
                    del self._workers[name]
                    report_reader.close()
                raise
            finally:
                report_writer.close()
                if previous is not None:
                    signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    # -- supervising ----------------------------------------------------------------------------------

    @property
    def running(self) -> list[str]:
        """Names of the workers not yet seen to end, in start order."""
        return list(self._workers)

    @property
    def outcomes(self) -> list[WorkerOutcome]:
        """Outcomes of ended workers, in the order the parent saw them end."""
        return list(self._outcomes)

    def pid(self, name: str) -> int | None:
        """The pid of a running worker (for tests and fault injection)."""
        worker = self._workers.get(name)
        return worker.process.pid if worker else None

    def started(self, name: str) -> bool:
        """Whether running worker ``name`` has reported that its callable is about to run (read by
        ``wait()``); ``False`` while it starts up, and once it has ended."""
        worker = self._workers.get(name)
        return worker is not None and worker.started

    def wait(self, timeout: float | None = None, *, wake_on: Sequence[Any] = ()) -> list[WorkerOutcome]:
        """Block until a worker ends, the event is set, one of ``wake_on`` is readable, a ``hurry()`` is
        pending (at once while it is: ``stop()`` takes it), or ``timeout``.

        Returns the outcomes of workers that ended since the last call (maybe none). Event-driven:
        ``multiprocessing.connection.wait`` on exit sentinels, report pipes, the event's fd and
        ``wake_on`` (objects with ``fileno()`` or fds).
        """
        handles: list[Any] = self._wake_fds(wake_on)
        for worker in self._workers.values():
            handles.append(worker.process.sentinel)
            if not worker.report_done:
                handles.append(worker.report)
        if not self.event.closed and not self.event.is_set():
            handles.append(self.event)
        if handles:
            multiprocessing.connection.wait(handles, timeout)
        return self._collect()

    async def wait_async(
        self, timeout: float | None = None, *, wake_on: Sequence[int] = ()
    ) -> list[WorkerOutcome]:
        """``wait()`` for asyncio code: wakes the running loop on the same fds, never blocks it."""
        newly = self._collect()
        if newly or not self._workers:
            return newly
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def _wake() -> None:
            if not woken.done():
                woken.set_result(None)

        fds: list[int] = self._wake_fds(wake_on)
        for worker in self._workers.values():
            fds.append(worker.process.sentinel)
            if not worker.report_done:
                fds.append(worker.report.fileno())
        # A loop keeps one reader per fd, and bundles on this loop may watch the event's fd too: watch
        # a duplicate of it, so that neither replaces the other's callback.
        event_fd = None
        if not self.event.closed and not self.event.is_set():
            event_fd = os.dup(self.event.fileno())
            fds.append(event_fd)
        added: list[int] = []
        try:
            for fd in fds:
                loop.add_reader(fd, _wake)
                added.append(fd)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(woken, timeout)
        finally:
            for fd in added:
                loop.remove_reader(fd)
            if event_fd is not None:
                os.close(event_fd)
        return self._collect()

    def _wake_fds(self, wake_on: Sequence[Any]) -> list[Any]:
        """``wake_on`` and, while it is open, the read end of ``hurry()``'s pipe."""
        return [*wake_on, self._hurries[0]] if self._hurries_open else list(wake_on)

    def _collect(self) -> list[WorkerOutcome]:
        """Read pending reports and turn every worker that has exited into an outcome (reaping it)."""
        newly: list[WorkerOutcome] = []
        for worker in list(self._workers.values()):
            self._read_report(worker)
            process = worker.process
            if process.exitcode is None:  # polls waitpid (or the forkserver's status) without blocking
                if not multiprocessing.connection.wait([process.sentinel], 0):
                    continue
                # The sentinel closes while the kernel is still tearing the process down, a moment
                # before waitpid can reap it: wait for that moment instead of spinning on the sentinel.
                process.join(_EXIT_TEARDOWN_BOUND)
                if process.exitcode is None:
                    continue
            self._read_report(worker)  # a report written just before exit
            outcome = self._finish(worker)
            newly.append(outcome)
        return newly

    def _read_report(self, worker: _Worker) -> None:
        """Read what the child sent: ``started`` first, then how it ended (never blocks)."""
        while not worker.report_done:
            # A Ctrl+C (the parent gets the group's SIGINT too) must not land between recv_bytes()
            # consuming a report and the report being stored: it would be lost, and the worker then
            # reported as having died. SIGINT is held back for that moment and delivered right after.
            with sigint_deferred():
                try:
                    if not worker.report.poll(0):
                        return
                    kind, payload, raised_at = pickle.loads(worker.report.recv_bytes())
                except (EOFError, OSError):
                    pass  # the child ended before reporting: its exit status tells why
                except Exception as exc:  # a garbled report must not take the supervisor down
                    logger.error("worker %r sent an unreadable report: %r", worker.name, exc)
                else:
                    if kind == "started":
                        worker.started, worker.started_at = True, time.monotonic()
                        continue
                    worker.message = (kind, payload, raised_at)
                worker.report_done = True

    def _finish(self, worker: _Worker) -> WorkerOutcome:
        process = worker.process
        process.join()  # already exited: reaps it (no zombie)
        exitcode = process.exitcode
        pid = process.pid
        status: WorkerStatus
        error: BaseException | None = None
        origin = f"worker process {worker.name!r} (pid {pid})"
        kind, payload, raised_at = worker.message if worker.message is not None else ("", None, None)
        if kind == "returned":
            status = "returned"
        elif kind == "raised" and payload is not None:
            status, error = "raised", load_exception(payload, origin=origin)
        elif kind == "interrupted":
            status, error = "interrupted", KeyboardInterrupt(f"SIGINT in {origin}")
        else:
            status, error = "died", WorkerDied(worker.name, pid, exitcode)
        if worker.signalled is not None and status != "returned":
            # Whatever it did after we signalled it is the stop we asked for, not a new failure.
            if status == "raised" and not isinstance(error, KeyboardInterrupt):
                logger.warning("%s raised while being stopped: %r", origin, error)
            status, error = "stopped", None
        del self._workers[worker.name]
        worker.report.close()
        with contextlib.suppress(ValueError):
            process.close()  # releases the sentinel fd
        outcome = WorkerOutcome(
            worker.name, pid, status, exitcode, error, worker.signalled, time.monotonic(), raised_at
        )
        self._outcomes.append(outcome)
        return outcome

    # -- stopping -------------------------------------------------------------------------------------

    def hurry(self) -> None:
        """Move the stop's escalation one step on now, from any thread (the one method that may be called
        from another thread): the next signal goes out at once, as after a further Ctrl+C, but ``stop()``
        does not raise ``KeyboardInterrupt`` for it. A hurry before ``stop()`` makes ``wait()`` return and
        ``hurried`` true; ``stop()`` then begins one step on (SIGINT at once)."""
        with self._hurry_lock, contextlib.suppress(BlockingIOError):  # a full pipe: hurried already
            if self._hurries_open:
                os.write(self._hurries[1], b"\x01")

    @property
    def hurried(self) -> bool:
        """Whether a ``hurry()`` is pending (``stop()`` takes it)."""
        return bool(self._hurries_open and multiprocessing.connection.wait([self._hurries[0]], 0))

    def _take_hurry(self) -> bool:
        """Consume the pending ``hurry()`` calls; whether there was any."""
        taken = False
        if not self._hurries_open:
            return taken
        with contextlib.suppress(BlockingIOError):  # drained
            while os.read(self._hurries[0], 4096):
                taken = True
        self._hurries_taken += taken
        return taken

    def stop(
        self, *, since: float | None = None, urgency: int = 0, interrupted: bool = False
    ) -> list[WorkerOutcome]:
        """Set the event, escalate on workers that do not return, reap all; every outcome, in order.

        Steps: ``graceful_timeout`` after the stop began (``since``, a ``time.monotonic()`` value;
        default now), SIGINT; ``terminate_timeout`` later, SIGTERM; ``terminate_timeout`` later,
        SIGKILL. ``urgency`` skips steps (1: SIGINT at once, 2: SIGTERM at once, 3: SIGKILL at once).
        A ``KeyboardInterrupt`` raised meanwhile (a further Ctrl+C) jumps to the next step at once and
        is re-raised once every worker is reaped (K5); so does a ``hurry()``, which is not re-raised.

        ``interrupted`` (the stop is a Ctrl+C): workers that have not yet started their callable (still
        starting up) are sent SIGTERM at once instead of being waited for; otherwise every worker gets
        to run its callable, which sees the event set (L1): one still starting when the grace runs out is
        waited for (up to ``_START_BOUND``) and given its grace from the moment it started, before any
        signal is sent (a signal would end it before its callable ever ran). A further Ctrl+C or a
        ``hurry()`` during the stop makes it an interrupted one from then on: a SIGINT would only wait,
        blocked, until a worker still starting has started (K4, K5).
        """
        steps: list[tuple[float, signal.Signals | None]] = [
            (self.graceful_timeout, signal.SIGINT),
            (self.terminate_timeout, signal.SIGTERM),
            (self.terminate_timeout, signal.SIGKILL),
            (_REAP_TIMEOUT, None),
        ]
        if self._take_hurry():
            urgency, interrupted = max(urgency, 1), True
        index = max(0, min(urgency, len(steps) - 1))
        pending: signal.Signals | None = steps[index - 1][1] if index > 0 else None
        step_began = time.monotonic() if since is None else since
        with _SignalWakeup() as wakeup:
            hurried = self._escalate(steps, index, pending, step_began, interrupted, wakeup)
        for name in list(self._workers):
            logger.error("worker process %r (pid %s) survived SIGKILL; abandoning it", name, self.pid(name))
        if hurried:
            raise KeyboardInterrupt
        return self.outcomes

    def _escalate(
        self,
        steps: list[tuple[float, signal.Signals | None]],
        index: int,
        pending: signal.Signals | None,
        step_began: float,
        interrupted: bool,
        wakeup: _SignalWakeup,
    ) -> bool:
        """``stop()``'s loop; ``True`` if a ``KeyboardInterrupt`` hurried it."""
        hurried = False
        event_set = False
        hurries = self._hurries_taken
        while True:
            # A Ctrl+C may land anywhere in this loop, not only while waiting (setting the event makes
            # workers react, and a second Ctrl+C may follow at once): wherever it lands it moves the
            # escalation one step on, and the loop goes on until every worker is reaped.
            try:
                if not event_set:
                    self.event.set()
                    event_set = True
                if interrupted:
                    self._terminate_unstarted()
                if pending is not None:
                    self._signal_all(pending)
                    pending = None
                    step_began = time.monotonic()
                if not self._workers or index >= len(steps):
                    break
                duration, signum = steps[index]
                index += 1
                if self._wait_until(step_began + duration, wakeup):
                    hurried = interrupted = True
                # After the grace (step 1), before any signal: workers still starting are waited for,
                # unless the stop is (or was just hurried into) an interrupted one.
                late = index == 1 and not interrupted and self._hurries_taken == hurries
                if late and self._wait_for_late_starts(wakeup):
                    hurried = interrupted = True
                interrupted = interrupted or self._hurries_taken != hurries
                pending = signum if self._workers else None
            except KeyboardInterrupt:
                hurried = interrupted = True
                if index < len(steps):
                    pending = steps[index][1]
                    index += 1
        return hurried

    def _wait_until(self, deadline: float, wakeup: _SignalWakeup) -> bool:
        """Collect outcomes until every worker ended, ``deadline`` or a ``hurry()``; ``True`` if interrupted
        meanwhile."""
        while self._workers:
            remaining = deadline - time.monotonic()
            try:
                self.wait(max(remaining, 0.0), wake_on=wakeup.handles)
                wakeup.drain()
            except KeyboardInterrupt:
                return True
            if remaining <= 0 or self._take_hurry():
                break
        return False

    def _wait_for_late_starts(self, wakeup: _SignalWakeup) -> bool:
        """The grace ran out: wait for workers still starting to reach their callable (up to
        ``_START_BOUND``), then give them their grace from then (L1); ``True`` if interrupted meanwhile."""
        for worker in self._workers.values():
            self._read_report(worker)
        late = [worker for worker in self._workers.values() if not worker.started]
        if not late:
            return False
        logger.info(
            "worker processes %s had not started their callable when the grace ran out; waiting for them",
            ", ".join(repr(worker.name) for worker in late),
        )
        bound = time.monotonic() + _START_BOUND
        while any(not worker.started for worker in late if worker.name in self._workers):
            remaining = bound - time.monotonic()
            if remaining <= 0:
                logger.warning("worker processes still starting after %.0f s; stopping them", _START_BOUND)
                return False
            try:
                self.wait(remaining, wake_on=wakeup.handles)
                wakeup.drain()
            except KeyboardInterrupt:
                return True
            if self._take_hurry():
                return False
        started = [worker.started_at for worker in late if worker.started_at is not None]
        return bool(started) and self._wait_until(max(started) + self.graceful_timeout, wakeup)

    def _terminate_unstarted(self) -> None:
        for worker in self._workers.values():
            self._read_report(worker)
            pid = worker.process.pid
            if worker.started or worker.signalled is not None or pid is None:
                continue
            logger.info("worker process %r (pid %s) had not started; sending SIGTERM", worker.name, pid)
            worker.signalled = int(signal.SIGTERM)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _signal_all(self, signum: signal.Signals) -> None:
        for worker in self._workers.values():
            pid = worker.process.pid
            if pid is None or worker.process.exitcode is not None:
                continue
            if _STRENGTH.get(worker.signalled or 0, 0) > _STRENGTH[signum]:
                continue  # SIGTERMed while still starting: a SIGINT now would change nothing
            self._read_report(worker)
            if worker.message is None:
                # A worker that already reported keeps its outcome; only its exit is being hurried.
                worker.signalled = int(signum)
            logger.warning(
                "worker process %r (pid %s) has not exited; sending %s", worker.name, pid, signum.name
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Send ``signum`` to a running worker without marking it as stopped by us (fault injection)."""
        worker = self._workers.get(name)
        if worker is None or worker.process.pid is None:
            raise ValueError(f"no running worker named {name!r}")
        os.kill(worker.process.pid, signum)

    def close(self) -> None:
        """Kill and reap any worker still running, and release every descriptor. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._workers:
            self._signal_all(signal.SIGKILL)
            deadline = time.monotonic() + _REAP_TIMEOUT
            while self._workers and time.monotonic() < deadline:
                self.wait(deadline - time.monotonic())
        for conn in self._liveness:
            conn.close()
        with self._hurry_lock:
            self._hurries_open = False
            for fd in self._hurries:
                os.close(fd)

    def __enter__(self) -> WorkerProcesses:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._workers:
                self.stop()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"<WorkerProcesses {self.start_method or 'default'} running={self.running}>"


class _SignalWakeup:
    """While entered on the main thread: ``handles`` holds a descriptor that turns readable as soon as a
    signal arrives, whichever thread the kernel delivered it to (see ``threads.claim_signal_wakeup``).

    Without it, a SIGINT taken by another thread (the store server's, a watchdog, the caller's) would
    run its handler, our ``KeyboardInterrupt``, only once ``stop()``'s wait ended by itself: a second
    Ctrl+C would sit out the whole grace (K5). Someone else's wake-up fd leaves ``handles`` empty.
    """

    def __init__(self) -> None:
        self.handles: tuple[int, ...] = ()
        self._fds: tuple[int, int] | None = None

    def __enter__(self) -> _SignalWakeup:
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            with sigint_deferred():  # a Ctrl+C here must not leave the pipe half made (K5)
                reader, writer = os.pipe()
                self._fds = (reader, writer)
                os.set_blocking(reader, False)
                os.set_blocking(writer, False)
                if claim_signal_wakeup(writer):
                    self.handles = (reader,)
                else:
                    self._fds = None
                    os.close(reader)
                    os.close(writer)
        except BaseException:  # the held-back Ctrl+C, raised once the pipe is whole: undo it
            self.__exit__(None, None, None)
            raise
        return self

    def drain(self) -> None:
        if self._fds is not None:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._fds[0], 4096):
                    pass

    def __exit__(self, *exc_info: object) -> None:
        if self._fds is None:
            return
        with sigint_deferred():
            reader, writer = self._fds
            self._fds, self.handles = None, ()
            release_signal_wakeup(writer)
            os.close(reader)
            os.close(writer)


def _block_sigint_in_the_forkserver() -> None:
    """When the forkserver preloads this module (see the module docstring), block SIGINT in it."""
    from multiprocessing import forkserver

    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is forkserver.main.__code__:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            # Every child inherits the mask; only our workers want it (they unblock it inside their guard).
            multiprocessing.util.register_after_fork(
                _unblock_sigint_unless_a_worker, _unblock_sigint_unless_a_worker
            )
            return
        frame = frame.f_back


def _unblock_sigint_unless_a_worker(_: object) -> None:
    """After-fork hook of the forkserver's children: a process that is not one of our workers gets the
    SIGINT the forkserver blocked back before its target runs (multiprocessing calls this from the child's
    bootstrap, where ``current_process()`` is already the child's own process object)."""
    if getattr(multiprocessing.current_process(), "_target", None) is not _worker_main:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def start_forkserver(preload: Sequence[str] = ()) -> None:
    """Start multiprocessing's process-wide forkserver now, preloading ``preload``, without waiting for it.

    Its interpreter starts and imports while the caller goes on preparing (binding a server, say), so the
    first worker it forks is ready sooner; a forkserver already running is left as it is. It is the one
    ``WorkerProcesses(start_method="forkserver")`` forks from, living as long as this process either way.
    """
    from multiprocessing import forkserver

    _extend_forkserver_preload(preload)
    with sigint_deferred():  # a Ctrl+C waits until multiprocessing's books on it are complete
        forkserver.ensure_running()


def _extend_forkserver_preload(modules: Sequence[str]) -> None:
    from multiprocessing import forkserver

    server = forkserver._forkserver  # the process-wide forkserver multiprocessing itself uses
    if getattr(server, "_forkserver_pid", None) is not None:
        return  # already running: its preload list is spent
    current = list(getattr(server, "_preload_modules", ["__main__"]))
    wanted = current + [module for module in modules if module not in current]
    if wanted != current:
        forkserver.set_forkserver_preload(wanted)


# -- the child side --------------------------------------------------------------------------------------


@dataclass
class _ChildConfig:
    name: str
    report: multiprocessing.connection.Connection
    liveness: multiprocessing.connection.Connection
    inherited: tuple[_Closable, ...]
    """What a forked child holds of the caller's and must close first thing (fork only; else empty)."""
    parent_pid: int
    check_parent_pid: bool
    event: MultiprocessingEvent
    cleanup: Callable[[], Awaitable[Any]] | None = None
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None


def _interrupt_once(signum: int, frame: object) -> None:
    """SIGINT in a worker: one ``KeyboardInterrupt``, later ones are ignored (the parent escalates)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _worker_main(child: _ChildConfig, target: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
    """Entry point of a worker process: guard, run ``target(*args)``, report, exit quietly."""
    # Under fork we inherit the parent's wake-up fd (asyncio's self-pipe): our signals must not land there.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, _interrupt_once)
    try:
        # A Ctrl+C that arrived while we were being started is pending: it lands here, inside the try, so
        # it is reported as an interrupt like any other (outside it, it would escape to multiprocessing's
        # bootstrap: a traceback and an exit without a report).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        _guard_parent_death(child)
        # What this process holds before its callable runs (under fork, the caller's whole heap) is never
        # collected here: a collection walking it would write to every object's header, copying each
        # page a fork shares with the caller, and take as long as collecting the caller's heap.
        gc.freeze()
        with contextlib.suppress(OSError):
            child.report.send_bytes(_STARTED)
        kind, payload, code, raised_at = _run(target, args, child)
    except KeyboardInterrupt:
        kind, payload, code, raised_at = "interrupted", None, _EXIT_INTERRUPTED, time.monotonic()
    # From here on a Ctrl+C must not print a traceback from multiprocessing's bootstrap.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        report = (kind, payload, raised_at)
        child.report.send_bytes(pickle.dumps(report, protocol=pickle.HIGHEST_PROTOCOL))
    child.report.close()
    # Under spawn, sys.exit ends in the interpreter's full shutdown, whose collections walk every object
    # the worker imported (over a second on a loaded machine for the reference strategies' imports) while
    # the parent waits to reap it; fork and forkserver children skip the shutdown (os._exit). A frozen
    # heap keeps those collections off it; atexit handlers and multiprocessing's finalizers still run.
    gc.freeze()
    sys.exit(code)


def _run(
    target: Callable[..., Awaitable[Any]], args: tuple[Any, ...], child: _ChildConfig
) -> tuple[str, bytes | None, int, float | None]:
    raised_at: list[float] = []
    main = _await(target, args, raised_at, child)
    try:
        if child.loop_factory is None:
            asyncio.run(main)
        else:
            event_loops.run(main, child.loop_factory)
    except KeyboardInterrupt:
        return "interrupted", None, _EXIT_INTERRUPTED, (raised_at or [time.monotonic()])[0]
    except BaseException as exc:
        return "raised", dump_exception(exc), _EXIT_RAISED, (raised_at or [time.monotonic()])[0]
    finally:
        # A Ctrl+C that lands before the loop first runs ``main`` (while the loop is being made) leaves it
        # never started: closed here, not left for the collector to warn "never awaited" on stderr.
        if inspect.getcoroutinestate(main) == inspect.CORO_CREATED:
            main.close()
    return "returned", None, _EXIT_RETURNED, None


async def _await(
    target: Callable[..., Awaitable[Any]], args: tuple[Any, ...], raised_at: list[float], child: _ChildConfig
) -> None:
    try:
        await target(*args)
    except BaseException:
        raised_at.append(time.monotonic())  # first thing: as close as we get to when it happened (E3)
        child.event.set()  # everyone stops at once; the parent hears the details from the report
        raise
    finally:
        # The callable is done: a SIGINT of the parent's escalation landing from here on would raise in
        # asyncio's own teardown (a loop half closed, whose __del__ then prints a traceback at exit). The
        # parent moves on to SIGTERM if this process does not exit.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if child.cleanup is not None:
            try:
                await child.cleanup()
            except Exception:
                logger.exception("cleanup after the worker's callable failed")


def _guard_parent_death(child: _ChildConfig) -> None:
    for inherited in child.inherited:
        inherited.close()
    if sys.platform.startswith("linux"):
        # The running program's own symbols include libc's: no ctypes.util.find_library(), which runs
        # ldconfig through a pipe (14 ms per worker, and a Ctrl+C landing meanwhile left the pipe open).
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    fd = os.dup(child.liveness.fileno())  # the watchdog's own descriptor: nothing else may close it
    threading.Thread(target=_watch_parent, args=(fd,), name="agl-parent-watchdog", daemon=True).start()
    # The parent may have died before PDEATHSIG was armed; the watchdog also sees that (EOF at once).
    if child.check_parent_pid and os.getppid() != child.parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


def _watch_parent(fd: int) -> None:
    """Block until the parent's end of the liveness pipe closes (it never writes), then die."""
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        return  # not EOF: we cannot tell, so keep running (PDEATHSIG still guards on Linux)
    os.kill(os.getpid(), signal.SIGKILL)


_block_sigint_in_the_forkserver()
