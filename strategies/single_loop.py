"""Example strategy: every bundle as a task on one event loop, in the caller's thread.

Written only against the public API (``agentlightning.ExecutionStrategy``, ``ThreadingEvent``,
``wait_async``), as a user would write it. It suits I/O-bound bundles that never block their loop.

Stop model:
- the algorithm returns: the event is set; runners that watch it return; the rest are cancelled after
  ``graceful_delay``;
- a bundle raises: the event is set, the others get ``graceful_delay`` to return, then are cancelled;
  the first error is re-raised, later ones are attached as notes (logged on Python 3.10);
- ``KeyboardInterrupt`` or ``SystemExit`` in a bundle: the event is set, every other task is cancelled
  at once (their ``finally`` blocks run), and it is re-raised;
- Ctrl+C (SIGINT): the event is set and every task is cancelled at once; ``execute()`` raises
  ``KeyboardInterrupt``. A second Ctrl+C changes nothing more: shutdown is already immediate. A Ctrl+C
  that lands while the loop is being closed is held until it is closed, then raised.
Limitation: a bundle stuck in blocking (non-async) code blocks the one loop, so nothing can stop it
before it returns; the manifest declares ``can_cancel_blocking_code: False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from agentlightning import (
    AlgorithmBundle,
    ExecutionStrategy,
    LightningStore,
    RunnerBundle,
    ThreadingEvent,
)
from agentlightning.execution.events import wait_async

__all__ = ["SingleLoopExecutionStrategy"]

logger = logging.getLogger(__name__)


class SingleLoopExecutionStrategy(ExecutionStrategy):
    """Runs the algorithm and ``n_runners`` runners as tasks of one asyncio loop."""

    alias = "single-loop"
    capability_manifest = {
        "uses_processes": False,
        "shares_caller_store": True,
        "can_cancel_blocking_code": False,
        "supports_unmanaged_store": True,
        "runs_on_many_hosts": False,
    }

    def __init__(self, n_runners: int = 1, graceful_delay: float = 1.0, managed_store: bool = True) -> None:
        if isinstance(n_runners, bool) or not isinstance(n_runners, int) or n_runners < 1:
            raise ValueError(f"n_runners must be an integer >= 1, got {n_runners!r}")
        is_number = isinstance(graceful_delay, (int, float)) and not isinstance(graceful_delay, bool)
        if not is_number or graceful_delay < 0:
            raise ValueError(f"graceful_delay must be a number >= 0, got {graceful_delay!r}")
        if not isinstance(managed_store, bool):
            raise ValueError(f"managed_store must be True or False, got {managed_store!r}")
        self.n_runners = n_runners
        self.graceful_delay = float(graceful_delay)
        # Every bundle runs on the caller's thread and loop, so no wrapper is ever needed: bundles get the
        # caller's store object either way (S6). The option exists for configuration compatibility.
        self.managed_store = managed_store

    @property
    def capabilities(self) -> dict[str, Any]:
        return {**self.capability_manifest, "grace_seconds": self.graceful_delay}

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        event = ThreadingEvent()
        loop = asyncio.new_event_loop()
        interrupted = False
        main_task: asyncio.Task[None] | None = None
        bundle_tasks: list[asyncio.Future[None]] = []

        def on_sigint() -> None:
            nonlocal interrupted
            interrupted = True
            event.set()
            if main_task is not None:
                main_task.cancel()

        ctrl_c = _CtrlC(loop, on_sigint)
        raised_interrupt = False
        try:
            ctrl_c.install()
            main_task = loop.create_task(self._run_all(algorithm, runner, store, event, bundle_tasks))
            try:
                loop.run_until_complete(main_task)
            except asyncio.CancelledError:
                if not interrupted:
                    raise
            if interrupted:
                raised_interrupt = True
                raise KeyboardInterrupt
        finally:
            ctrl_c.hold()
            event.set()
            try:
                self._cancel_leftovers(loop)
                # A task that raised KeyboardInterrupt/SystemExit is done with an exception nobody
                # retrieved (asyncio re-raised it out of the loop instead): mark it seen.
                for task in bundle_tasks:
                    if task.done() and not task.cancelled():
                        task.exception()
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
                held = ctrl_c.restore()
            if held and not raised_interrupt:
                raise KeyboardInterrupt

    async def _run_all(
        self,
        algorithm: AlgorithmBundle,
        runner: RunnerBundle,
        store: LightningStore,
        event: ThreadingEvent,
        tasks: list[asyncio.Future[None]],
    ) -> None:
        errors: list[BaseException] = []

        async def guarded(name: str, make: Any, sets_event_on_return: bool) -> None:
            # The bundle's coroutine is created inside the task, so a task cancelled before its first
            # step leaves no never-awaited coroutine behind.
            try:
                await make()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("%s raised %r", name, exc)
                errors.append(exc)
                event.set()
                return
            except (KeyboardInterrupt, SystemExit):
                # asyncio re-raises these out of the loop at once; the event must still be set so
                # every other bundle sees the stop.
                event.set()
                raise
            except BaseException as exc:
                # Any other BaseException stays inside its task (asyncio does not re-raise it out of
                # the loop): record it like an error, or it would be swallowed (E6).
                logger.debug("%s raised %r", name, exc)
                errors.append(exc)
                event.set()
                return
            if sets_event_on_return:
                event.set()

        tasks.append(asyncio.ensure_future(guarded("algorithm", lambda: algorithm(store, event), True)))
        for i in range(self.n_runners):
            tasks.append(
                asyncio.ensure_future(guarded(f"runner {i}", lambda i=i: runner(store, i, event), False))
            )
        pending = set(tasks)
        stopper = asyncio.ensure_future(wait_async(event))
        try:
            while pending and not event.is_set():
                watched: set[asyncio.Future[Any]] = {*pending, stopper}
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                pending = {t for t in pending if not t.done()}
            if pending:
                _, pending = await asyncio.wait(pending, timeout=self.graceful_delay)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopper
        if errors:
            first = errors[0]
            for later in errors[1:]:
                note = f"also raised while stopping: {type(later).__qualname__}: {later}"
                if sys.version_info >= (3, 11):
                    first.add_note(note)
                else:
                    logger.error(note)
            raise first

    @staticmethod
    def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
        leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))


class _CtrlC:
    """Routes Ctrl+C to the loop while ``execute()`` runs, and holds it back while the loop closes.

    A plain Python handler, not ``loop.add_signal_handler``: removing a loop's handler (``close()`` does)
    puts Python's default handler back at once, so a second Ctrl+C landing then would raise in the middle
    of ``loop.close()`` and leave its selector and self-pipe open (K5). Here the caller's handler comes
    back only after the loop is closed. Main thread only: Python runs signal handlers nowhere else.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_sigint: Callable[[], None]) -> None:
        self.held = 0  # Ctrl+Cs that came after ``hold()``
        self._loop = loop
        self._on_sigint = on_sigint
        self._routing = False
        self._saved: tuple[Any, int] | None = None  # the caller's handler and wake-up fd, while installed
        self._wakeup: tuple[socket.socket, socket.socket] | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._wakeup = (reader, writer)
        # The kernel may hand SIGINT to any thread; the byte Python writes here wakes the loop, and the
        # interpreter then runs the handler on the main thread.
        self._loop.add_reader(reader.fileno(), self._drain)
        handler = signal.getsignal(signal.SIGINT)
        self._saved = (handler, signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False))
        self._routing = True
        signal.signal(signal.SIGINT, self._handle)

    def hold(self) -> None:
        """From now on a Ctrl+C is only counted: shutdown is already immediate."""
        self._routing = False

    def restore(self) -> bool:
        """After the loop is closed: put the caller's handler back; ``True`` if a Ctrl+C was held back."""
        saved, self._saved = self._saved, None
        if saved is not None:
            signal.set_wakeup_fd(saved[1])
        if self._wakeup is not None:
            for sock in self._wakeup:
                sock.close()
            self._wakeup = None
        # Last: from here on a Ctrl+C raises wherever it lands, and nothing is left open for it to leak.
        if saved is not None:
            signal.signal(signal.SIGINT, saved[0])
        return self.held > 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._routing:
            self._loop.call_soon_threadsafe(self._on_sigint)
        else:
            self.held += 1

    def _drain(self) -> None:
        assert self._wakeup is not None
        with contextlib.suppress(OSError):
            while self._wakeup[0].recv(512):
                pass
