"""Example strategy: every bundle on a thread of a ``concurrent.futures.ThreadPoolExecutor``, each with
its own event loop.

Written only against the public API (``agentlightning.ExecutionStrategy``, ``ThreadingEvent``,
``wait_async``, ``ThreadedLightningStore``), as a user would write it. Unlike ``single_loop``, a bundle
that blocks its loop for a while does not stall the others.

Stop model (the calling thread supervises on a small loop of its own, woken by the event, by bundle
threads finishing and by Ctrl+C; it never polls):
- the algorithm returns: the event is set; runners that watch it return; the rest are cancelled after
  ``graceful_delay``;
- a bundle raises an ``Exception``: the event is set, the others get ``graceful_delay`` to return, then
  are cancelled; the first error is re-raised, later ones are attached as notes (logged on 3.10);
- a bundle raises ``KeyboardInterrupt``, ``SystemExit`` or another ``BaseException``: the event is set and
  every other bundle is cancelled at once; it is re-raised;
- Ctrl+C (SIGINT, on the main thread): the event is set and every bundle is cancelled at once;
  ``execute()`` raises ``KeyboardInterrupt``. Later Ctrl+Cs change nothing: shutdown is already immediate.
Limitation: a bundle stuck in blocking (non-async) code cannot be cancelled; ``execute()`` waits
``join_timeout`` for its thread, logs it by name and returns, leaving it behind (``can_cancel_blocking_code:
False``).

The supervision steps are small methods, so a subclass can change one of them (the broken zoo in
``strategies/broken`` does exactly that, one defect each).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

from agentlightning.execution.base import AlgorithmBundle, ExecutionStrategy, RunnerBundle
from agentlightning.execution.events import ExecutionEvent, ThreadingEvent, wait_async
from agentlightning.store.base import LightningStore
from agentlightning.store.threaded import ThreadedLightningStore

__all__ = ["ThreadPoolExecutionStrategy"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Bundle:
    """One bundle of an ``execute()``: how to start it, and where it runs once started."""

    name: str
    make: Callable[[], Awaitable[None]]
    sets_event_on_return: bool
    loop: asyncio.AbstractEventLoop | None = None
    task: asyncio.Task[None] | None = None
    thread: str = ""


class Run:
    """The state of one ``execute()``, shared by the supervisor and the bundle threads."""

    def __init__(self, event: ExecutionEvent, bundles: list[Bundle]) -> None:
        self.event = event
        self.bundles = bundles
        # Re-entrant: the SIGINT handler takes it on the main thread, which may already hold it.
        self.lock = threading.RLock()
        # (origin, error) in the order they happened: the first one wins.
        self.failures: list[tuple[str, BaseException]] = []
        self.interrupted = False
        self.sigints = 0  # Ctrl+Cs received by the handler
        self.sigints_handled = 0  # of which ``_on_sigint`` has run for
        self.cancelling = False
        self.supervisor: asyncio.AbstractEventLoop | None = None
        self.hurry: asyncio.Future[None] | None = None  # done: stop without grace

    def hurry_up(self) -> None:
        """Skip the grace period (from any thread)."""

        def _set() -> None:
            if self.hurry is not None and not self.hurry.done():
                self.hurry.set_result(None)

        if self.supervisor is not None:
            with contextlib.suppress(RuntimeError):  # the supervisor loop may be closed already
                self.supervisor.call_soon_threadsafe(_set)


class ThreadPoolExecutionStrategy(ExecutionStrategy):
    """Runs the algorithm and ``n_runners`` runners on a thread pool, one event loop per bundle."""

    alias = "thread-pool"
    capability_manifest = {
        "uses_processes": False,
        "shares_caller_store": True,
        "can_cancel_blocking_code": False,
        "supports_start_methods": (),
        "supports_unmanaged_store": True,
        "runs_on_many_hosts": False,
    }

    def __init__(
        self,
        n_runners: int = 1,
        graceful_delay: float = 1.0,
        join_timeout: float = 5.0,
        managed_store: bool = True,
    ) -> None:
        if isinstance(n_runners, bool) or not isinstance(n_runners, int) or n_runners < 1:
            raise ValueError(f"n_runners must be an integer >= 1, got {n_runners!r}")
        for name, value in (("graceful_delay", graceful_delay), ("join_timeout", join_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(managed_store, bool):
            raise ValueError(f"managed_store must be True or False, got {managed_store!r}")
        self.n_runners = n_runners
        self.graceful_delay = float(graceful_delay)
        self.join_timeout = float(join_timeout)
        self.managed_store = managed_store

    @property
    def capabilities(self) -> dict[str, Any]:
        return {
            **self.capability_manifest,
            "grace_seconds": self.graceful_delay,
            "join_seconds": self.join_timeout,
        }

    # -- execute -------------------------------------------------------------------------------------

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        event = self._make_event()
        bundle_store, close_store = self._bundle_store(store)
        run = Run(event, self._bundles(algorithm, runner, bundle_store, event))
        restore_sigint = self._install_sigint(run)
        pool = concurrent.futures.ThreadPoolExecutor(len(run.bundles), thread_name_prefix="thread-pool")
        supervisor = asyncio.new_event_loop()
        stragglers: list[Bundle] = []
        try:
            run.supervisor = supervisor
            stragglers = supervisor.run_until_complete(self._supervise(run, pool))
        finally:
            run.event.set()
            self._cancel_all(run)
            run.supervisor = None
            supervisor.close()
            try:
                # Joins every thread unless one is stuck in blocking code: that one is left behind (logged).
                pool.shutdown(wait=not stragglers, cancel_futures=True)
                if close_store is not None:
                    close_store()
            finally:
                # Last: a Ctrl+C landing before this is recorded as a failure, not raised in the middle of
                # the joins above (which would leave the pool's threads and the store's loop behind, K5).
                restore_sigint()
        while run.sigints_handled < run.sigints:  # Ctrl+Cs that came once the supervisor loop had ended
            self._relay_sigint(run)
        self._raise_outcome(run)

    def _bundles(
        self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore, event: ExecutionEvent
    ) -> list[Bundle]:
        bundles = [Bundle("algorithm", lambda: algorithm(store, event), sets_event_on_return=True)]
        for worker_id in self._worker_ids():
            bundles.append(
                Bundle(
                    f"runner {worker_id}",
                    functools.partial(self._call_runner, runner, store, worker_id, event),
                    sets_event_on_return=False,
                )
            )
        return bundles

    def _call_runner(
        self, runner: RunnerBundle, store: LightningStore, worker_id: int, event: ExecutionEvent
    ) -> Awaitable[None]:
        return runner(store, worker_id, self._event_for_runner(event, worker_id))

    def _make_event(self) -> ExecutionEvent:
        return ThreadingEvent()

    def _event_for_runner(self, event: ExecutionEvent, worker_id: int) -> ExecutionEvent:
        return event

    def _worker_ids(self) -> range:
        return range(self.n_runners)

    def _bundle_store(self, store: LightningStore) -> tuple[LightningStore, Callable[[], None] | None]:
        """What bundles get: a wrapper that lets every bundle's loop use the store, or the object itself."""
        if not self.managed_store:
            return store, None
        wrapped = ThreadedLightningStore(store)
        return wrapped, wrapped.close_sync

    def _install_sigint(self, run: Run) -> Callable[[], None]:
        """Route Ctrl+C to ``_on_sigint``; returns how to put the caller's handler back.

        The handler only counts the signal and hands it to the supervisor loop: Python runs it on the
        main thread between any two bytecodes, possibly while that thread holds a lock ``_on_sigint``
        takes (the event's own, as ``wait_async`` registers a waker), and taking it again there would
        deadlock. ``call_soon_threadsafe`` takes no lock. A Ctrl+C that comes once the loop has ended is
        handled after the teardown, before ``execute()`` raises.
        """
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: FrameType | None) -> None:
            run.sigints += 1
            loop = run.supervisor
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: handled after it
                    loop.call_soon_threadsafe(self._relay_sigint, run)

        signal.signal(signal.SIGINT, handler)

        def restore() -> None:
            signal.signal(signal.SIGINT, previous)

        return restore

    def _relay_sigint(self, run: Run) -> None:
        if run.sigints_handled < run.sigints:
            run.sigints_handled += 1
            self._on_sigint(run)

    def _on_sigint(self, run: Run) -> None:
        with run.lock:
            if not run.interrupted:
                run.interrupted = True
                run.failures.append(("SIGINT", KeyboardInterrupt()))
        run.event.set()
        run.hurry_up()

    # -- supervision (the calling thread) ------------------------------------------------------------

    async def _supervise(self, run: Run, pool: concurrent.futures.ThreadPoolExecutor) -> list[Bundle]:
        """Start the bundles, wait for the stop, give the grace period, cancel, join. Returns stragglers."""
        run.hurry = asyncio.get_running_loop().create_future()
        running = await self._start(run, pool, run.bundles)
        stop = asyncio.ensure_future(wait_async(run.event))
        try:
            pending = set(running)
            while pending and not run.event.is_set():
                watched: set[asyncio.Future[Any]] = {*pending, stop}
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                pending = {future for future in pending if not future.done()}
            pending = await self._wait(pending, self.graceful_delay, run.hurry)
            self._cancel_all(run)
            pending = await self._wait(pending, self.join_timeout, None)
        finally:
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop
        stragglers = [running[future] for future in pending]
        self._report_stragglers(stragglers)
        return stragglers

    def _report_stragglers(self, stragglers: list[Bundle]) -> None:
        for bundle in stragglers:
            logger.warning(
                "%s (thread %s) is stuck in blocking code and did not stop within %.1f s: left behind",
                bundle.name,
                bundle.thread,
                self.graceful_delay + self.join_timeout,
            )

    async def _start(
        self, run: Run, pool: concurrent.futures.ThreadPoolExecutor, bundles: list[Bundle]
    ) -> dict[asyncio.Future[None], Bundle]:
        """Submit ``bundles`` to the pool, in order; returns the running ones by their future."""
        running: dict[asyncio.Future[None], Bundle] = {}
        for bundle in bundles:
            with run.lock:
                failed = bool(run.failures)
            if failed:
                break  # a failure or Ctrl+C during start-up: start nothing more
            # (An algorithm that already returned is no reason to skip a runner: every runner is called
            # once (L1), sees the event set and returns.)
            running[asyncio.wrap_future(pool.submit(self._run_bundle, run, bundle))] = bundle
        return running

    @staticmethod
    async def _wait(
        pending: set[asyncio.Future[None]], seconds: float, hurry: asyncio.Future[None] | None
    ) -> set[asyncio.Future[None]]:
        """Wait until ``pending`` are done, ``seconds`` pass or ``hurry`` is done; the still pending."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while pending and (hurry is None or not hurry.done()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            watched = {*pending, hurry} if hurry is not None else pending
            await asyncio.wait(watched, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            pending = {future for future in pending if not future.done()}
        return pending

    def _cancel_all(self, run: Run) -> None:
        """Cancel every bundle still running (from any thread); bundles not yet started never start."""
        with run.lock:
            run.cancelling = True
            targets = [(b.loop, b.task) for b in run.bundles if b.loop is not None and b.task is not None]
        for loop, task in targets:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: it is done
                loop.call_soon_threadsafe(task.cancel)

    def _raise_outcome(self, run: Run) -> None:
        """Raise the first failure (later ones attached as notes), or nothing."""
        if not run.failures:
            return
        first = run.failures[0][1]
        for _, exc in run.failures[1:]:
            note = f"also raised while stopping: {type(exc).__qualname__}: {exc}"
            if sys.version_info >= (3, 11):
                first.add_note(note)
            else:
                logger.error(note)
        raise first

    # -- bundle threads ------------------------------------------------------------------------------

    def _run_bundle(self, run: Run, bundle: Bundle) -> None:
        """Body of a pool thread: run one bundle on a fresh event loop, then close that loop."""
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            task = loop.create_task(self._guarded(run, bundle))
            with run.lock:
                bundle.loop, bundle.task = loop, task
                bundle.thread = threading.current_thread().name
                cancel_now = run.cancelling
            if cancel_now:
                task.cancel()
            # Failures were recorded by _guarded; a cancelled task ends with CancelledError here.
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)
        finally:
            with run.lock:
                bundle.loop = None
            self._close_loop(loop)
            asyncio.set_event_loop(None)

    async def _guarded(self, run: Run, bundle: Bundle) -> None:
        # The bundle's coroutine is created inside the task, so a task cancelled before its first step
        # leaves no never-awaited coroutine behind.
        try:
            await bundle.make()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # every failure is recorded; execute() re-raises the first
            self._bundle_failed(run, bundle, exc)
            return
        if bundle.sets_event_on_return:
            self._algorithm_returned(run)

    def _algorithm_returned(self, run: Run) -> None:
        run.event.set()

    def _bundle_failed(self, run: Run, bundle: Bundle, exc: BaseException) -> None:
        logger.debug("%s raised %r", bundle.name, exc)
        with run.lock:
            run.failures.append((bundle.name, exc))
        run.event.set()
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit...: stop without grace
            run.hurry_up()
            self._cancel_all(run)

    @staticmethod
    def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
        """Cancel what the bundle left on its loop, finish async generators and the executor, close."""
        try:
            leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
