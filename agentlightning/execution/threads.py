"""Running bundles on threads of one process, each on its own event loop, and stopping them (thread side).

``BundleRun`` awaits one bundle on a loop it creates and closes on the calling thread; once the stop event
is set the bundle has ``grace`` seconds to return before it is cancelled (L6). ``BundleGroup`` runs one
bundle on the calling (main) thread and the others on daemon threads, relays SIGINT, escalates on repeated
SIGINTs and waits for the threads with a bound, logging stragglers by thread name (L7).

Where KeyboardInterrupt may land (the model is trio's): while a group runs on the main thread,
``SigintRelay`` replaces Python's default SIGINT handler. The handler takes no lock; it counts the signal
and wakes the supervising code (a reentrant ``SimpleQueue``, ``call_soon_threadsafe``, and a socket that
is also the signal wakeup fd, because the kernel may hand SIGINT to any thread). It raises
``KeyboardInterrupt`` on the spot only when the signal interrupted bundle code (the bundle's coroutine, or
a task or callback it scheduled), as Python would. In this package's code, asyncio's internals, an idle
loop and teardown it defers, so supervision and teardown are never torn half-way.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import contextlib
import logging
import math
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from types import FrameType
from typing import Any, TypeVar

from agentlightning.execution.ctrl_c import CtrlCLadder
from agentlightning.execution.events import ThreadingEvent, wait_async
from agentlightning.execution.failures import FailureCollector

__all__ = [
    "BundleGroup",
    "BundleRun",
    "Inbox",
    "SigintRelay",
    "claim_signal_wakeup",
    "close_loop",
    "refuse_running_loop",
    "release_signal_wakeup",
    "run_on_private_loop",
    "sigint_deferred",
]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

_log = logging.getLogger(__name__)

_T = TypeVar("_T")


class Inbox:
    """Messages for the supervising (main) thread, with a socket that is readable when one may wait.

    ``SimpleQueue.put`` is reentrant, so a signal handler may post while the main thread is inside the
    queue. The socket's write end is also the process's signal wakeup fd while a ``SigintRelay`` is
    installed: the kernel may deliver SIGINT to any thread, and then nothing interrupts the main thread's
    wait; the byte the interpreter writes on every signal wakes it, and the Python-level handler runs.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._poll = select.poll()  # not select.select(): it cannot watch an fd numbered 1024 or above
        self._poll.register(self._reader.fileno(), select.POLLIN)

    @property
    def wakeup_fd(self) -> int:
        return self._writer.fileno()

    @property
    def reader_fd(self) -> int:
        return self._reader.fileno()

    def put(self, kind: str, value: Any = None) -> None:
        """Post a message from any thread, or from a signal handler."""
        self._queue.put((kind, value))
        with contextlib.suppress(OSError):  # full: the socket is readable anyway
            self._writer.send(b"\0")

    def take_all(self) -> list[tuple[str, Any]]:
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def wait(self, timeout: float | None) -> None:
        """Block until a message or a signal may have arrived, or ``timeout`` seconds pass."""
        self._poll.poll(None if timeout is None else max(0, math.ceil(timeout * 1000)))
        self.drain()

    def drain(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError once empty
            while self._reader.recv(4096):
                pass

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


class BundleRun:
    """One bundle awaited once on an event loop of its own, on whichever thread calls ``run()``.

    Stop model: the bundle's normal return sets ``event`` only when ``sets_event_on_return`` (the
    algorithm, L2; a runner's return is local, L3). An exception of any type is recorded in ``failures``
    and sets the event (E1/E2, K1/K2, E6). Once the event is set, by anyone, the bundle has ``grace``
    seconds to return; then it is cancelled (``CancelledError`` at its current ``await``, its ``finally``
    blocks run) and that cancellation is not a failure (L6). ``cancel_now()`` skips the rest of the grace.
    ``after``, if given, is awaited on the same loop once the bundle has ended, however it ended (our code:
    Ctrl+C never lands in it); what it raises is a cleanup error, never the bundle's failure.
    """

    def __init__(
        self,
        name: str,
        call: Callable[[], Awaitable[None]],
        event: ThreadingEvent,
        failures: FailureCollector,
        *,
        grace: float,
        teardown_timeout: float,
        sets_event_on_return: bool,
        thread_name: str | None = None,
        after: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.name = name
        self.thread_name = thread_name or name
        self._call = call
        self._event = event
        self._failures = failures
        self._grace = grace
        self._teardown_timeout = teardown_timeout
        self._sets_event_on_return = sets_event_on_return
        self._after = after
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._hurry = False
        self._abandoned = False
        self.started = False
        self.cancelled = False
        """Whether the strategy cancelled the bundle (grace expired or ``cancel_now()``)."""
        self.outcome: BaseException | None = None
        """What the bundle raised (``None`` when it returned, or when our own cancellation ended it)."""

    def run(self, on_loop: Callable[[asyncio.AbstractEventLoop | None], None] | None = None) -> None:
        """Create a loop, await the bundle under supervision, close the loop. Never raises.

        ``on_loop(loop)`` is called once the loop exists and ``on_loop(None)`` before it is closed (the
        SIGINT relay uses it to reach the main thread's loop).
        """
        self.started = True
        loop = asyncio.new_event_loop()  # never set as the thread's current loop (R7)
        self._loop = loop
        try:
            supervisor = loop.create_task(self._supervise(), name=f"supervise {self.name}")
            if on_loop is not None:
                on_loop(loop)
            while not supervisor.done() and not self._abandoned:
                try:
                    loop.run_until_complete(supervisor)
                except BaseException as exc:
                    # asyncio lets KeyboardInterrupt and SystemExit raised in any task or callback escape
                    # run_until_complete; the supervisor is still pending, so record and resume it.
                    # A RuntimeError after abandon() is the loop stopping on our request.
                    if not (self._abandoned and isinstance(exc, RuntimeError)):
                        self._fail(exc, f"{self.name} (escaped its task)")
            if supervisor.done() and not supervisor.cancelled() and supervisor.exception() is not None:
                self._fail(supervisor.exception(), f"{self.name} (supervisor)")  # type: ignore[arg-type]
        except BaseException as exc:
            self._fail(exc, f"{self.name} (supervisor)")
        finally:
            self._loop = None
            if on_loop is not None:
                on_loop(None)
            # Abandoned (last-resort escalation): one cancellation and a moment, not the full bound.
            teardown = min(self._teardown_timeout, 0.1) if self._abandoned else self._teardown_timeout
            close_loop(loop, teardown, self.name, self._failures)

    def cancel_now(self) -> None:
        """Cancel the bundle without waiting out its grace (thread-safe; a no-op once it is done)."""
        self._hurry = True
        self._call_soon(self._cancel_task)

    def abandon(self) -> None:
        """Stop waiting for the bundle altogether (last-resort escalation; thread-safe)."""
        self._abandoned = True
        loop = self._loop
        if loop is not None:
            self._call_soon(loop.stop)

    def _call_soon(self, callback: Callable[[], Any]) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to do
            loop.call_soon_threadsafe(callback)

    def _fail(self, exc: BaseException, origin: str) -> None:
        self._failures.record(exc, origin)
        self._event.set()

    def _cancel_task(self) -> None:
        task = self._task
        if task is not None and not task.done():
            self.cancelled = True
            task.cancel()

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._guarded(), name=self.name)
        self._task = task
        stop = loop.create_task(wait_async(self._event), name=f"stop watch {self.name}")
        await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        await asyncio.wait((stop,))
        if task.done():
            return
        # L6: the event is set and the bundle is still running; give it its grace, then cancel it.
        if not self._hurry:
            await asyncio.wait((task,), timeout=self._grace)
        while not task.done():
            _log.info("%s still running after the stop (grace %.3gs); cancelling it", self.name, self._grace)
            self._cancel_task()
            # A bundle that swallows the cancellation is cancelled again when cancel_now() is called;
            # one stuck in blocking code keeps this thread busy (L7: the group's join bound handles it).
            await asyncio.wait((task,))

    async def _guarded(self) -> None:
        try:
            await _await_bundle(self._call())
        except asyncio.CancelledError as exc:
            if not self.cancelled:  # not ours: a bundle raising CancelledError itself is a failure
                self.outcome = exc
                self._fail(exc, self.name)
            return
        except BaseException as exc:
            self.outcome = exc
            self._fail(exc, self.name)
            return
        finally:
            if self._after is not None:
                try:
                    await self._after()
                except Exception as exc:
                    self._failures.record_cleanup_error(exc, f"{self.name}: after its end")
        if self._sets_event_on_return:
            self._event.set()


async def _await_bundle(awaitable: Awaitable[None]) -> None:
    # The boundary SigintRelay looks for: frames called from here are bundle code, where
    # KeyboardInterrupt is raised at once; this frame itself and its callers are ours, where it waits.
    await awaitable


def close_loop(
    loop: asyncio.AbstractEventLoop, timeout: float, name: str, failures: FailureCollector
) -> None:
    """Cancel and await the loop's leftover tasks, shut down async generators and the default
    executor (together bounded by ``timeout``; what does not finish in time is logged), then close the
    loop. Never raises: errors are recorded as cleanup errors, which never mask a bundle's failure (E4).
    """
    deadline = time.monotonic() + timeout
    try:
        with failures.cleanup(f"{name}: leftover tasks"):
            _finish_leftover_tasks(loop, deadline, name)
        with failures.cleanup(f"{name}: async generators"):
            _run_bounded(loop, loop.shutdown_asyncgens(), deadline, f"{name}: async generators")
        with failures.cleanup(f"{name}: default executor"):
            if sys.version_info >= (3, 12):
                remaining = max(0.0, deadline - time.monotonic())
                loop.run_until_complete(loop.shutdown_default_executor(remaining))
            else:
                _run_bounded(loop, loop.shutdown_default_executor(), deadline, f"{name}: default executor")
        with failures.cleanup(f"{name}: leftover tasks"):
            _finish_leftover_tasks(loop, deadline, name)
    finally:
        with failures.cleanup(f"{name}: closing its event loop"):
            loop.close()


def refuse_running_loop() -> None:
    """Raise ``RuntimeError`` if the calling thread runs an event loop: ``execute()`` blocks until every
    bundle is done, so inside a loop it would stall that loop, and the main bundle's own loop could never
    run there (each attempt to run it would fail at once, for ever). Called before anything is started."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # the normal case: called from plain code
    raise RuntimeError(
        "execute() blocks until every bundle is done and cannot run inside an event loop; "
        "from async code use: await asyncio.to_thread(strategy.execute, algorithm, runner, store)"
    )


def run_on_private_loop(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` from plain code on a new event loop that is never made current (R7), then close it.

    For a strategy's own short steps outside any bundle (``asyncio.run`` would reset the caller's current
    loop).
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _run_bounded(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], deadline: float, what: str
) -> None:
    task = loop.create_task(coro)
    loop.run_until_complete(asyncio.wait((task,), timeout=max(0.0, deadline - time.monotonic())))
    if not task.done():
        _log.warning("%s did not finish within the teardown bound; abandoned", what)
        task.cancel()
        loop.run_until_complete(asyncio.wait((task,), timeout=0.1))
    elif not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def _finish_leftover_tasks(loop: asyncio.AbstractEventLoop, deadline: float, name: str) -> None:
    while True:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        if not pending:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _log.warning(
                "%s left %d task(s) that ignore cancellation: %s",
                name,
                len(pending),
                ", ".join(task.get_name() for task in pending),
            )
            return
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.wait(pending, timeout=remaining))
        for task in pending:
            if task.done() and not task.cancelled() and task.exception() is not None:
                _log.warning(
                    "%s: task %s failed while being cancelled",
                    name,
                    task.get_name(),
                    exc_info=task.exception(),
                )


# -- SIGINT -----------------------------------------------------------------------------------------------

_HANDLE_RUN_CODE = asyncio.events.Handle._run.__code__
_AWAIT_BUNDLE_CODE = _await_bundle.__code__
_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
# The module-level marker that makes a module's code ours for SIGINT purposes. It is declared in each
# module, never derived from where the file lives, so moving a file cannot change where Ctrl+C may land.
_PROTECTED_MARKER = "_KEYBOARD_INTERRUPT_PROTECTED"


def _interrupts_bundle_code(frame: FrameType | None) -> bool:
    """Whether a signal that arrived in ``frame`` interrupted bundle code (raise there) or ours (defer).

    Bundle code is any frame called from ``_await_bundle`` (the bundle's coroutine and what it calls),
    and any task or callback the loop runs that is neither asyncio's nor ours. Protected: every module
    that declares ``_KEYBOARD_INTERRUPT_PROTECTED = True``, wherever it is called from
    (``ThreadingEvent.set`` must wake every waiter), asyncio's internals, the idle loop, teardown, and
    every ``__del__`` (an exception there is lost).
    """
    outermost_user: FrameType | None = None
    current = frame
    while current is not None:
        code = current.f_code
        if code is _AWAIT_BUNDLE_CODE:
            # Only bundle frames lie between it and the signal (ours would have returned below).
            return current is not frame
        if code.co_name == "__del__" or current.f_globals.get(_PROTECTED_MARKER) is True:
            return False
        if code is _HANDLE_RUN_CODE:
            return outermost_user is not None
        if not code.co_filename.startswith(_ASYNCIO_DIR):
            outermost_user = current
        current = current.f_back
    return False


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl+C back while the block runs on the main thread, then hand it to the handler it was for.

    For blocks that make or free a pair of descriptors: Python runs a signal handler between any two
    bytecodes, so a ``KeyboardInterrupt`` landing just after ``os.pipe()`` returned, before its result is
    stored, leaks both ends. The handler that was installed runs once the block is done (for Python's
    default one: ``KeyboardInterrupt`` raised there), so the interrupt is late, never lost.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[FrameType | None] = []
    previous = signal.signal(signal.SIGINT, lambda _signum, frame: pending.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            if callable(previous):
                previous(signal.SIGINT, pending[0])
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)


def claim_signal_wakeup(fd: int) -> bool:
    """Make ``fd`` Python's signal wake-up fd (main thread only); ``True`` if it is ours now.

    The kernel may hand a process's signal to any thread that does not block it; a blocking wait on the
    main thread is then cut short only by a descriptor it watches, and the wake-up fd is written
    whichever thread takes the signal. A wake-up fd someone else installed is theirs: it is put back
    and ``False`` returned.
    """
    theirs = signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
    if theirs == -1:
        return True
    signal.set_wakeup_fd(theirs)
    return False


def release_signal_wakeup(fd: int) -> None:
    """Undo a successful ``claim_signal_wakeup(fd)``; a wake-up fd installed since then stays."""
    current = signal.set_wakeup_fd(-1)
    if current != fd:
        signal.set_wakeup_fd(current)


class SigintRelay:
    """Replaces Python's default SIGINT handler while a group runs on the main thread (see module doc).

    Installed only from the main thread and only over ``signal.default_int_handler`` (a handler the
    caller installed is the caller's choice and is left alone); restored exactly on exit, if still ours.
    ``count`` is the number of SIGINTs seen; each one is put in ``inbox`` as ``("sigint", count)`` and,
    while a loop is attached, ``on_signal`` is scheduled on it.
    """

    def __init__(self, inbox: Inbox) -> None:
        self.count = 0
        self.installed = False
        self._owns_wakeup_fd = False
        self._inbox = inbox
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_signal: Callable[[], None] | None = None
        self._previous: Any = None
        self._handler = self._handle  # one bound-method object, so restore can compare by identity

    def __enter__(self) -> SigintRelay:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is signal.default_int_handler:
                self._previous = previous
                signal.signal(signal.SIGINT, self._handler)
                self.installed = True
                # Wake the main thread even when the kernel delivers SIGINT to another thread.
                self._owns_wakeup_fd = claim_signal_wakeup(self._inbox.wakeup_fd)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()
        if self._owns_wakeup_fd:
            release_signal_wakeup(self._inbox.wakeup_fd)
            self._owns_wakeup_fd = False
        if self.installed and signal.getsignal(signal.SIGINT) is self._handler:
            signal.signal(signal.SIGINT, self._previous)
        self.installed = False

    def attach(self, loop: asyncio.AbstractEventLoop | None, on_signal: Callable[[], None]) -> None:
        """Schedule ``on_signal`` on ``loop`` (the main thread's loop) for every SIGINT; ``None`` detaches.

        The loop also watches the inbox socket, so a SIGINT the kernel gave another thread still wakes
        it (and the interpreter then runs the handler on the main thread). Detach before closing it.
        """
        self.detach()
        if loop is None:
            return
        self._on_signal = on_signal
        loop.add_reader(self._inbox.reader_fd, self._inbox.drain)
        self._loop = loop

    def detach(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            with contextlib.suppress(RuntimeError, ValueError, OSError):  # closed meanwhile
                loop.remove_reader(self._inbox.reader_fd)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs on the main thread between two bytecodes of whatever it was doing: take no lock here.
        self.count += 1
        self._inbox.put("sigint", self.count)
        loop, on_signal = self._loop, self._on_signal
        if loop is not None and on_signal is not None:
            with contextlib.suppress(RuntimeError):  # closed meanwhile; the inbox carries the signal
                loop.call_soon_threadsafe(on_signal)
        if _interrupts_bundle_code(frame):
            raise KeyboardInterrupt


# -- the group ------------------------------------------------------------------------------------------


class BundleGroup:
    """Runs ``main`` on the calling thread and ``others`` on daemon threads; returns when all are done.

    Stop model (the group's half; ``BundleRun`` holds the bundle's half):

    - Return, error, event: a stop (the event set by anyone) starts each bundle's grace; threads still
      alive ``grace + join_timeout`` seconds after the stop are stragglers (stuck in blocking code, which a
      thread cannot be forced out of): each is logged by thread name and left as a daemon thread (L7).
    - Ctrl+C: the ladder of ``ctrl_c.CtrlCLadder``. First: recorded as ``KeyboardInterrupt`` (raised by
      the caller through ``failures``) and the event is set: the same stop with the same grace (K3).
      Second: every bundle is cancelled now, grace skipped, threads get ``join_timeout`` (K5). Third:
      nothing is waited for any more; live threads are reported as stragglers.
    """

    def __init__(
        self,
        main: BundleRun | None,
        others: Sequence[BundleRun],
        *,
        event: ThreadingEvent,
        failures: FailureCollector,
        grace: float,
        join_timeout: float,
    ) -> None:
        self._main = main
        self._others = list(others)
        self._event = event
        self._failures = failures
        self._grace = grace
        self._join_timeout = join_timeout
        self._inbox = Inbox()
        self._relay = SigintRelay(self._inbox)
        self._ladder = CtrlCLadder(
            failures, stop=event.set, force=self._force, abandon=self._abandon, grace=grace, logger=_log
        )
        self._stop_at: float | None = None
        self._deadline_cap: float | None = None  # set by escalation
        self._threads: dict[threading.Thread, BundleRun] = {}

    def run(self) -> list[str]:
        """Run every bundle and wait for them; the names of straggler threads left running (L7)."""
        self._event._add_waker(self._on_stop)  # see wait_async: called once, by whoever sets the event
        if self._event.is_set():
            self._on_stop()
        try:
            with self._relay:
                # Every bundle is started even after a Ctrl+C or a failure during start-up (L1 holds in
                # every situation); it finds the event already set and gets the usual grace.
                for run in self._others:
                    self._process_sigints()
                    self._start(run)
                self._process_sigints()
                if self._main is not None:
                    self._main.run(on_loop=self._attach_main_loop)
                return self._wait_for_threads()
        finally:
            self._event._remove_waker(self._on_stop)
            self._inbox.close()  # after the relay restored the wakeup fd

    def _on_stop(self) -> None:
        self._inbox.put("stop", time.monotonic())

    def _attach_main_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._relay.attach(loop, self._process_sigints)
        if loop is not None and self._relay.count > self._ladder.handled:
            loop.call_soon(self._process_sigints)  # arrived just before the loop was attached

    def _start(self, run: BundleRun) -> None:
        thread = threading.Thread(target=self._thread_main, args=(run,), name=run.thread_name, daemon=True)
        self._threads[thread] = run
        thread.start()

    def _thread_main(self, run: BundleRun) -> None:
        try:
            run.run()
        finally:
            self._inbox.put("exited", threading.current_thread())

    def _process_sigints(self) -> None:
        """Climb the Ctrl+C ladder for SIGINTs not handled yet; protected code on the main thread only."""
        self._ladder.catch_up(self._relay.count)

    def _force(self) -> None:
        for run in self._runs():
            run.cancel_now()
        self._cap_deadline(time.monotonic() + self._join_timeout)

    def _abandon(self) -> None:
        for run in self._runs():
            run.abandon()
        self._cap_deadline(time.monotonic())

    def _runs(self) -> list[BundleRun]:
        return ([self._main] if self._main is not None else []) + self._others

    def _cap_deadline(self, when: float) -> None:
        self._deadline_cap = when if self._deadline_cap is None else min(self._deadline_cap, when)

    def _deadline(self) -> float | None:
        deadline = None if self._stop_at is None else self._stop_at + self._grace + self._join_timeout
        if self._deadline_cap is not None:
            deadline = self._deadline_cap if deadline is None else min(deadline, self._deadline_cap)
        return deadline

    def _wait_for_threads(self) -> list[str]:
        alive = {thread for thread in self._threads if thread.ident is not None}
        while alive:
            self._process_sigints()
            for kind, value in self._inbox.take_all():
                if kind == "exited":
                    alive.discard(value)
                    value.join()  # it has posted its last message: the thread is returning
                elif kind == "stop" and self._stop_at is None:
                    self._stop_at = value
            if not alive:
                break
            deadline = self._deadline()
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            try:
                self._inbox.wait(timeout)
            except KeyboardInterrupt as exc:  # only a caller-installed SIGINT handler raises here
                self._failures.record(exc, "SIGINT")
                self._event.set()
                self._relay.count += 1
        stragglers = sorted(thread.name for thread in alive if thread.is_alive())
        for name in stragglers:
            _log.warning(
                "thread %r did not stop within %.3gs (grace %.3gs + join_timeout %.3gs) of the stop; "
                "left running as a daemon thread: a thread stuck in blocking code cannot be cancelled",
                name,
                self._grace + self._join_timeout,
                self._grace,
                self._join_timeout,
            )
        return stragglers
