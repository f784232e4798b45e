"""``ipc``: the algorithm in the calling process, each runner in a process of its own, on one machine.

For runners that are CPU-bound Python: threads (``shm``) share one GIL, processes do not. The algorithm
runs on the calling thread against the caller's store. Runners reach that store through
``agentlightning.store.ipc``: a Unix domain socket in a private temporary directory (removed afterwards,
R4) carrying msgpack frames; see that module for why a Unix socket. The server side runs on threads of
its own in the calling process (one per runner connection), not on the algorithm's loop: runners must be
served while the algorithm blocks its loop or has already returned (their last writes still land in the
caller's store, S3), and the algorithm's loop is closed when the algorithm ends. Worker processes are
started, supervised and stopped by ``processes.WorkerProcesses``; which failure is raised is decided by
``failures.FailureCollector``; the run itself (the algorithm on the calling thread, as in ``shm``, the
worker watch, Ctrl+C, the stop) by ``supervisor.Supervisor``, whose docstring is the stop model this
strategy follows (L1-L7, E1-E6, F1, F4, K1-K5).

The channel's bounds (``agentlightning.store.ipc``): here the server takes up to ``max(64, 4 * n_runners)``
connections and applies the value limits of the caller's store. A socket directory left behind by a
caller killed with SIGKILL is swept by a later ``execute()`` (``socket_dirs``).

Claims of a runner that is gone (T3), as the supervisor gives them up: the server knows which runner
process each connection comes from (the kernel's peer credentials, see ``store.ipc``) and records every
attempt a runner claims (``store.claims``) under that process's name. A report the runner sent just
before it died may thus be refused: the attempt is then retried (or failed) rather than left claimed.
Each runner's store sends heartbeats for the attempts it holds (a third of their
``unresponsive_seconds`` apart, from the runner's loop), so a live but slow runner is not given up on
by the store's own unresponsive window.

What is lost when the calling process dies: with an in-memory store, everything - the queue, every
rollout, attempt, span and resource lives in that process. Runner processes die with it (F4). A durable
store, which would survive it, is planned but does not exist yet.

``can_cancel_blocking_code`` holds for runners (processes can be signalled). The algorithm runs on the
calling thread, as the design requires: blocking code there is reachable only by Ctrl+C.

Default start method (``start_method=None``): each runner is forked from the caller when the caller has
a single thread, which ``start()`` arranges by starting the runners before the server's threads; a
caller with threads of its own gets forkserver runners (see ``processes``, whose docstring says why:
forked runners cost ~27% less CPU per rollout on both ends of the socket). W1 with 2 runners,
alternating with forkserver runners in one process at load 7.5 on 2 cores: 10,000 rollouts/s against
6,600 (median of 20 pairs; paired ratio 1.49); W4 12 ms against 65 ms. The forkserver preloads this
package, so its runners start in milliseconds after the first ``execute()``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.processes import WorkerOutcome, validate_start_method, validate_timeout
from agentlightning.execution.supervisor import (
    WORKER_PROCESS_CAPABILITIES,
    SupervisedStrategy,
    Supervisor,
    WorkerSpec,
)
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


class InterProcessExecutionStrategy(SupervisedStrategy):
    """Algorithm in the calling process, runners in worker processes; see the module's stop model.

    ``n_runners``: runner processes (>= 1). ``graceful_timeout``: seconds a bundle may take to return
    once the event is set. ``terminate_timeout``: seconds each later step (SIGINT, SIGTERM) may take
    before the next. ``start_method``: ``"fork"``, ``"spawn"`` or ``"forkserver"``; ``None`` forks each
    runner while the caller has a single thread, else uses ``processes.default_start_method()``
    (forkserver on Linux: fork is unsafe once the caller has threads).
    """

    alias: ClassVar[str] = "ipc"
    capability_manifest: ClassVar[dict[str, Any]] = {
        **WORKER_PROCESS_CAPABILITIES,
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
        self.start_method = None if start_method is None else validate_start_method(start_method)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_runners={self.n_runners}, graceful_timeout={self.graceful_timeout}, "
            f"terminate_timeout={self.terminate_timeout}, start_method={self.start_method!r})"
        )

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        """Run the algorithm here and ``n_runners`` runner processes; raise as the stop model says."""
        _Run(self, algorithm, runner, store).run()


class _Run(Supervisor[InterProcessExecutionStrategy]):
    """One ``execute()``: the store served over a Unix socket in a private directory, runner processes."""

    label = "ipc"
    server: IpcStoreServer | None = None

    def start(self) -> None:
        s, event = self.s, self.event
        served, self.close_served = _thread_safe(self.store)
        self.served, self.claims = served, ClaimLedger()
        path = self.make_socket()
        limits = getattr(self.store, "limits", None)  # the caller's store's, which a wrapper would hide
        server = self.server = IpcStoreServer(
            ClaimTrackingStore(served, ledger=self.claims),  # records which runner process claims what
            path,
            # Runners may each connect from more than one event loop: room for a few connections each.
            max_connections=max(64, 4 * s.n_runners),
            limits=limits if isinstance(limits, ValueLimits) else None,
        )
        # Runner processes first, the server thread after: under fork nothing of ours is threaded yet.
        # A runner that raises sets the event in its own process at once (see processes).
        self.start_workers(
            (self._runner_spec(server, worker_id) for worker_id in range(s.n_runners)),
            start_method=s.start_method,
            preload=_PRELOAD,
        )
        server.start()
        algorithm = self.algorithm
        self.main_run = self.main_bundle(
            "algorithm",
            lambda: algorithm(served, event),
            sets_event_on_return=True,
            teardown_timeout=s.terminate_timeout,
        )

    def _runner_spec(self, server: IpcStoreServer, worker_id: int) -> WorkerSpec:
        name = f"runner-{worker_id}"
        client = ClaimTrackingStore(
            IpcLightningStore(server.path, limits=server.limits, max_request_bytes=server.max_request_bytes),
            client=name,
            heartbeats=True,
            close_inner=True,
        )
        return WorkerSpec(name, self.runner, (client, worker_id, self.event), client.close)

    def claim_client(self, outcome: WorkerOutcome) -> str | None:
        # The server names each connection by its peer's pid (the kernel's credentials, see store.ipc).
        return None if outcome.pid is None else peer_client(outcome.pid)

    def stop_services(self) -> None:
        if self.server is not None:
            self.step("stopping the ipc store server", self.server.close)


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
