"""``ray``: the algorithm in the calling process, each runner in a Ray actor, on one machine or a cluster.

For runners spread over several machines that already run Ray (the training side of such setups
usually does). Needs the optional extra: ``pip install 'agentlightning-execution[ray]'``; importing
``agentlightning`` never imports Ray, and building this strategy without it raises ``ImportError``
naming the extra.

Cluster. ``address`` (or ``RAY_ADDRESS``) joins a running cluster; a caller already connected to Ray
(``ray.init()`` before ``execute()``) is used as it is; otherwise ``execute()`` starts a single-node
local cluster and owns it (it asks for 127.0.0.1; Ray 2.60 replaces a loopback node address by the
machine's own, so its ports are then on that address, behind Ray's own token authentication).
Only what ``execute()`` started is undone: ``ray.shutdown()`` runs only
if ``execute()`` called ``ray.init()`` (for a joined cluster that only disconnects this driver, the
cluster keeps running), and on any cluster every actor and placement group it created is killed or
removed before ``execute()`` returns. Every Ray call that can hang is bounded: results are waited for
through futures with deadlines, never a bare ``ray.get``; ``ray.shutdown()`` runs in a thread joined
with a bound.

Store. The caller's store is served over HTTP by the ``cs`` server (``store/http``) on a thread of the
calling process, authenticated by a token made per run; each actor reaches it with an
``HttpLightningStore`` naming itself ``runner-<i>`` (so ``store.claims`` knows who holds what) and mirrors
the server's stop event (``event_bridge``, shared with ``cs``: a long-poll on ``/v1/event/wait``, L4
across nodes).
A Ray-native store (an actor owning it, calls as actor tasks) was not adopted: every store call would
then be an actor task round trip through the owner's raylet, and the algorithm in the caller's process
would lose direct access to its own store (S3, the caller's store holds every write). The HTTP path was
measured instead, with the ``bench.strategies`` workloads in one process against one running local
cluster, 2 runners, N = 1,000, medians of 3 (a 2-core machine at load ~18, so absolute figures are low):
W1 ``ray`` 675 rollouts/s beside ``cs`` 102 in the same run; W2 126 ms (``cs`` 135); W4 (``execute()``
-> every runner running, cluster already up) 13.0 s (``cs`` 4.5 s): actor start-up, not the store,
dominates. A Ray-native store was not measured.

Actors. One async actor per ``worker_id`` (no restarts: a dead runner is an error, not a silent retry),
0 CPUs unless ``runner_resources`` says otherwise. ``placement``: ``None`` (Ray decides), ``"spread"``
(Ray's SPREAD scheduling, best effort), ``"strict_spread"`` / ``"pack"`` (a placement group, one bundle
of ``runner_resources`` per runner; ``strict_spread`` puts every runner on a different node). Inside
the actor the runner runs under ``threads.BundleRun`` on a thread of its own, so the actor's loop stays
free to hear ``ray.cancel`` even while the bundle blocks.

Stop model: ``supervisor.Supervisor``'s (L1-L7, E1-E6, F1, K1-K5, T3), the actors being its worker pool
(``_Actors``). What differs from worker processes:

- The stop's steps: each actor sees the event through its bridge, and a runner still running
  ``graceful_timeout`` later is cancelled inside its actor (``CancelledError``, ``finally`` runs: L6).
  Runners still running ``terminate_timeout`` after that get ``ray.cancel`` (the cancellation is
  repeated at once), and ``terminate_timeout`` later ``ray.kill`` (a bundle stuck in blocking code: L7).
  Then every actor is killed, the placement group removed, the server stopped, and ``execute()`` returns.
- A runner's error arrives with its type, message and the actor's traceback (``remote_errors``), with a
  note naming the actor and its node. An actor that dies (its process killed, its node lost) is
  ``ActorDied`` - a ``WorkerDied`` - naming the worker, its pid and its node (F1); the attempts it held
  are given up at once, so a lost node loses nothing.
- Ctrl+C: actors do not share the caller's process group (Ray starts them), so a terminal's Ctrl+C reaches
  them only through this stop; each Ctrl+C after the first moves it to its next step at once (K5).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import psutil

try:
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
except ImportError as _missing:  # pragma: no cover - exercised by the test that hides Ray
    raise ImportError(
        "the 'ray' execution strategy needs Ray, which is an optional extra: "
        "pip install 'agentlightning-execution[ray]' (ray>=2.40)"
    ) from _missing

from agentlightning.execution import threads
from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.event_bridge import EventBridge
from agentlightning.execution.events import ThreadingEvent, wait_async
from agentlightning.execution.failures import FailureCollector
from agentlightning.execution.processes import WorkerDied, WorkerOutcome, WorkerStatus, validate_timeout
from agentlightning.execution.remote_stop import RunnerSides, stop_event_routes
from agentlightning.execution.supervisor import SUPERVISED_CAPABILITIES, SupervisedStrategy, Supervisor
from agentlightning.execution.threads import BundleRun
from agentlightning.remote_errors import dump_exception, load_exception
from agentlightning.store.base import LightningStore
from agentlightning.store.claims import ClaimLedger, ClaimTrackingStore
from agentlightning.store.http import HttpLightningStore, LightningStoreServer
from agentlightning.store.http.security import generate_token
from agentlightning.store.threaded import ThreadedLightningStore

__all__ = ["ActorDied", "RayExecutionStrategy"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

_log = logging.getLogger(__name__)

Placement = Literal["spread", "strict_spread", "pack"]
_PLACEMENTS: tuple[str, ...] = ("spread", "strict_spread", "pack")
_PG_STRATEGY = {"strict_spread": "STRICT_SPREAD", "pack": "PACK"}
_SHUTDOWN_SECONDS = 10.0


class ActorDied(WorkerDied):
    """A runner's Ray actor died (its process was killed, or its node was lost) before reporting."""

    def __init__(self, name: str, pid: int | None, node: str, cause: str) -> None:
        RuntimeError.__init__(self, f"Ray actor of {name!r} (pid {pid}, node {node}) died: {cause}")
        self.name = name
        self.pid = pid
        self.exitcode = None
        self.node = node
        self.cause = cause

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.pid, self.node, self.cause))


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
        if placement in _PG_STRATEGY and not any(resources.values()):
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
        ``remote_resources`` hook): its actors whose process still runs on this machine, and a placement
        group it did not remove. An actor on another machine is not seen here.
        """
        run = self._last_run
        if run is None:
            return []
        found = []
        for runner in run.runners:
            pid, node = runner.describe_node()
            if pid is not None and _is_actor_process(pid):
                found.append(f"Ray actor of {runner.name!r} (pid {pid}, node {node}) still running")
        if run.group is not None:
            found.append(f"Ray placement group {run.group.id.hex()} of the runners not removed")
        return found

    def caller_connection(self) -> _CallerConnection | None:
        """Connect this process to ``address`` (or ``RAY_ADDRESS``) as a training script's ``ray.init()``
        would (the conformance kit's ``caller_connection`` hook): ``execute()`` then runs against a
        connection its caller holds, which it must leave as it found it. ``None`` without an address.
        """
        if self.address is None:
            return None
        if not ray.is_initialized():
            ray.init(address=self.address, configure_logging=False)
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


def _actor_options(resources: Mapping[str, float]) -> dict[str, Any]:
    """Ray's actor options for ``resources`` (``CPU``/``GPU``/``memory`` have options of their own)."""
    options: dict[str, Any] = {"num_cpus": resources.get("CPU", 0.0)}
    if "GPU" in resources:
        options["num_gpus"] = resources["GPU"]
    if "memory" in resources:
        options["memory"] = resources["memory"]
    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU", "memory")}
    if custom:
        options["resources"] = custom
    return options


# -- what runs in each actor -------------------------------------------------------------------------------


class _RunnerHost:
    """One runner's actor: awaits the runner bundle once, against the served store, and reports how it ended.

    ``run`` returns ``None`` (the bundle returned or was stopped) or ``(error, raised_at)``: the bundle's
    exception serialised by ``remote_errors`` and ``time.monotonic()`` when it was recorded.
    """

    def __init__(self, name: str, url: str, token: str, grace: float, teardown: float) -> None:
        self.name = name
        self.url = url
        self.token = token
        self.grace = grace
        self.teardown = teardown
        self.bundle: BundleRun | None = None

    async def where(self) -> tuple[str, int]:
        """This actor's node id and pid (for messages naming a runner that died)."""
        return ray.get_runtime_context().get_node_id(), os.getpid()

    async def run(self, runner: RunnerBundle, worker_id: int) -> tuple[bytes, float] | None:
        loop = asyncio.get_running_loop()
        event = ThreadingEvent()
        failures = FailureCollector(_log)
        bridge = EventBridge(HttpLightningStore(self.url, token=self.token), event)
        store = ClaimTrackingStore(
            HttpLightningStore(self.url, token=self.token).named(self.name),
            client=self.name,
            heartbeats=True,
            close_inner=True,
        )
        bundle = self.bundle = BundleRun(
            self.name,
            lambda: runner(store, worker_id, event),
            event,
            failures,
            grace=self.grace,
            teardown_timeout=self.teardown,
            sets_event_on_return=False,
            after=store.close,
        )
        done: asyncio.Future[None] = loop.create_future()

        def _finished() -> None:
            if not done.done():
                done.set_result(None)

        def _bundle_thread() -> None:
            try:
                bundle.run()
            finally:
                with contextlib.suppress(RuntimeError):  # the actor's loop is gone: it is being killed
                    loop.call_soon_threadsafe(_finished)

        await asyncio.to_thread(bridge.start)
        thread = threading.Thread(target=_bundle_thread, name=f"agl-ray-{self.name}", daemon=True)
        thread.start()
        try:
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                # ray.cancel: the strategy's second step. Cancel the bundle now; a bundle that still does
                # not return (blocking code) is left to ray.kill.
                bundle.cancel_now()
                await asyncio.wait_for(asyncio.shield(done), self.teardown)
        finally:
            await asyncio.to_thread(bridge.stop)
        for failure in failures.failures:
            if failure.exc is not bundle.outcome:
                _log.warning("%s: %s", self.name, failure.summary())
        if bundle.outcome is None:
            return None
        at = next((f.at for f in failures.failures if f.exc is bundle.outcome), time.monotonic())
        return dump_exception(bundle.outcome), at


_RunnerActor: Any = ray.remote(max_restarts=0, max_task_retries=0)(_RunnerHost)


# -- one execute() -----------------------------------------------------------------------------------------


@dataclass
class _Runner:
    """One runner actor as the caller sees it."""

    name: str
    handle: Any
    run_ref: Any
    future: concurrent.futures.Future[Any]
    where: concurrent.futures.Future[Any]
    killed: bool = False
    settled: bool = False
    node_names: dict[str, str] = field(default_factory=dict)

    def describe_node(self) -> tuple[int | None, str]:
        if not self.where.done() or self.where.exception() is not None:
            return None, "unknown (it had not reported where it runs)"
        node_id, pid = self.where.result()
        address = self.node_names.get(node_id)
        return pid, f"{node_id[:12]}" + (f" at {address}" if address else "")


class _Cluster:
    """The Ray connection of one ``execute()``: joined, reused, or a local cluster started and owned."""

    def __init__(self, strategy: RayExecutionStrategy) -> None:
        self.s = strategy
        self.connected = False  # we called ray.init(): ray.shutdown() is ours to call
        self.owns_cluster = False
        self._sigterm: Any = None

    def start(self) -> None:
        if ray.is_initialized():
            return  # the caller's connection (and maybe its cluster): used, never shut down
        self._sigterm = signal.getsignal(signal.SIGTERM)
        kwargs: dict[str, Any] = {"configure_logging": False, "log_to_driver": True}
        if self.s.address is not None:
            kwargs["address"] = self.s.address
        else:
            self.owns_cluster = True
            kwargs.update(
                address="local",
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                num_cpus=self.s.local_num_cpus,
            )
        self.connected = True
        ray.init(**kwargs)

    def nodes(self) -> dict[str, str]:
        """Node id -> address of every node Ray knows."""
        try:
            return {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
        except Exception as exc:
            _log.debug("could not list Ray's nodes: %r", exc)
            return {}

    def server_host(self, nodes: Mapping[str, str]) -> str:
        if self.s.server_host is not None:
            return self.s.server_host
        if nodes and all(_is_loopback(address) for address in nodes.values()):
            return "127.0.0.1"
        return str(ray.util.get_node_ip_address())

    def stop(self, failures: FailureCollector) -> None:
        """Disconnect (and stop the local cluster) if this ``execute()`` connected; bounded."""
        if not self.connected:
            return
        self.connected = False
        thread = threading.Thread(target=_shutdown, args=(failures,), name="agl-ray-shutdown", daemon=True)
        thread.start()
        thread.join(_SHUTDOWN_SECONDS)
        if thread.is_alive():
            failures.record_cleanup_error(
                TimeoutError(f"ray.shutdown() did not finish within {_SHUTDOWN_SECONDS:g} s"), "ray.shutdown"
            )
        if self._sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._sigterm)  # ray.init installed its own (R7)


def _post(inbox: threads.Inbox, kind: str) -> Callable[[concurrent.futures.Future[Any]], None]:
    """A done-callback that wakes the calling thread's wait on ``inbox``."""
    return lambda _: inbox.put(kind)


def _shutdown(failures: FailureCollector) -> None:
    with failures.cleanup("ray.shutdown"):
        ray.shutdown()


def _is_actor_process(pid: int) -> bool:
    """Whether ``pid`` is a live Ray worker process on this machine (Ray names them ``ray::...``)."""
    try:
        process = psutil.Process(pid)
        return bool(process.status() != psutil.STATUS_ZOMBIE and process.name().startswith("ray::"))
    except Exception:  # gone, or not ours to look at
        return False


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


class _Actors:
    """The runner actors of one ``execute()`` as the supervisor's worker pool (``supervisor.WorkerPool``).

    Each actor's end becomes a ``WorkerOutcome``: ``returned`` (the bundle returned), ``raised`` (its
    error, with its type and the actor's traceback), ``died`` (``ActorDied``), or ``stopped`` (our own
    ``ray.cancel`` / ``ray.kill``). ``stop()`` is the actors' escalation: ``graceful_timeout +
    terminate_timeout`` after the stop began (each actor cancels its bundle after its grace), ``ray.cancel``;
    ``terminate_timeout`` later ``ray.kill``; every Ctrl+C after the first skips one step (K5).
    """

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.runners: list[_Runner] = []
        self._outcomes: list[WorkerOutcome] = []

    @property
    def running(self) -> list[str]:
        return [runner.name for runner in self.runners if not runner.settled]

    @property
    def outcomes(self) -> list[WorkerOutcome]:
        return list(self._outcomes)

    def collect(self) -> list[WorkerOutcome]:
        """The outcomes of actors seen to end since the last call."""
        newly = []
        for runner in self.runners:
            if not runner.settled and runner.future.done():
                newly.append(self._settle(runner))
        return newly

    async def wait_async(self, timeout: float | None = None) -> list[WorkerOutcome]:
        """Wait until an actor ends or the stop event is set (or ``timeout``); what ended meanwhile."""
        newly = self.collect()
        if newly or not self.running:
            return newly
        # Futures of their own: cancelling these must not touch the runners' futures.
        waits = [asyncio.wrap_future(r.run_ref.future()) for r in self.runners if not r.settled]
        if not self.run.event.is_set():  # once set, only the actors' ends are news
            waits.append(asyncio.ensure_future(wait_async(self.run.event)))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in waits:
                future.cancel()
            await asyncio.wait(waits)
        return self.collect()

    def stop(
        self, *, since: float | None = None, urgency: int = 0, interrupted: bool = False
    ) -> list[WorkerOutcome]:
        """Escalate on actors still running (see the class doc), then return every outcome.

        A ``KeyboardInterrupt`` meanwhile moves on to the next step at once and is raised once the last
        step is done (as ``processes.WorkerProcesses.stop``). ``interrupted`` changes nothing here: actors
        are not in the caller's process group, so a terminal's Ctrl+C never reached them.
        """
        s = self.run.s
        actions: list[Callable[[], None]] = [self._cancel, self._kill]
        waits = [s.graceful_timeout + s.terminate_timeout, s.terminate_timeout, s.terminate_timeout]
        skip = min(urgency, len(actions))  # steps whose wait is skipped: their action runs at once
        step, pending = 0, skip > 0
        began = time.monotonic() if since is None else since
        hurried = False
        inbox = self.run.inbox
        owns_wakeup = threading.current_thread() is threading.main_thread() and threads.claim_signal_wakeup(
            inbox.wakeup_fd
        )
        try:
            while True:
                try:
                    while pending:  # an action interrupted half-way runs again: each is idempotent
                        actions[step]()
                        step, began = step + 1, time.monotonic()
                        pending = step < skip
                    if not self._wait_until(began + waits[step]) or step >= len(actions):
                        break
                    pending = True
                except KeyboardInterrupt:
                    hurried = True
                    if step >= len(actions):
                        break
                    pending = True
        finally:
            if owns_wakeup:
                threads.release_signal_wakeup(inbox.wakeup_fd)
        if hurried:
            raise KeyboardInterrupt
        return self.outcomes

    def close(self) -> None:
        self.run._remove_actors()

    def _wait_until(self, deadline: float) -> bool:
        """Collect ends until every actor ended (``False``) or ``deadline`` passed (``True``)."""
        while True:
            self.collect()
            if not self.running:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.run.inbox.wait(left)

    def _cancel(self) -> None:
        for runner in self.runners:
            if not runner.settled:
                _log.info("ray: %s still running after its grace; ray.cancel", runner.name)
                with threads.sigint_deferred():
                    ray.cancel(runner.run_ref)

    def _kill(self) -> None:
        for runner in self.runners:
            if not runner.settled:
                _log.warning("ray: %s did not stop when cancelled; ray.kill", runner.name)
                runner.killed = True
                with threads.sigint_deferred():
                    ray.kill(runner.handle, no_restart=True)

    def _settle(self, runner: _Runner) -> WorkerOutcome:
        """How a runner's actor ended (once): a bundle error, a death, our own stop, or a return."""
        runner.settled = True
        pid, node = runner.describe_node()
        status: WorkerStatus = "raised"
        error: BaseException | None = None
        at: float | None = None
        try:
            result = runner.future.result()
        except (ray.exceptions.TaskCancelledError, concurrent.futures.CancelledError, asyncio.CancelledError):
            status = "stopped"  # our own ray.cancel: a stop, not a failure
        except ray.exceptions.RayActorError as exc:
            if runner.killed:
                status = "stopped"  # our own ray.kill
            else:
                status, error = "died", ActorDied(runner.name, pid, node, _first_line(exc))
        except ray.exceptions.RayTaskError as exc:  # the actor could not even start the bundle
            error = exc.as_instanceof_cause()
        except Exception as exc:
            error = exc
        else:
            if result is None:
                status = "returned"
            else:
                data, at = result
                error = load_exception(data, origin=f"Ray actor {runner.name!r} (pid {pid}, node {node})")
        outcome = WorkerOutcome(runner.name, pid, status, None, error, None, time.monotonic(), at)
        self._outcomes.append(outcome)
        return outcome


class _Run(Supervisor[RayExecutionStrategy]):
    """One ``execute()``: the cluster, the store served over HTTP, the runner actors."""

    label = "ray"

    def __init__(
        self,
        strategy: RayExecutionStrategy,
        algorithm: AlgorithmBundle,
        runner: RunnerBundle,
        store: LightningStore,
    ) -> None:
        # No worker process of ours shares the event: the actors mirror it over HTTP (event_bridge).
        super().__init__(strategy, algorithm, runner, store, event=ThreadingEvent())
        self.cluster = _Cluster(strategy)
        self.runner_sides = RunnerSides()  # the actors' event bridges attached to the server
        self.group: Any = None  # placement group
        self.actors = _Actors(self)
        self.server: LightningStoreServer | None = None

    @property
    def runners(self) -> list[_Runner]:
        return self.actors.runners

    # -- starting -------------------------------------------------------------------------------------

    def start(self) -> None:
        s = self.s
        wrapper = None if getattr(self.store, "thread_safe", False) else ThreadedLightningStore(self.store)
        served = self.served = wrapper or self.store
        self.close_served = None if wrapper is None else wrapper.close_sync
        self.claims = ClaimLedger()
        self.cluster.start()
        self.on_sigint()
        if self.ladder.interrupted:
            return  # Ctrl+C during start-up: start nothing more (K3)
        nodes = self.cluster.nodes()
        token = generate_token()
        # Bound before any actor exists: a taken port fails here, naming host and port (F2).
        self.server = LightningStoreServer(
            ClaimTrackingStore(served, ledger=self.claims),
            self.cluster.server_host(nodes),
            s.server_port,
            token=token,
            routes=stop_event_routes(self.event, self.runner_sides),
            graceful_seconds=min(s.graceful_timeout, 1.0),
        )
        self.server.start()
        _log.info("ray: serving the store at %s for %d runner actor(s)", self.server.url, s.n_runners)
        options = _actor_options(s.runner_resources)
        if s.placement in _PG_STRATEGY:
            bundles = [dict(s.runner_resources) for _ in range(s.n_runners)]
            self.group = placement_group(bundles, strategy=_PG_STRATEGY[s.placement])
            self._wait_for([self.group.ready().future()], "the placement group of the runners")
            if self.ladder.interrupted:
                return  # Ctrl+C while the cluster made room: start nothing more (K3)
        elif s.placement == "spread":
            options["scheduling_strategy"] = "SPREAD"
        teardown = max(s.terminate_timeout, 0.1)
        self.workers = self.actors
        for worker_id in range(s.n_runners):
            name = f"runner-{worker_id}"
            if self.group is not None:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group=self.group, placement_group_bundle_index=worker_id
                )
            handle = _RunnerActor.options(**options).remote(
                name, self.server.url, token, s.graceful_timeout, teardown
            )
            run_ref = handle.run.remote(self.runner, worker_id)
            runner = _Runner(name, handle, run_ref, run_ref.future(), handle.where.remote().future())
            runner.node_names = nodes
            runner.future.add_done_callback(_post(self.inbox, "ended"))
            self.runners.append(runner)
        self._wait_for([r.where for r in self.runners], "the runner actors to start")
        algorithm, event = self.algorithm, self.event
        self.main_run = self.main_bundle(
            "algorithm",
            lambda: algorithm(served, event),
            sets_event_on_return=True,
            teardown_timeout=max(s.terminate_timeout, 1.0),
        )

    def _wait_for(self, futures: list[concurrent.futures.Future[Any]], what: str) -> None:
        """Wait (bounded by ``start_timeout``) for start-up futures; a Ctrl+C or a failure cuts it short."""
        deadline = time.monotonic() + self.s.start_timeout
        for future in futures:
            future.add_done_callback(_post(self.inbox, "started"))
        while not all(f.done() for f in futures):
            self.on_sigint()
            for outcome in self.actors.collect():
                self.record(outcome)
            if self.ladder.interrupted or self.event.is_set():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"ray: gave up waiting for {what} after start_timeout={self.s.start_timeout:g} s "
                    f"(resources per runner: {self.s.runner_resources or 'none'}, placement: "
                    f"{self.s.placement}); does the cluster have room for {self.s.n_runners} runner(s)?"
                )
            self.inbox.wait(left)
        for future in futures:
            if future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    # -- stopping -------------------------------------------------------------------------------------

    def stop_services(self) -> None:
        if self.server is not None:
            server = self.server
            if self.runner_sides.attached:  # actors detach their bridges as they end
                self.step(
                    "waiting for the actors' event bridges",
                    lambda: self.runner_sides.wait_detached(self.s.terminate_timeout),
                )
            self.step("stopping the store server", server.stop)

    def release(self) -> None:
        self.step("stopping the Ray connection", lambda: self.cluster.stop(self.failures))

    def _remove_actors(self) -> None:
        """Kill every actor and remove the placement group; wait (bounded) until Ray reports them dead."""
        gone: list[concurrent.futures.Future[Any]] = []
        for runner in self.runners:
            self.actors.collect()
            if not runner.settled:
                _log.warning("ray: %s did not report how it ended; killed", runner.name)
            runner.killed = True
            ray.kill(runner.handle, no_restart=True)
            # Answered (with RayActorError) once the actor is dead: nothing of it is left running.
            future = runner.handle.where.remote().future()
            future.add_done_callback(_post(self.inbox, "gone"))
            gone.append(future)
        if self.group is not None:
            remove_placement_group(self.group)
            self.group = None
        deadline = time.monotonic() + max(self.s.terminate_timeout, 2.0)
        while not all(f.done() for f in gone) and time.monotonic() < deadline:
            self.inbox.wait(deadline - time.monotonic())
        # Ray reports an actor dead before its process has exited: wait for those on this machine.
        local = []
        for runner in self.runners:
            pid, _ = runner.describe_node()
            if pid is not None and _is_actor_process(pid):
                with contextlib.suppress(psutil.Error):
                    local.append(psutil.Process(pid))
        _, alive = psutil.wait_procs(local, timeout=max(0.0, deadline - time.monotonic()))
        if alive or not all(f.done() for f in gone):
            _log.warning("ray: not every runner actor was gone within the bound of its kill")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__
