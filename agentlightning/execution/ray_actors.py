"""``ray``: the algorithm in the calling process, each runner in a Ray actor, on one machine or a cluster.

For runners spread over several machines that already run Ray (the training side of such setups
usually does). Needs the optional extra: ``pip install 'agentlightning-execution[ray]'``; importing
``agentlightning`` never imports Ray, and building this strategy without it raises ``ImportError``
naming the extra.

Driver. ``execute()`` never talks to Ray from the calling process: ``ray.init()`` starts native threads
(gRPC's), listener threads and connections there that ``ray.shutdown()`` does not all end, and the
caller would keep them after every run (R1, R3). One worker process per ``execute()``, the driver
(``ray_driver``, started and stopped by ``processes.WorkerProcesses`` like ``ipc``'s and ``cs``'s workers),
joins the cluster, places the actors, watches and stops them, and relays each actor's end to the caller
over a pipe; everything Ray-side of the run ends with that process. The calling process keeps the
algorithm and the store server. Its cost, measured with three ``execute()`` calls in one process against
one running local cluster (2 runners, bundles that return at once, an otherwise idle 2-core machine):
the driver has joined 0.6-2.3 s after ``execute()`` began (the first includes starting the forkserver,
which imports Ray once), the actors were placed 1.7-2.9 s later (each run is a Ray job of its own, so
each actor is a fresh worker process), and ``execute()`` returned after 3.6-4.0 s. Measured again by
phase (2 runners, a running cluster, a 2-core machine at load 6-7): the driver process runs 0.02-0.05 s
after ``execute()`` began once the forkserver is up (about 1 s with its start, which imports Ray) and has
joined 0.1 s later; the actors run 1.2-3.2 s after they were asked for; each runner's process runs its
bundle 0.3-1.2 s after its actor spawned it. Ray prestarts idle workers (``num_cpus`` of them) only for
the first driver that joins a cluster, and a worker that hosted an actor exits with it, so only the
first run against a fresh cluster finds workers waiting; every later run starts its actors' workers,
except on a cluster the project started itself (``ray_cluster.LocalRayCluster``: the kit's, the
benchmark's), which keeps a pool of prestarted workers of no job that any run's actors take
(``ray_worker_pool``; with it the actors ran 0.11-0.23 s after they were asked for, against 1.6-6.6 s
without, at load 5-7; the start-up as a whole did not show it under that load, as the pool's boots
take the same CPU). A cluster this strategy joins or starts itself gets no pool.

Cluster. ``address`` (or ``RAY_ADDRESS``) is joined by the driver; a caller already connected to Ray
(``ray.init()`` before ``execute()``) is joined at the address of that connection, with its job's
``runtime_env``, and left as it is; otherwise the driver starts a single-node local cluster and shuts it
down before it exits (it asks for 127.0.0.1; Ray 2.60 replaces a loopback node address by the machine's
own, so its ports are then on that address, behind Ray's own token authentication). Every actor and
placement group the driver created is killed or removed before it exits. Every wait on Ray is bounded:
start-up by ``start_timeout``, the stop by the escalation below.

Store. The caller's store is served over HTTP by the ``cs`` server (``store/http``) on a thread of the
calling process, authenticated by a token made per run; each actor reaches it with an
``HttpLightningStore`` naming itself ``runner-<i>`` (so ``store.claims`` knows who holds what) and mirrors
the server's stop event (``event_bridge``, shared with ``cs``: a long-poll on ``/v1/event/wait``, L4
across nodes). The server listens on ``server_host`` when given (bound before the driver starts, so a
taken port fails first: F2), else on 127.0.0.1 when every node is on loopback, else on this node's Ray
address (which the driver reports once it joined). It also listens on a Unix socket in a private
directory of the run (``Supervisor.make_socket``, as ``cs``'s), which a runner on the caller's machine,
in its network namespace, uses instead of TCP (``socket_dirs.local_socket``; a node elsewhere, or in a
namespace of its own standing for another host, uses TCP). Measured with W1 at N = 5,000 (2 runners, a
2-core machine, the CPU of every process read by ``bench.ray_cost``'s reader, two pairs alternated): the
server spent 330-342 us per rollout instead of 362-369, the runners' processes 540-554 instead of
568-586, and W1 went from 1,364-1,404 to 1,470-1,510 rollouts/s.
A Ray-native store (an actor owning it, calls as actor tasks) was not adopted: every store call would
then be an actor task round trip through the owner's raylet, and the algorithm in the caller's process
would lose direct access to its own store (S3, the caller's store holds every write). The HTTP path was
measured instead, with the ``bench.strategies`` workloads in one process against one running local
cluster, 2 runners, N = 1,000, medians of 3 (a 2-core machine at load ~18, so absolute figures are low):
W1 ``ray`` 675 rollouts/s beside ``cs`` 102 in the same run; W2 126 ms (``cs`` 135); W4 (``execute()``
-> every runner running, cluster already up) 13.0 s (``cs`` 4.5 s): actor start-up, not the store,
dominates. Those figures predate the driver process (which adds its start and its join of the cluster
to W4); a Ray-native store was not measured.

Actors. One async actor per ``worker_id`` (no restarts: a dead runner is an error, not a silent retry),
0 CPUs unless ``runner_resources`` says otherwise. ``placement``: ``None`` (Ray decides), ``"spread"``
(Ray's SPREAD scheduling, best effort), ``"strict_spread"`` / ``"pack"`` (a placement group, one bundle
of ``runner_resources`` per runner; ``strict_spread`` puts every runner on a different node).

Runner processes. The runner does not run in its actor's process but in a child of it, started, watched,
stopped and reaped by the actor with ``processes.WorkerProcesses`` (the machinery of ``ipc``'s and
``cs``'s workers; spawn, as an actor is a threaded process). Why: an actor's process is Ray's to reap,
and when it is killed Ray reports only a lost connection, never its exit status. As the child's parent,
the actor sees how the runner's process ended, and a runner killed by a signal is
``RunnerProcessDied`` - a ``WorkerDied`` - naming the worker, its pid, its exit status and the node
(F1), as ``ipc`` and ``cs`` name theirs. The child mirrors the actor's stop event (a
``MultiprocessingEvent``, fed by the actor's ``EventBridge``), is not a Ray worker (``ray`` APIs are not
connected there; ``AGL_RAY_NODE_ID`` names its node; the runner bundle reaches it pickled by reference,
so it must be importable on the workers), and dies with its actor (the shared parent-death
guards: ``ray.kill`` of the actor, or its node lost, ends it too). Its cost: one more process per
runner, plus the ``multiprocessing`` resource tracker that spawn starts in the actor. Measured with four
``execute()`` calls in one process against one running local cluster (2 runners, bundles that return at
once, a 2-core machine shared with other work), alternating with the code before this process existed:
the runner's process runs its bundle 0.4-0.6 s after its actor spawned it, and ``execute()`` took
0.4-1.0 s longer (medians of runs 2-4: 2.0 and 3.0 s against 1.1 and 2.6 s). The runner's process holds
about 49 MB of RSS, the tracker 13 MB. Spawn would also run Ray's worker script (the actor's
``__main__``) again in the child, importing all of Ray, which it never uses: the script's path is hidden
while the child is spawned (0.35 s less on an idle machine, a second under load).

Stop model: ``supervisor.Supervisor``'s (L1-L7, E1-E6, F1, F4, K1-K5, T3), the driver's relayed actor ends
being its worker pool (``_DriverPool``). What differs from worker processes:

- The stop's steps: each actor sees the event through its bridge, its runner's process through the
  event the actor shares with it; the actor then stops that process with the shared escalation
  (``graceful_timeout``, then SIGINT: ``CancelledError`` in an awaiting bundle, ``finally`` runs, L6;
  ``terminate_timeout`` later SIGTERM, then SIGKILL: a bundle stuck in blocking code, L7). The driver's
  last resorts: runners still running ``graceful_timeout + terminate_timeout`` after the stop get
  ``ray.cancel`` (the actor moves its process's escalation one step on at once), and
  ``terminate_timeout`` later ``ray.kill`` (the process dies with its actor). Then every actor is
  killed and the placement group removed, and the driver exits. The caller waits for it with the
  shared escalation (SIGINT, SIGTERM, SIGKILL) after the driver's own bound; each Ctrl+C after the first
  hurries it (K5), and a driver that dies takes its actors with it (Ray kills the actors of a dead
  owner). Then the server stops and ``execute()`` returns.
- A runner's error arrives with its type, message and the runner process's traceback (``remote_errors``),
  with notes naming that process and the actor and node it ran on (E2). A runner's process that dies (a
  signal, ``os._exit``) is ``RunnerProcessDied`` naming the worker, its pid, its exit status and its node
  (F1). An actor that dies itself (``ray.kill`` by someone else, its node lost) is ``ActorDied`` - a
  ``WorkerDied`` too - naming the worker, the actor's pid and its node, and what Ray says of the death
  (D2; Ray does not know the exit status of an actor's process). Either way the attempts the runner held
  are given up at once, so a lost node loses nothing.
- Ctrl+C: actors do not share the caller's process group (Ray starts them), so a terminal's Ctrl+C reaches
  them only through this stop; the driver, a child of the caller, gets it too and stops its actors.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

try:
    import ray

    from agentlightning.execution.ray_driver import (
        PG_STRATEGY,
        ActorDied,
        DriverConfig,
        RunnerProcessDied,
        drive,
        is_actor_process,
        is_loopback,
        is_runner_process,
    )
except ImportError as _missing:  # pragma: no cover - exercised by the test that hides Ray
    raise ImportError(
        "the 'ray' execution strategy needs Ray, which is an optional extra: "
        "pip install 'agentlightning-execution[ray]' (ray>=2.40)"
    ) from _missing

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.events import MultiprocessingEvent
from agentlightning.execution.processes import (
    WorkerOutcome,
    WorkerProcesses,
    WorkerStatus,
    default_start_method,
    validate_timeout,
)
from agentlightning.execution.remote_stop import RunnerSides, stop_event_routes
from agentlightning.execution.supervisor import SUPERVISED_CAPABILITIES, SupervisedStrategy, Supervisor
from agentlightning.execution.threads import sigint_deferred
from agentlightning.remote_errors import load_exception
from agentlightning.store.base import LightningStore
from agentlightning.store.claims import ClaimLedger, ClaimTrackingStore
from agentlightning.store.http import LightningStoreServer
from agentlightning.store.http.security import generate_token
from agentlightning.store.threaded import ThreadedLightningStore

__all__ = ["ActorDied", "RayExecutionStrategy", "RunnerProcessDied"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

_log = logging.getLogger(__name__)

Placement = Literal["spread", "strict_spread", "pack"]
_PLACEMENTS: tuple[str, ...] = ("spread", "strict_spread", "pack")
_DRIVER = "ray-driver"  # the driver process's name among the supervisor's workers
# The driver imports Ray once in the forkserver rather than once per run.
_PRELOAD = ("agentlightning.execution.ray_driver",)
_GRPC_TIMER = "grpc_global_tim"  # a thread's name as the kernel keeps it (15 characters)
_GRPC_TIMER_POOL = 2  # gRPC's timer threads once its first timer has fired
_TIMER_POOL_SECONDS = 10.0  # a hang bound on a loaded machine; with a timer made to fire, ~0.01 s
_TIMER_POLL = 0.01
_TIMER_KICK_SECONDS = 0.001  # the deadline of the call whose deadline timer completes gRPC's timer pool
_TIMER_KICK_KEY = b"agl-ray-timer-pool"  # read, never written: the call exists only for its deadline
# Beyond start_timeout: how long the caller waits for the driver's word before it stops waiting.
_START_MARGIN = 10.0


class RayExecutionStrategy(SupervisedStrategy):
    """Runners as Ray actors, the algorithm on the calling thread; see the module docstring.

    ``n_runners``: runner actors (>= 1). ``address``: the cluster to join (``None``: ``RAY_ADDRESS``, else
    the caller's Ray connection, else a local cluster this strategy starts and stops). ``placement``:
    ``None``, ``"spread"``, ``"strict_spread"`` or ``"pack"``. ``runner_resources``: Ray resources each
    runner actor reserves (``{"CPU": 1, "GPU": 1, "my_label": 1}``; default none). ``local_num_cpus``: CPUs
    of a local cluster this strategy starts (default: the machine's). ``server_host`` / ``server_port``:
    where the store server listens for the actors (default: 127.0.0.1 when every node of the cluster is
    on loopback, else this node's Ray address; port 0: ephemeral). ``graceful_timeout`` /
    ``terminate_timeout``: the escalation bounds. ``start_timeout``: how long starting (or joining) the
    cluster and placing the actors may take before ``execute()`` fails naming what is missing.
    """

    alias: ClassVar[str] = "ray"
    capability_manifest: ClassVar[dict[str, Any]] = {
        **SUPERVISED_CAPABILITIES,
        "supports_start_methods": (),
        "runs_on_many_hosts": False,
        # Placing a run's actors and their runner processes: 2.5-4 s on a 2-core machine, 4-8 s loaded.
        "start_seconds": 5.0,
    }
    # The conformance kit starts one cluster per session (or joins RAY_ADDRESS): see ray_cluster.
    conformance_session_service: ClassVar[str] = "agentlightning.execution.ray_cluster:kit_session"

    def __init__(
        self,
        n_runners: int = 1,
        address: str | None = None,
        placement: Placement | None = None,
        runner_resources: Mapping[str, float] | None = None,
        local_num_cpus: int | None = None,
        server_host: str | None = None,
        server_port: int = 0,
        graceful_timeout: float = 1.0,
        terminate_timeout: float = 1.0,
        start_timeout: float = 120.0,
    ) -> None:
        if isinstance(n_runners, bool) or not isinstance(n_runners, int) or n_runners < 1:
            raise ValueError(f"n_runners must be an int >= 1; got {n_runners!r}")
        address = (os.environ.get("RAY_ADDRESS") or None) if address is None else address
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(f"address must be a non-empty Ray address (host:port, 'auto'); got {address!r}")
        if placement is not None and placement not in _PLACEMENTS:
            raise ValueError(f"placement must be None or one of {', '.join(_PLACEMENTS)}; got {placement!r}")
        resources = _validate_resources(runner_resources)
        if placement in PG_STRATEGY and not any(resources.values()):
            raise ValueError(
                f"placement={placement!r} reserves one placement-group bundle per runner, and a bundle "
                f"needs a positive amount of some resource: set runner_resources (e.g. {{'CPU': 1}})"
            )
        if local_num_cpus is not None and (
            isinstance(local_num_cpus, bool) or not isinstance(local_num_cpus, int) or local_num_cpus < 1
        ):
            raise ValueError(f"local_num_cpus must be None or an int >= 1; got {local_num_cpus!r}")
        if server_host is not None and (not isinstance(server_host, str) or not server_host.strip()):
            raise ValueError(f"server_host must be None or a host name or address; got {server_host!r}")
        if isinstance(server_port, bool) or not isinstance(server_port, int) or not 0 <= server_port <= 65535:
            raise ValueError(f"server_port must be an integer from 0 to 65535; got {server_port!r}")
        start = validate_timeout(start_timeout, "start_timeout")
        if start <= 0:
            raise ValueError(f"start_timeout must be > 0 seconds; got {start_timeout!r}")
        self.n_runners = n_runners
        self.address = None if address is None else address.strip()
        self.placement: Placement | None = placement
        self.runner_resources = resources
        self.local_num_cpus = local_num_cpus
        self.server_host = None if server_host is None else server_host.strip()
        self.server_port = server_port
        self.graceful_timeout = validate_timeout(graceful_timeout, "graceful_timeout")
        self.terminate_timeout = validate_timeout(terminate_timeout, "terminate_timeout")
        self.start_timeout = start
        self._last_run: _Run | None = None  # for remote_resources(); never pickled

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_last_run": None}

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        """Run the algorithm here and the runners as actors; raise as the module docstring says."""
        run = _Run(self, algorithm, runner, store)
        self._last_run = run
        run.run()

    def remote_resources(self) -> list[str]:
        """What the last ``execute()`` created on the cluster and is still alive (the conformance kit's
        ``remote_resources`` hook): its actors whose process still runs on this machine, read from the
        machine's process table. An actor on another machine is not seen here; the driver, the process
        that owns the actors, is a child of the caller and seen as one.
        """
        run = self._last_run
        if run is None or run.pool is None:
            return []
        pool = run.pool
        actors = [
            f"Ray actor of {name!r} (pid {pid}, node {node}) still running"
            for name, (pid, node) in pool.placed.items()
            if pid is not None and is_actor_process(pid)
        ]
        processes = [
            f"runner process of {name!r} (pid {pid}, node {pool.placed.get(name, (None, '?'))[1]}) "
            "still running"
            for name, pid in pool.children.items()
            if is_runner_process(pid)
        ]
        return actors + processes

    def caller_connection(self) -> _CallerConnection | None:
        """Connect this process to ``address`` (or ``RAY_ADDRESS``) as a training script's ``ray.init()``
        would (the conformance kit's ``caller_connection`` hook): ``execute()`` then runs against a
        connection its caller holds, which it must leave as it found it. ``None`` without an address.
        """
        if self.address is None:
            return None
        if not ray.is_initialized():
            ray.init(address=self.address, configure_logging=False)
            _await_timer_threads()
        return _CallerConnection()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_runners={self.n_runners}, address={self.address!r}, "
            f"placement={self.placement!r}, runner_resources={self.runner_resources!r}, "
            f"graceful_timeout={self.graceful_timeout}, terminate_timeout={self.terminate_timeout})"
        )


class _CallerConnection:
    """The caller's Ray connection as Ray itself reports it (never from the strategy's bookkeeping)."""

    def describe(self) -> str:
        if not ray.is_initialized():
            return "not connected to Ray (ray.is_initialized() is False)"
        return f"Ray driver connected to the cluster at {ray.get_runtime_context().gcs_address}"


def _timer_threads() -> int | None:
    """How many gRPC timer threads this process has (Linux: ``/proc``; ``None`` where unreadable)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    count = 0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm:
                count += comm.read().startswith(_GRPC_TIMER)
        except OSError:  # the thread ended meanwhile
            continue
    return count


def _await_timer_threads() -> None:
    """Wait (bounded) until a fresh Ray connection's gRPC timer pool is complete.

    gRPC starts its second timer thread ("grpc_global_timer") only when its first timer fires, by
    default its backup poller's, 5 s after ``ray.init()``. A caller's connection is only settled once
    it has: before, that thread would be counted as started by the ``execute()`` that follows. So a
    timer is made to fire now: a read from Ray's GCS whose deadline (1 ms) expires, once per poll,
    until the thread is there (measured: 0.004-0.04 s after ``ray.init()`` instead of 4.9-5.1 s; every
    later timer is gRPC's own, at its default pace, and the pool stays at two threads). The thread
    itself is what is waited for; the natural 5 s timer remains the fallback if a call cannot be made.
    """
    deadline = time.monotonic() + _TIMER_POOL_SECONDS
    while True:
        count = _timer_threads()
        if count is None or count >= _GRPC_TIMER_POOL or time.monotonic() >= deadline:
            return
        _expire_a_timer()
        time.sleep(_TIMER_POLL)


def _expire_a_timer() -> None:
    """One GCS read with a deadline too short to be met: its deadline timer fires on gRPC's timer thread."""
    try:
        gcs = ray._private.worker.global_worker.gcs_client
        gcs.internal_kv_get(_TIMER_KICK_KEY, b"agentlightning", timeout=_TIMER_KICK_SECONDS)
    except Exception as exc:  # DEADLINE_EXCEEDED, as meant; or an older Ray without this client
        _log.debug("ray: the GCS read that fires a gRPC timer ended with %r", exc)


def _validate_resources(value: Mapping[str, float] | None) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"runner_resources must be a mapping of resource name to amount; got {value!r}")
    resources: dict[str, float] = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"runner_resources: resource names must be non-empty strings; got {name!r}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not amount >= 0:
            raise ValueError(f"runner_resources[{name!r}] must be a number >= 0; got {amount!r}")
        resources[name] = float(amount)
    return resources


def _driver_config(strategy: RayExecutionStrategy) -> DriverConfig:
    """How the driver joins (or starts) the cluster; see the module docstring."""
    init: dict[str, Any] = {"configure_logging": False, "log_to_driver": True}
    if strategy.address is not None:
        init["address"] = strategy.address
    elif ray.is_initialized():  # the caller's connection: join its cluster as its job does
        context = ray.get_runtime_context()
        init["address"] = context.gcs_address
        init["namespace"] = context.namespace
        init["runtime_env"] = dict(context.runtime_env or {})
    else:
        init.update(
            address="local",
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            num_cpus=strategy.local_num_cpus,
        )
    return DriverConfig(
        n_runners=strategy.n_runners,
        init=init,
        placement=strategy.placement,
        runner_resources=dict(strategy.runner_resources),
        graceful_timeout=strategy.graceful_timeout,
        terminate_timeout=strategy.terminate_timeout,
        start_timeout=strategy.start_timeout,
    )


class _DriverPool:
    """The driver process as the supervisor's worker pool (``supervisor.WorkerPool``).

    Its workers are the runner actors: each ``("ended", ...)`` the driver relays becomes a
    ``WorkerOutcome`` named after the runner (``returned``, ``raised`` with the bundle's error, ``died``
    with ``ActorDied``, ``stopped`` by the driver's own ``ray.cancel`` / ``ray.kill``). The driver itself is
    a worker named ``ray-driver``: its own failure (joining, placing) is its outcome's error, and once it
    has ended every runner it had not reported is ``stopped`` (its actors ended with it). ``stop()`` is
    ``processes.WorkerProcesses.stop`` on the driver, whose grace is the driver's own stop bound.
    """

    def __init__(self, run: _Run, config: DriverConfig, start_method: str) -> None:
        self.run = run
        self.config = config
        assert isinstance(run.event, MultiprocessingEvent)
        self.processes = WorkerProcesses(
            run.event,
            start_method=start_method,
            graceful_timeout=config.stop_seconds,
            terminate_timeout=run.s.terminate_timeout,
            preload=_PRELOAD,
        )
        self.names = [f"runner-{i}" for i in range(config.n_runners)]
        self.placed: dict[str, tuple[int | None, str]] = {}
        self.children: dict[str, int] = {}  # each runner's process, the child of its actor
        self.nodes: dict[str, str] | None = None
        self.node_address = ""
        self.control: multiprocessing.connection.Connection | None = None
        self.driver_pid: int | None = None
        self._outcomes: list[WorkerOutcome] = []
        self._fresh: list[WorkerOutcome] = []
        self._seen = 0  # driver outcomes handled
        self._driver_ended = False
        self.told_interrupted = False

    def start(self, runner: RunnerBundle) -> None:
        ctx = multiprocessing.get_context(self.processes.start_method)
        with sigint_deferred():  # a descriptor pair is made: a Ctrl+C must not land between them
            self.control, theirs = ctx.Pipe(duplex=True)
        try:
            self.processes.start(_DRIVER, drive, self.config, theirs, runner, self.run.event)
        finally:
            theirs.close()
        self.driver_pid = self.processes.pid(_DRIVER)

    def send(self, *message: Any) -> None:
        assert self.control is not None
        self.control.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def wait(self, timeout: float | None, wake_on: list[Any]) -> None:
        """Until the driver says something or ends, the event is set, one of ``wake_on`` is readable."""
        control = [self.control] if self.control is not None and not self.control.closed else []
        self.processes.wait(timeout, wake_on=[*control, *wake_on])

    @property
    def driver_running(self) -> bool:
        return not self._driver_ended and self.driver_pid is not None

    # -- the WorkerPool protocol ------------------------------------------------------------------------

    @property
    def running(self) -> list[str]:
        ended = {outcome.name for outcome in self._outcomes}
        names = [name for name in self.names if name not in ended] if self.driver_running else []
        return names + ([_DRIVER] if self.driver_running else [])

    @property
    def outcomes(self) -> list[WorkerOutcome]:
        return list(self._outcomes)

    def collect(self) -> list[WorkerOutcome]:
        """What ended since the last call: relayed actor ends, then the driver's own."""
        self._read()
        self.processes.wait(0)
        for outcome in self.processes.outcomes[self._seen :]:
            self._seen += 1
            self._read()  # what it wrote just before it exited
            self._driver_ended = True
            ended = {o.name for o in self._outcomes}
            for name in self.names:
                if name not in ended:
                    pid, _ = self.placed.get(name, (None, ""))
                    self._add(WorkerOutcome(name, pid, "stopped", None, None, None, time.monotonic()))
            self._add(outcome)
        fresh, self._fresh = self._fresh, []
        return fresh

    async def wait_async(self, timeout: float | None = None) -> list[WorkerOutcome]:
        newly = self.collect()
        if newly or not self.running:
            return newly
        fds = [self.control.fileno()] if self.control is not None and not self.control.closed else []
        await self.processes.wait_async(timeout, wake_on=fds)
        return self.collect()

    def stop(
        self, *, since: float | None = None, urgency: int = 0, interrupted: bool = False
    ) -> list[WorkerOutcome]:
        try:
            self.processes.stop(since=since, urgency=urgency, interrupted=interrupted)
        finally:
            self.collect()
        return self.outcomes

    def close(self) -> None:
        try:
            self.processes.close()
        finally:
            if self.control is not None:
                self.control.close()

    # -- the driver's messages --------------------------------------------------------------------------

    def _add(self, outcome: WorkerOutcome) -> None:
        self._outcomes.append(outcome)
        self._fresh.append(outcome)

    def _read(self) -> None:
        control = self.control
        while control is not None and not control.closed:
            with sigint_deferred():  # a message read must be handled, not lost to a Ctrl+C
                try:
                    if not control.poll(0):
                        return
                    message = pickle.loads(control.recv_bytes())
                except (EOFError, OSError):
                    control.close()
                    return
                self._handle(message)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "nodes":
            self.nodes, self.node_address = dict(message[1]), str(message[2])
        elif kind == "placed":
            self.placed = {name: (pid, node) for name, pid, node in message[1]}
        elif kind == "child":
            self.children[str(message[1])] = int(message[2])
        elif kind == "ended":
            name, status, data, raised_at, pid, node = message[1:]
            error = None
            if data is not None:  # ActorDied names the actor itself; a bundle's error gets a note
                origin = None if status == "died" else f"Ray actor {name!r} (pid {pid}, node {node})"
                error = load_exception(data, origin=origin)
            state: WorkerStatus = status
            self._add(WorkerOutcome(name, pid, state, None, error, None, time.monotonic(), raised_at))
        else:
            self.run.log.error("ray: the driver sent an unknown message %r", kind)


class _Run(Supervisor[RayExecutionStrategy]):
    """One ``execute()``: the store served over HTTP, the driver process and, through it, the actors."""

    label = "ray"

    def __init__(
        self,
        strategy: RayExecutionStrategy,
        algorithm: AlgorithmBundle,
        runner: RunnerBundle,
        store: LightningStore,
    ) -> None:
        self.start_method = default_start_method()
        event = MultiprocessingEvent(multiprocessing.get_context(self.start_method))
        super().__init__(strategy, algorithm, runner, store, event=event)
        self.runner_sides = RunnerSides()  # the actors' event bridges attached to the server
        self.server: LightningStoreServer | None = None
        self.pool: _DriverPool | None = None
        self.token = generate_token()

    # -- starting -------------------------------------------------------------------------------------

    def start(self) -> None:
        s = self.s
        wrapper = None if getattr(self.store, "thread_safe", False) else ThreadedLightningStore(self.store)
        served = self.served = wrapper or self.store
        self.close_served = None if wrapper is None else wrapper.close_sync
        self.claims = ClaimLedger()
        if s.server_host is not None:
            self._serve(s.server_host)  # a taken port fails here, before any process starts (F2)
        config = _driver_config(s)
        self.on_sigint()
        if self.ladder.interrupted:
            return  # Ctrl+C before anything started: start nothing (K3)
        pool = self.pool = _DriverPool(self, config, self.start_method)
        self.workers = pool
        pool.start(self.runner)
        if not self._await(lambda: pool.nodes is not None, "the Ray driver to join the cluster"):
            return
        if self.server is None:
            nodes = pool.nodes or {}
            loopback = bool(nodes) and all(is_loopback(address) for address in nodes.values())
            self._serve("127.0.0.1" if loopback else pool.node_address)
        assert self.server is not None
        pool.send("serve", self.server.url, self.token, self.server.unix_socket)
        if not self._await(lambda: len(pool.placed) == s.n_runners, "the runner actors to start"):
            return
        algorithm, event = self.algorithm, self.event
        self.main_run = self.main_bundle(
            "algorithm",
            lambda: algorithm(served, event),
            sets_event_on_return=True,
            teardown_timeout=max(s.terminate_timeout, 1.0),
        )

    def _serve(self, host: str) -> None:
        assert self.served is not None and self.claims is not None
        self.server = LightningStoreServer(
            ClaimTrackingStore(self.served, ledger=self.claims),
            host,
            self.s.server_port,
            token=self.token,
            routes=stop_event_routes(self.event, self.runner_sides),
            graceful_seconds=min(self.s.graceful_timeout, 1.0),
            # Runners on this machine connect through it instead of TCP (``socket_dirs.local_socket``).
            unix_socket=self.make_socket(),
        )
        self.server.start()
        _log.info("ray: serving the store at %s for %d runner actor(s)", self.server.url, self.s.n_runners)

    def _await(self, ready: Callable[[], bool], what: str) -> bool:
        """Wait for the driver's word; ``False`` when a Ctrl+C, the event or the driver's end cut it short.

        The driver bounds its own start-up by ``start_timeout``; this bound only guards against a driver
        that neither answers nor ends.
        """
        pool = self.pool
        assert pool is not None
        deadline = time.monotonic() + self.s.start_timeout + _START_MARGIN
        while True:
            self.on_sigint()
            for outcome in pool.collect():
                self.record(outcome)
            if ready():
                return True
            if self.ladder.interrupted or self.event.is_set() or not pool.driver_running:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"ray: gave up waiting for {what} after {self.s.start_timeout + _START_MARGIN:g} s"
                )
            pool.wait(left, [self.inbox.reader_fd])
            self.inbox.drain()

    # -- stopping -------------------------------------------------------------------------------------

    def stop_here(self) -> None:
        """Set the event; a Ctrl+C before the actors are placed is told to the driver first (K3)."""
        pool = self.pool
        if (
            pool is not None
            and self.failures.interrupted
            and not pool.told_interrupted
            and len(pool.placed) < self.s.n_runners
            and pool.driver_running
        ):
            pool.told_interrupted = True
            with contextlib.suppress(OSError):  # the driver is gone: there is nothing to tell
                pool.send("interrupted")
        super().stop_here()

    def claim_client(self, outcome: WorkerOutcome) -> str | None:
        return None if outcome.name == _DRIVER else outcome.name

    def stop_services(self) -> None:
        if self.server is not None:
            server = self.server
            # No wait for the actors' bridges: the driver has ended, so every actor has either ended its
            # run (which detaches its bridge before it reports) or been killed, and a killed one never
            # detaches; waiting for it only delayed a Ctrl+C's KeyboardInterrupt (K3, K4).
            if attached := self.runner_sides.attached:
                _log.info("ray: event bridges of killed actors still attached: %s", attached)
            self.step("stopping the store server", server.stop)
