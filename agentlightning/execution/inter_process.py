"""``ipc``: the algorithm in the calling process, each runner in a process of its own, on one machine.

For runners that are CPU-bound Python: threads (``shm``) share one GIL, processes do not. The algorithm
runs on the calling thread against the caller's store. Runners reach that store through
``agentlightning.store.ipc``: a Unix domain socket in a private temporary directory (removed afterwards,
R4) carrying msgpack frames; see that module for why a Unix socket. The server side runs on threads of
its own in the calling process (one per runner connection), not on the algorithm's loop: runners must be
served while the algorithm blocks its loop or has already returned (their last writes still land in the
caller's store, S3), and the algorithm's loop is closed when the algorithm ends. Worker processes are
started, supervised and stopped by ``processes.WorkerProcesses``; which failure is raised is decided by
``failures.FailureCollector``; the algorithm is run by ``threads.BundleRun`` under ``threads.SigintRelay``,
exactly as ``shm`` runs it, so both strategies share one stop model on the calling thread.

The channel's bounds (``agentlightning.store.ipc``): here the server takes up to ``max(64, 4 * n_runners)``
connections and applies the value limits of the caller's store. A socket directory left behind by a
caller killed with SIGKILL is swept by a later ``execute()`` (``socket_dirs``).

Stop model:

- Algorithm returns: the event is set (L2); runner processes that watch it return; after
  ``graceful_timeout`` the rest get SIGINT (blocking code gets ``KeyboardInterrupt``, an awaiting bundle is
  cancelled: its ``finally`` runs, L6/L7), ``terminate_timeout`` later SIGTERM, then SIGKILL. All are
  reaped, the server is stopped, ``execute()`` returns ``None``.
- A runner returns: nothing else happens (L3).
- Any bundle sets the event (in any process): every other bundle wakes at once (the event's pipe, L4).
- A bundle raises (any type; ``KeyboardInterrupt``, ``SystemExit`` too): the event is set, everyone stops
  as above, ``execute()`` raises the first failure with its original type, the runner's traceback and a
  note naming the worker (E1, E2, E6, K1, K2); later failures are attached (E3); cleanup errors never
  mask it (E4). A runner process that dies (a signal, ``os._exit``) is ``WorkerDied`` naming the worker
  and its exit status (F1).
- Ctrl+C: on the calling thread it is handled as in ``shm`` (raised in bundle code, deferred in ours),
  the event is set and everyone stops; runner processes that got it too (a terminal signals the whole
  group) end quietly; ``execute()`` raises ``KeyboardInterrupt`` (K3, K4).
- Second Ctrl+C: the algorithm is cancelled at once and runner processes get SIGINT without waiting out
  the grace; a further one during the stop moves on to SIGTERM, then SIGKILL (K5).
- Ctrl+C before every runner process has started its bundle: those still starting get SIGTERM at once
  instead of being waited for (there is nothing of theirs to stop cleanly).
- The calling process dies (even by SIGKILL): runner processes die within moments (F4; see
  ``processes``).

Claims of a runner that is gone (T3). The server knows which runner process each connection comes from
(the kernel's peer credentials, see ``store.ipc``) and records every attempt a runner claims
(``store.claims``). As soon as a runner process is seen to end, however it ended (returned, raised, was
killed: ``WorkerDied``), the attempts it still held are marked ``unresponsive`` in the caller's store, so
each rollout's ``RolloutConfig`` requeues or fails it while the algorithm still runs; once the server has
stopped, any claim left (a request the server answered after the runner died) is settled the same way,
before ``execute()`` returns or raises. A report the runner sent just before it died may thus be refused:
the attempt is then retried (or failed) rather than left claimed. Each runner's store sends heartbeats
for the attempts it holds (a third of their ``unresponsive_seconds`` apart, from the runner's loop), so a
live but slow runner is not given up on by the store's own unresponsive window.

What is lost when the calling process dies: with an in-memory store, everything - the queue, every
rollout, attempt, span and resource lives in that process. Runner processes die with it (F4). A durable
store, which would survive it, is planned but does not exist yet.

``can_cancel_blocking_code`` holds for runners (processes can be signalled). The algorithm runs on the
calling thread, as the design requires: blocking code there is reachable only by Ctrl+C.

Default start method: forkserver on Linux (see ``processes.default_start_method``); its server
preloads this package, so each runner starts in milliseconds after the first ``execute()``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from typing import Any, ClassVar

from agentlightning.execution import threads
from agentlightning.execution.base import AlgorithmBundle, ExecutionStrategy, RunnerBundle
from agentlightning.execution.events import MultiprocessingEvent
from agentlightning.execution.failures import FailureCollector
from agentlightning.execution.processes import (
    START_METHODS,
    WorkerOutcome,
    WorkerProcesses,
    validate_start_method,
    validate_timeout,
)
from agentlightning.execution.socket_dirs import SOCKET_NAME, make_socket_dir, remove_socket_dir
from agentlightning.execution.threads import BundleRun, SigintRelay, run_on_private_loop
from agentlightning.store.base import LightningStore
from agentlightning.store.claims import ClaimLedger, ClaimTrackingStore
from agentlightning.store.ipc import IpcLightningStore, IpcStoreServer, peer_client
from agentlightning.store.values import ValueLimits

__all__ = ["InterProcessExecutionStrategy"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

_log = logging.getLogger(__name__)

# What every runner process imports; the forkserver imports it once so that runners start in milliseconds.
_PRELOAD = ("agentlightning.execution.inter_process",)


class InterProcessExecutionStrategy(ExecutionStrategy):
    """Algorithm in the calling process, runners in worker processes; see the module's stop model.

    ``n_runners``: runner processes (>= 1). ``graceful_timeout``: seconds a bundle may take to return
    once the event is set. ``terminate_timeout``: seconds each later step (SIGINT, SIGTERM) may take
    before the next. ``start_method``: ``"fork"``, ``"spawn"`` or ``"forkserver"``; ``None`` picks
    ``processes.default_start_method()`` (forkserver on Linux: fork is unsafe once the caller has
    threads, and the store server is one).
    """

    alias: ClassVar[str] = "ipc"
    capability_manifest: ClassVar[dict[str, Any]] = {
        "uses_processes": True,
        "shares_caller_store": True,
        "can_cancel_blocking_code": True,
        "supports_start_methods": tuple(
            method for method in START_METHODS if method in multiprocessing.get_all_start_methods()
        ),
        # Runners live in other processes: they can never be handed the caller's object itself (S6).
        "supports_unmanaged_store": False,
        "runs_on_many_hosts": False,  # a Unix socket: every runner is on this machine (D1-D5 are n/a)
    }

    def __init__(
        self,
        n_runners: int = 1,
        graceful_timeout: float = 1.0,
        terminate_timeout: float = 1.0,
        start_method: str | None = None,
    ) -> None:
        if isinstance(n_runners, bool) or not isinstance(n_runners, int) or n_runners < 1:
            raise ValueError(f"n_runners must be an int >= 1, got {n_runners!r}")
        self.n_runners = n_runners
        self.graceful_timeout = validate_timeout(graceful_timeout, "graceful_timeout")
        self.terminate_timeout = validate_timeout(terminate_timeout, "terminate_timeout")
        if self.terminate_timeout == 0:
            raise ValueError("terminate_timeout must be > 0 seconds (processes need time to exit); got 0")
        self.start_method = validate_start_method(start_method)

    @property
    def capabilities(self) -> dict[str, Any]:
        return {
            **self.capability_manifest,
            "grace_seconds": self.graceful_timeout,
            "terminate_seconds": self.terminate_timeout,
        }

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        """Run the algorithm here and ``n_runners`` runner processes; raise as the stop model says."""
        failures = FailureCollector(_log)
        event = MultiprocessingEvent(multiprocessing.get_context(self.start_method))
        served, close_served = _thread_safe(store)
        tmpdir = make_socket_dir()
        run = _Run(self, failures, event, served)
        server: IpcStoreServer | None = None
        workers: WorkerProcesses | None = None
        try:
            limits = getattr(store, "limits", None)  # the caller's store's, which a wrapper would hide
            server = IpcStoreServer(
                ClaimTrackingStore(served, ledger=run.claims),  # records which runner process claims what
                os.path.join(tmpdir, SOCKET_NAME),
                # Runners may each connect from more than one event loop: room for a few connections each.
                max_connections=max(64, 4 * self.n_runners),
                limits=limits if isinstance(limits, ValueLimits) else None,
            )
            workers = WorkerProcesses(
                event,
                start_method=self.start_method,
                graceful_timeout=self.graceful_timeout,
                terminate_timeout=self.terminate_timeout,
                preload=_PRELOAD,
            )
            run.main(algorithm, runner, served, server, workers)
        except BaseException as exc:  # our own machinery failed, or Ctrl+C landed in it
            event.set()
            if isinstance(exc, KeyboardInterrupt):
                run.escaped_sigints += 1
            failures.record(exc, "execute()")
        finally:
            if workers is not None:
                with failures.cleanup("stopping the runner processes"):
                    run.stop_workers(workers)
                with failures.cleanup("closing the worker processes"):
                    workers.close()
            if server is not None:
                with failures.cleanup("stopping the ipc store server"):
                    server.close()
            # Every request is answered now: claims still held belong to runners that are gone.
            with failures.cleanup("marking the attempts of runners that are gone unresponsive"):
                run_on_private_loop(run.claims.give_up_all(served, "has stopped"))
            if close_served is not None:
                with failures.cleanup("closing the thread-safe store wrapper"):
                    close_served()
            with failures.cleanup("closing the stop event"):
                event.close()
            with failures.cleanup("closing the SIGINT inbox"):
                run.inbox.close()
            with failures.cleanup(f"removing {tmpdir}"):
                remove_socket_dir(tmpdir)
        failures.raise_first()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_runners={self.n_runners}, graceful_timeout={self.graceful_timeout}, "
            f"terminate_timeout={self.terminate_timeout}, start_method={self.start_method!r})"
        )


class _Run:
    """The state of one ``execute()``: SIGINT escalation, the worker watch, and the final stop."""

    def __init__(
        self,
        strategy: InterProcessExecutionStrategy,
        failures: FailureCollector,
        event: MultiprocessingEvent,
        store: LightningStore,
    ) -> None:
        self.strategy = strategy
        self.failures = failures
        self.event = event
        self.store = store
        self.claims = ClaimLedger()
        self.inbox = threads.Inbox()
        self.relay = SigintRelay(self.inbox)
        self.sigints = 0  # SIGINTs acted upon
        # SIGINTs raised in our own code instead: one that tripped while the relay was installed but was
        # handled just after it was removed (Python runs handlers between bytecodes) lands there.
        self.escaped_sigints = 0
        self.algorithm: BundleRun | None = None
        self.stop_seen_at: float | None = None

    def main(
        self,
        algorithm: AlgorithmBundle,
        runner: RunnerBundle,
        store: LightningStore,
        server: IpcStoreServer,
        workers: WorkerProcesses,
    ) -> None:
        strategy = self.strategy
        with self.relay:
            # Runner processes first, the server thread after: under fork nothing of ours is threaded yet.
            for worker_id in range(strategy.n_runners):
                if self.relay.count:
                    break  # Ctrl+C during start-up: start nothing more (K3)
                # A runner that raises sets the event in its own process at once (see processes).
                name = f"runner-{worker_id}"
                client = ClaimTrackingStore(
                    IpcLightningStore(
                        server.path, limits=server.limits, max_request_bytes=server.max_request_bytes
                    ),
                    client=name,
                    heartbeats=True,
                    close_inner=True,
                )
                workers.start(name, runner, client, worker_id, self.event, cleanup=client.close)
            server.start()
            self.on_sigint()
            # The algorithm runs once even if a runner already set the event (L1); only a Ctrl+C during
            # start-up skips it (K3: nothing more is started).
            if self.sigints == 0:
                self.algorithm = BundleRun(
                    "algorithm",
                    lambda: algorithm(store, self.event),
                    self.event,  # type: ignore[arg-type]  # BundleRun only uses the ExecutionEvent protocol
                    self.failures,
                    grace=strategy.graceful_timeout,
                    teardown_timeout=strategy.terminate_timeout,
                    sets_event_on_return=True,
                )
                self.algorithm.run(on_loop=lambda loop: self._on_loop(loop, workers))
            self.on_sigint()

    def _on_loop(self, loop: asyncio.AbstractEventLoop | None, workers: WorkerProcesses) -> None:
        if loop is None:
            self.relay.detach()
            return
        self.relay.attach(loop, self.on_sigint)
        loop.create_task(self._watch(workers), name="ipc worker watch")

    async def _watch(self, workers: WorkerProcesses) -> None:
        """Turn runner processes' outcomes into failures while the algorithm runs (no polling)."""
        while workers.running:
            for outcome in await workers.wait_async():
                self.record(outcome)
                await self._give_up(outcome)
            if self.event.is_set() and self.stop_seen_at is None:
                self.stop_seen_at = time.monotonic()

    async def _give_up(self, outcome: WorkerOutcome) -> None:
        """The runner has ended: the attempts it still held are marked unresponsive (T3)."""
        if outcome.pid is None:
            return
        try:
            await self.claims.give_up(self.store, peer_client(outcome.pid), _ended(outcome))
        except Exception as exc:  # a store failure: the final sweep tries again; never masks a failure
            self.failures.record_cleanup_error(exc, f"marking the attempts of {outcome.name} unresponsive")

    def record(self, outcome: WorkerOutcome) -> None:
        if outcome.error is not None:
            self.failures.record(outcome.error, outcome.name, at=outcome.raised_at)
            self.event.set()

    def on_sigint(self) -> None:
        """Act on SIGINTs the relay counted (called from protected code on the calling thread)."""
        while self.sigints < self.relay.count:
            self.sigints += 1
            if self.sigints == 1:
                self.failures.record_interrupt("SIGINT")
                self.event.set()
            elif self.algorithm is not None:
                _log.warning("SIGINT #%d: cancelling the algorithm without grace", self.sigints)
                self.algorithm.cancel_now()
                if self.sigints >= 3:
                    self.algorithm.abandon()

    def stop_workers(self, workers: WorkerProcesses) -> None:
        """Stop and reap every runner process (bounded), recording what they report."""
        self.on_sigint()
        self.event.set()
        if self.stop_seen_at is None:
            self.stop_seen_at = time.monotonic()
        urgency = max(0, self.sigints + self.escaped_sigints - 1)  # every Ctrl+C after the first skips a step
        try:
            outcomes = workers.stop(
                since=self.stop_seen_at, urgency=urgency, interrupted=self.failures.interrupted
            )
        except KeyboardInterrupt:
            # stop() has reaped everything (a Ctrl+C only hurried it); the interrupt is the result.
            self.failures.record_interrupt("SIGINT")
            outcomes = workers.outcomes
        seen = {id(f.exc) for f in self.failures.failures}
        for outcome in outcomes:
            if outcome.error is not None and id(outcome.error) not in seen:
                self.record(outcome)


def _ended(outcome: WorkerOutcome) -> str:
    """How a runner ended, for the log line that gives up its claims."""
    return f"({outcome.name}) {outcome.status}" + (f": {outcome.error}" if outcome.error is not None else "")


def _thread_safe(store: LightningStore) -> tuple[LightningStore, Any]:
    """The store to serve from the server thread and hand the algorithm, and how to close a wrapper.

    The caller's store is used from several threads (the algorithm's and the server's): a store that says
    it is ``thread_safe`` is used as is, any other is wrapped in a ``ThreadedLightningStore``.
    """
    if getattr(store, "thread_safe", False):
        return store, None
    from agentlightning.store.threaded import ThreadedLightningStore

    wrapped = ThreadedLightningStore(store)
    return wrapped, wrapped.close_sync
