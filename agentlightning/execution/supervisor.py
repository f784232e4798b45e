"""The supervisor of one ``execute()`` of a process-based strategy: the run's state machine, written once.

``ipc``, ``cs`` and ``ray`` (and any strategy whose runners live in other processes) share one stop model;
only where the processes come from, how the store is served and what a lost machine means differ. A strategy
configures a ``Supervisor`` subclass with those (``start``, ``stop_services``, and the claims hooks);
the supervisor owns the rest: the SIGINT relay and its inbox, the Ctrl+C ladder (``ctrl_c``), the failure
collector (``failures``), the bundle on the calling thread (``threads.BundleRun``), the watch over the
worker processes while it runs, and the stop.

Stop model (the contracts' IDs in brackets):

- The main bundle (the algorithm, or ``cs``'s one runner with ``main_process="runner"``) runs on the
  calling thread, under a ``threads.SigintRelay``, once, even if a worker already set the event (L1).
- Algorithm returns: the event is set (L2); workers that watch it return; a worker still starting
  then (imports, unpickling) is waited for and called all the same, its grace running from its start
  (L1); those still running ``graceful_timeout`` after the stop was first seen get SIGINT (blocking
  code gets ``KeyboardInterrupt``, an awaiting bundle is cancelled: its ``finally`` runs, L6/L7), then
  SIGTERM and SIGKILL, each ``terminate_timeout`` later (``processes.WorkerProcesses.stop``). Every
  worker is reaped, the store's service is stopped, ``execute()`` returns ``None``.
- A runner returns: nothing else happens (L3). Any bundle sets the event, in any process: every other
  bundle wakes at once (the event's pipe, L4).
- A bundle raises (any type; ``KeyboardInterrupt`` and ``SystemExit`` too): the event is set, everyone
  stops as above, and ``execute()`` raises the first failure with its original type, the worker's
  traceback and a note naming it (E1, E2, E6, K1, K2); later failures are attached (E3); cleanup errors
  never mask it (E4). A worker process that dies (a signal, ``os._exit``) is ``WorkerDied`` naming it
  and its exit status (F1).
- Ctrl+C climbs ``ctrl_c.CtrlCLadder``. First: handled as in ``shm`` (raised in bundle code, deferred in
  ours), the event is set and everyone stops with grace; worker processes that got it too (a terminal
  signals the whole group) end quietly; ``execute()`` raises ``KeyboardInterrupt`` (K3, K4). Second: the
  main bundle is cancelled at once and worker processes skip their grace; each further one during the
  stop moves on to SIGTERM, then SIGKILL (K5). Third: the main bundle is abandoned.
- Ctrl+C before every worker has started: nothing more is started; those still starting get SIGTERM at
  once instead of being waited for (there is nothing of theirs to stop cleanly; K3).
- Each step of the stop (closing, freeing, settling claims) runs to its end: a Ctrl+C meanwhile waits for
  it, then is recorded and hurries what follows; only the waits for workers (and ``cs``'s runner sides)
  are cut short by it. The calling process dying, even by SIGKILL, kills its worker processes within
  moments (F4).

Claims of a worker that is gone (T3): as soon as a worker is seen to end, however it ended, the
attempts it still held are given up (``give_up``: marked ``unresponsive`` in the caller's store, so each
rollout's ``RolloutConfig`` requeues or fails it while the algorithm still runs); once the store's
service has stopped, any claim left is settled the same way, before ``execute()`` returns or raises.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

from agentlightning.execution.base import AlgorithmBundle, ExecutionStrategy, RunnerBundle
from agentlightning.execution.ctrl_c import CtrlCLadder
from agentlightning.execution.events import MultiprocessingEvent, ThreadingEvent
from agentlightning.execution.failures import FailureCollector
from agentlightning.execution.processes import START_METHODS, WorkerOutcome, WorkerProcesses
from agentlightning.execution.socket_dirs import SOCKET_NAME, make_socket_dir, remove_socket_dir
from agentlightning.execution.threads import (
    BundleRun,
    Inbox,
    SigintRelay,
    close_loop,
    refuse_running_loop,
    run_on_private_loop,
    sigint_deferred,
)
from agentlightning.store.base import LightningStore
from agentlightning.store.claims import ClaimLedger

__all__ = [
    "SUPERVISED_CAPABILITIES",
    "WORKER_PROCESS_CAPABILITIES",
    "SupervisedStrategy",
    "Supervisor",
    "WorkerPool",
    "WorkerSpec",
]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

_log = logging.getLogger(__name__)

_STOP_ATTEMPTS = 3  # each step of the stop is idempotent: a Ctrl+C between them only hurries it


class WorkerPool(Protocol):
    """The workers a supervisor watches and stops (``processes.WorkerProcesses`` is one)."""

    @property
    def running(self) -> list[str]: ...

    @property
    def outcomes(self) -> list[WorkerOutcome]: ...

    async def wait_async(self, timeout: float | None = None) -> list[WorkerOutcome]: ...

    def stop(
        self, *, since: float | None = None, urgency: int = 0, interrupted: bool = False
    ) -> list[WorkerOutcome]: ...

    def close(self) -> None: ...


class WorkerSpec(NamedTuple):
    """One worker process to start: ``await target(*args)``, then ``await cleanup()`` in the worker, on
    a loop made by ``loop_factory`` (``None``: ``asyncio.run``'s; see ``WorkerProcesses.start``)."""

    name: str
    target: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    cleanup: Callable[[], Awaitable[Any]] | None = None
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None


def _ended(outcome: WorkerOutcome) -> str:
    """How a worker ended, for the log line that gives up its claims."""
    return outcome.status + (f" ({outcome.error})" if outcome.error is not None else "")


SUPERVISED_CAPABILITIES: Mapping[str, Any] = {
    "uses_processes": True,
    "shares_caller_store": True,
    # Runners live in other processes: they can never be handed the caller's object itself (S6).
    "supports_unmanaged_store": False,
    "can_cancel_blocking_code": True,  # runners can be signalled (or their actors cancelled and killed)
}
"""The capabilities every strategy run by a ``Supervisor`` shares; each adds its own."""

WORKER_PROCESS_CAPABILITIES: Mapping[str, Any] = {
    **SUPERVISED_CAPABILITIES,
    "supports_start_methods": tuple(m for m in START_METHODS if m in multiprocessing.get_all_start_methods()),
}
"""Those of a strategy whose runners are ``processes.WorkerProcesses`` (every start method available here)."""


class SupervisedStrategy(ExecutionStrategy):
    """A strategy whose ``execute()`` a ``Supervisor`` runs: it states its escalation bounds."""

    graceful_timeout: float
    terminate_timeout: float

    @property
    def capabilities(self) -> dict[str, Any]:
        return {
            **self.capability_manifest,
            "grace_seconds": self.graceful_timeout,
            "terminate_seconds": self.terminate_timeout,
        }


_S = TypeVar("_S", bound=SupervisedStrategy)


class Supervisor(Generic[_S]):
    """One ``execute()``: start, run the main bundle, watch the workers, stop; see the module's stop model.

    A strategy subclasses it and fills in ``start()`` (serve the store, start the workers with
    ``start_workers()``, set ``main_run`` with ``main_bundle()``), ``stop_services()`` (stop what
    ``start()`` served, after the workers) and, where it differs, how the claims of an ended worker are
    given up (``claim_client`` / ``give_up``) and what setting the event here means (``stop_here``).
    ``run()`` then drives the state machine and raises what ``failures`` decides.
    """

    label: ClassVar[str] = "supervisor"
    """Names this strategy's tasks and log lines."""
    socket_dir: str | None = None
    """The private directory of the run's Unix socket (``make_socket``), if it has one."""

    def __init__(
        self,
        strategy: _S,
        algorithm: AlgorithmBundle,
        runner: RunnerBundle,
        store: LightningStore,
        *,
        event: MultiprocessingEvent | ThreadingEvent | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        """``event``: the run's stop event (default: a ``MultiprocessingEvent`` of the strategy's
        ``start_method``, which worker processes share)."""
        refuse_running_loop()  # before anything exists that would need stopping
        self.s = strategy
        self.algorithm, self.runner, self.store = algorithm, runner, store
        self.log = logger or logging.getLogger(type(self).__module__)  # the strategy's own logger
        self.failures = FailureCollector(self.log)
        if event is None:
            event = MultiprocessingEvent(multiprocessing.get_context(getattr(strategy, "start_method", None)))
        self.event = event
        self.graceful_timeout = strategy.graceful_timeout
        self.terminate_timeout = strategy.terminate_timeout
        self.inbox = Inbox()
        self.relay = SigintRelay(self.inbox)
        self.ladder = CtrlCLadder(
            self.failures,
            stop=self.stop_here,
            force=self._force,
            abandon=self._abandon,
            grace=self.graceful_timeout,
            logger=self.log,
        )
        self.workers: WorkerPool | None = None
        self.main_run: BundleRun | None = None
        self.claims: ClaimLedger | None = None  # where the store is served: who claims what (T3)
        self.served: LightningStore | None = None  # the store served (the caller's, maybe wrapped)
        self.close_served: Callable[[], object] | None = None  # closes a wrapper around the caller's store
        self.recorded: set[str] = set()  # workers (and other origins) whose failure is recorded
        self.given_up: set[str] = set()  # workers whose claims were given up
        self.stop_seen_at: float | None = None

    # -- the state machine ------------------------------------------------------------------------------

    def run(self) -> None:
        """Start, run the main bundle, wait, stop; raise the failure to raise (never before all stopped)."""
        try:
            try:
                with self.relay:
                    self.start()
                    self.on_sigint()
                    # Only a Ctrl+C during start-up skips the main bundle (K3: nothing more is started).
                    if self.main_run is not None and not self.ladder.interrupted:
                        self.main_run.run(on_loop=self._attach)
                    self.on_sigint()
                    self._wait_for_workers()
                # A SIGINT the relay counted after the last look (it was still installed) is not lost.
                self.on_sigint()
            except BaseException as exc:  # our own machinery failed, or a Ctrl+C landed between steps
                self.stop_here()
                if isinstance(exc, KeyboardInterrupt):
                    self.ladder.escaped()
                else:
                    self.failures.record(exc, "execute()")
            for _ in range(_STOP_ATTEMPTS):
                try:
                    self._stop()
                    break
                except KeyboardInterrupt:
                    self.ladder.escaped()
        finally:
            if isinstance(self.event, MultiprocessingEvent):
                self.step("closing the stop event", self.event.close)
            self.step("closing the SIGINT inbox", self.inbox.close)
            self.release()
        self.failures.raise_first()

    def on_sigint(self) -> None:
        """Climb the ladder for the SIGINTs the relay counted (protected code on the calling thread)."""
        self.ladder.catch_up(self.relay.count)

    def stop_here(self) -> None:
        """Set the event for the bundles this supervisor runs (``cs`` runner sides keep it local)."""
        self.event.set()

    def step(self, what: str, step: Callable[[], object]) -> None:
        """Run one cleanup step to its end; what it raises is a cleanup error, which never masks a
        bundle's failure (E4). A Ctrl+C meanwhile waits for the step's end (a step torn half-way would
        leak what it was freeing), then is recorded and hurries the steps that follow."""
        try:
            with sigint_deferred():
                try:
                    step()
                except BaseException as exc:
                    self.failures.record_cleanup_error(exc, what)
        except KeyboardInterrupt:  # held back until the step was done
            self.ladder.escaped()

    def settle(self, what: str, make: Callable[[], Coroutine[Any, Any, object]]) -> None:
        """A short async step of the stop (the claims in the store), on a private loop, as a ``step``."""
        self.step(what, lambda: run_on_private_loop(make()))

    # -- what a strategy configures -------------------------------------------------------------------

    def start(self) -> None:
        """Serve the store, start the workers (``start_workers``) and set ``main_run`` (``main_bundle``)."""
        raise NotImplementedError

    def stop_services(self) -> None:
        """Stop what ``start()`` served, once every worker is reaped (each piece through ``step``)."""

    def release(self) -> None:
        """Free what is left after everything else (the socket directory, if any); never raises."""
        if self.socket_dir is not None:
            directory, self.socket_dir = self.socket_dir, None
            self.step(f"removing {directory}", lambda: remove_socket_dir(directory))

    def make_socket(self) -> str:
        """A Unix socket's path in a private directory of this run (``socket_dirs``), removed by
        ``release()`` once everything else is stopped."""
        self.socket_dir = make_socket_dir()
        return os.path.join(self.socket_dir, SOCKET_NAME)

    def claim_client(self, outcome: WorkerOutcome) -> str | None:
        """The name the ledger knows an ended worker's claims by (``None``: nothing to give up)."""
        return outcome.name

    async def give_up(self, outcomes: list[WorkerOutcome]) -> None:
        """These workers have ended: the attempts they still held are marked unresponsive (T3)."""
        claims, served = self.claims, self.served
        if claims is None or served is None:
            return
        for outcome in outcomes:
            client = self.claim_client(outcome)
            if client is None:
                continue
            try:
                await claims.give_up(served, client, _ended(outcome))
            except Exception as exc:  # a store failure: the final sweep tries again; never masks a failure
                self.failures.record_cleanup_error(
                    exc, f"marking the attempts of {outcome.name} unresponsive"
                )

    # -- helpers for start() --------------------------------------------------------------------------

    def start_workers(
        self,
        specs: Iterable[WorkerSpec],
        *,
        start_method: str | None,
        preload: tuple[str, ...],
        close_in_child: Sequence[socket.socket] = (),
    ) -> None:
        """Start a worker process per spec, in order; a Ctrl+C meanwhile starts nothing more (K3).

        ``specs`` is read lazily: nothing is made for a worker that is not started. ``close_in_child``:
        sockets of this process a forked worker closes first thing (``WorkerProcesses``).
        """
        if not isinstance(self.event, MultiprocessingEvent):
            raise TypeError(f"worker processes need a MultiprocessingEvent; this run has {self.event!r}")
        workers = WorkerProcesses(
            self.event,
            start_method=start_method,
            graceful_timeout=self.graceful_timeout,
            terminate_timeout=self.terminate_timeout,
            preload=preload,
            close_in_child=close_in_child,
        )
        self.workers = workers
        pending = iter(specs)
        while True:
            self.on_sigint()
            if self.ladder.interrupted:
                return
            spec = next(pending, None)
            if spec is None:
                return
            workers.start(
                spec.name, spec.target, *spec.args, cleanup=spec.cleanup, loop_factory=spec.loop_factory
            )

    def main_bundle(
        self,
        name: str,
        call: Callable[[], Awaitable[None]],
        *,
        sets_event_on_return: bool,
        teardown_timeout: float,
        after: Callable[[], Awaitable[object]] | None = None,
    ) -> BundleRun:
        """The bundle for the calling thread, under this run's event, failures and grace."""
        return BundleRun(
            name,
            call,
            self.event,  # type: ignore[arg-type]  # BundleRun only uses the ExecutionEvent protocol
            self.failures,
            grace=self.graceful_timeout,
            teardown_timeout=teardown_timeout,
            sets_event_on_return=sets_event_on_return,
            after=after,
        )

    # -- watching -------------------------------------------------------------------------------------

    def record(self, outcome: WorkerOutcome) -> None:
        """A worker's failure, once, ordered by when it was raised there (E3); the stop follows."""
        if outcome.error is None or outcome.name in self.recorded:
            return
        self.recorded.add(outcome.name)
        self.failures.record(outcome.error, f"worker {outcome.name!r}", at=outcome.raised_at)
        self.stop_here()

    def _attach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Hooks for the main bundle's loop: the SIGINT relay, and a task watching the workers."""
        if loop is None:
            self.relay.detach()
            return
        self.relay.attach(loop, self.on_sigint)
        self.on_sigint()  # a SIGINT that came before the attach
        if self.workers is not None and self.workers.running:
            # Also through the main bundle's grace, so a worker that ends then has its claims given up
            # while the algorithm can still see it (T3).
            loop.create_task(self._watch(until_stop=False), name=f"{self.label}: watch the workers")

    def _wait_for_workers(self) -> None:
        """After the main bundle (or without one): wait until the event is set or every worker ended."""
        if self.workers is None or not self.workers.running or self.event.is_set():
            return
        loop = asyncio.new_event_loop()  # never made the thread's current loop (R7)
        try:
            self.relay.attach(loop, self.on_sigint)
            self.on_sigint()  # a SIGINT that came before the attach
            loop.run_until_complete(self._watch(until_stop=True))
        finally:
            self.relay.detach()
            close_loop(loop, 1.0, f"{self.label} supervisor", self.failures)

    async def _watch(self, until_stop: bool) -> None:
        """Turn workers' outcomes into failures and given-up claims as they come (no polling)."""
        workers = self.workers
        assert workers is not None
        while workers.running and not (until_stop and self.event.is_set()):
            for outcome in await workers.wait_async():
                self.record(outcome)
                await self._give_up([outcome])
            if self.event.is_set() and self.stop_seen_at is None:
                self.stop_seen_at = time.monotonic()  # the workers' grace runs from here

    async def _give_up(self, outcomes: list[WorkerOutcome]) -> None:
        fresh = [outcome for outcome in outcomes if outcome.name not in self.given_up]
        self.given_up.update(outcome.name for outcome in fresh)
        if fresh:
            await self.give_up(fresh)

    # -- the ladder's rungs ---------------------------------------------------------------------------

    def _force(self) -> None:
        # Worker processes skip their grace through the ladder's urgency when they are stopped.
        if self.main_run is not None:
            self.main_run.cancel_now()

    def _abandon(self) -> None:
        if self.main_run is not None:
            self.main_run.abandon()

    # -- stopping -------------------------------------------------------------------------------------

    def _stop(self) -> None:
        """Stop and reap the workers, then what was served; settle the claims left; close the wrapper."""
        self.stop_here()
        self.on_sigint()
        workers = self.workers
        if workers is not None:
            outcomes = self._stop_workers(workers)
            self.settle(
                "marking the attempts of runners that ended unresponsive", lambda: self._give_up(outcomes)
            )
            self.step("closing the worker processes", workers.close)
        self.stop_services()
        claims, served = self.claims, self.served
        if claims is not None and served is not None:
            # Every request is answered now: claims still held belong to runners that are gone.
            self.settle(
                "marking the attempts of runners that are gone unresponsive",
                lambda: claims.give_up_all(served, "has stopped"),
            )
        if self.close_served is not None:
            self.step("closing the store wrapper", self.close_served)

    def _stop_workers(self, workers: WorkerPool) -> list[WorkerOutcome]:
        """Stop every worker (bounded), hurried by every Ctrl+C after the first; record what they report."""
        if self.stop_seen_at is None:
            self.stop_seen_at = time.monotonic()
        try:
            outcomes = workers.stop(
                since=self.stop_seen_at, urgency=self.ladder.urgency, interrupted=self.failures.interrupted
            )
        except KeyboardInterrupt:
            # stop() has reaped everything (a Ctrl+C only hurried it); the interrupt is the result.
            self.ladder.escaped()
            outcomes = workers.outcomes
        except BaseException as exc:
            self.failures.record_cleanup_error(exc, "stopping the worker processes")
            outcomes = workers.outcomes
        for outcome in outcomes:
            self.record(outcome)
        return outcomes
