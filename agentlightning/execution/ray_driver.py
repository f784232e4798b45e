"""The ``ray`` strategy's driver process: the only process of a run that talks to Ray.

``ray.init()`` starts threads (gRPC's, Ray's log and error listeners) and opens connections that
``ray.shutdown()`` does not all end, so a driver in the caller's process would leave them there. The
strategy (``ray_actors``) therefore starts this driver as a worker process of its own
(``processes.WorkerProcesses``, the shared stop escalation and parent-death guards) and keeps only the
algorithm and the store server in the caller. The driver joins the cluster, places the runner actors,
watches them, stops them, and tells the caller over a pipe what happened; when it exits, Ray's side of the
run ends with it (a dead driver's actors are killed by Ray, as their owner is gone).

Conversation over the control pipe (pickled tuples, driver -> caller unless marked):

1. ``("nodes", {node id: address}, this node's address)`` once connected;
2. caller -> driver ``("serve", url, token, unix_socket)``: where the caller serves its store (runners on
   the caller's machine use its Unix socket, ``socket_dirs.local_socket``); or, before the actors
   are placed, ``("interrupted",)``: a Ctrl+C stops the run (sent before the event is set);
3. ``("child", name, pid)`` per runner, once its process (a child of its actor) runs its bundle, then
   ``("placed", [(name, pid, node), ...])`` once every actor reported where it runs and every runner's
   process runs its bundle;
4. ``("ended", name, status, error, raised_at, pid, node)`` per actor, as each ends (``error``: the
   bundle's exception serialised by ``remote_errors``, ``RunnerProcessDied`` when the runner's process
   died, with its exit status, or ``ActorDied`` when the actor itself did);
5. the driver returns once every actor is gone; a failure of its own (joining, placing) is raised, and
   reaches the caller as the worker's error.

Each actor (``_RunnerHost``) runs its runner in a child process it starts, watches, stops and reaps with
``processes.WorkerProcesses`` (spawn), so that it sees that process's exit status: Ray reaps an actor's own
process and reports its death only as a lost connection. The child shares a ``MultiprocessingEvent`` with
its actor, which the actor's ``EventBridge`` sets when the server's event is set (and the other way).

Stop (the run's ``MultiprocessingEvent``, shared with the caller, is set): each actor sees it through its
event bridge, its runner's process through the event they share; the actor then stops that process with
the shared escalation (``graceful_timeout``, SIGINT, ``terminate_timeout``, SIGTERM, SIGKILL). The
driver's last resorts: ``ray.cancel`` ``graceful_timeout + terminate_timeout`` after the stop (the actor
moves that escalation one step on at once, ``WorkerProcesses.hurry``: the next signal goes out now, and a
process still starting gets SIGTERM at once), then ``ray.kill`` after another ``terminate_timeout`` (the
runner's process dies with its actor: ``processes``' parent-death guards). A SIGINT from the caller's
escalation (a further Ctrl+C) moves on to the next step at once; SIGTERM ends the driver, and Ray kills
its actors. A Ctrl+C before every actor has started kills those still starting at once instead of
waiting for them (there is nothing of theirs to stop cleanly; K3), as ``processes`` does with worker
processes still starting; an actor that is up but whose runner's process is still starting is
cancelled at once (the actor SIGKILLs that process).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import ipaddress
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from agentlightning import event_loops
from agentlightning.execution import threads
from agentlightning.execution.base import RunnerBundle
from agentlightning.execution.event_bridge import EventBridge
from agentlightning.execution.events import MultiprocessingEvent
from agentlightning.execution.failures import FailureCollector
from agentlightning.execution.processes import WorkerDied, WorkerOutcome, WorkerProcesses
from agentlightning.execution.socket_dirs import local_socket
from agentlightning.remote_errors import dump_exception
from agentlightning.store.claims import ClaimTrackingStore
from agentlightning.store.http import HttpLightningStore

__all__ = [
    "PG_STRATEGY",
    "REMOVE_SECONDS",
    "RUNNER_NODE_ENV",
    "ActorDied",
    "DriverConfig",
    "RunnerProcessDied",
    "drive",
    "is_actor_process",
    "is_loopback",
    "is_runner_process",
]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

_log = logging.getLogger(__name__)

PG_STRATEGY = {"strict_spread": "STRICT_SPREAD", "pack": "PACK"}
_SHUTDOWN_SECONDS = 10.0
REMOVE_SECONDS = 2.0  # at least: how long killed actors get to be reported dead and to exit
RUNNER_NODE_ENV = "AGL_RAY_NODE_ID"
"""Set in each runner's process: the id of the Ray node it runs on (it is not a Ray worker itself)."""
# A Ray actor is a threaded process (gRPC, Ray's core worker): a fork of it could inherit locks held by
# threads that do not exist in the child. Spawn starts the runner's interpreter afresh.
_START_METHOD = "spawn"


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


class RunnerProcessDied(WorkerDied):
    """A runner's process, the child of its Ray actor, ended without reporting (a signal, ``os._exit``);
    its actor, its parent, saw its exit status."""

    def __init__(self, name: str, pid: int | None, exitcode: int | None, node: str) -> None:
        super().__init__(name, pid, exitcode)
        self.node = node
        self.args = (f"{self.args[0]}, on Ray node {node}",)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.pid, self.exitcode, self.node))


@dataclass(frozen=True)
class DriverConfig:
    """What the driver needs from the strategy (picklable: it crosses into the driver process)."""

    n_runners: int
    init: Mapping[str, Any]  # keyword arguments of ray.init()
    placement: str | None
    runner_resources: Mapping[str, float]
    graceful_timeout: float
    terminate_timeout: float
    start_timeout: float

    @property
    def stop_seconds(self) -> float:
        """The most the driver takes, once the event is set, to stop its actors and leave the cluster."""
        return (
            self.graceful_timeout
            + 2 * self.terminate_timeout
            + max(self.terminate_timeout, REMOVE_SECONDS)
            + _SHUTDOWN_SECONDS
        )


@dataclass(frozen=True)
class _Served:
    """Where the caller serves its store: its URL and token, and its Unix socket on the caller's machine."""

    url: str
    token: str
    unix_socket: str | None

    def here(self) -> _Served:
        """As reached from where this runs: the Unix socket only on the caller's machine (checked once)."""
        return dataclasses.replace(self, unix_socket=local_socket(self.unix_socket))

    def client(self) -> HttpLightningStore:
        return HttpLightningStore(self.url, token=self.token, unix_socket=self.unix_socket)


def is_actor_process(pid: int) -> bool:
    """Whether ``pid`` is a live Ray worker process on this machine (Ray names them ``ray::...``)."""
    try:
        process = psutil.Process(pid)
        return bool(process.status() != psutil.STATUS_ZOMBIE and process.name().startswith("ray::"))
    except Exception:  # gone, or not ours to look at
        return False


def is_runner_process(pid: int) -> bool:
    """Whether ``pid`` is a live runner process on this machine (a spawned child of a runner actor)."""
    try:
        process = psutil.Process(pid)
        return bool(process.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(process.cmdline()))
    except Exception:  # gone, or not ours to look at
        return False


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


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
    """One runner's actor: the parent and supervisor of the runner's own process.

    ``run`` starts the runner bundle in a child process (``processes.WorkerProcesses``, spawn: the actor
    is a threaded process, unsafe to fork), against the served store, mirrors the server's stop event
    into that child's event (``EventBridge``), stops it with the shared escalation once the event is set,
    reaps it, and returns how it ended: ``(status, error, raised_at)``, ``status`` being ``returned``,
    ``raised`` (``error``: the bundle's exception serialised by ``remote_errors``, ``KeyboardInterrupt``
    included), ``died`` (``error``: ``RunnerProcessDied`` with its exit status) or ``stopped`` (ended
    by the escalation), ``raised_at`` being ``time.monotonic()`` when it raised.
    """

    def __init__(self, name: str, served: _Served, grace: float, teardown: float) -> None:
        self.name = name
        self.served = served
        self.grace = grace
        self.teardown = teardown
        self.child_pid: int | None = None
        self.child_started = False  # the runner's process reached its callable
        self.child_known = asyncio.Event()  # set once it did, or ended, or could not be started

    async def where(self) -> tuple[str, int]:
        """This actor's node id and pid (for messages naming a runner that died)."""
        return ray.get_runtime_context().get_node_id(), os.getpid()

    async def child(self) -> int | None:
        """The pid of the runner's process once it is running its callable (or ended, or was stopped while
        still starting); ``None`` if it could not be started."""
        await self.child_known.wait()
        return self.child_pid

    async def run(self, runner: RunnerBundle, worker_id: int) -> tuple[str, bytes | None, float | None]:
        loop = asyncio.get_running_loop()
        node_id = ray.get_runtime_context().get_node_id()
        node = f"{node_id[:12]} at {ray.util.get_node_ip_address()}"
        # Inherited by the runner's process, which is not a Ray worker and cannot ask Ray where it runs.
        os.environ[RUNNER_NODE_ENV] = node_id
        event = MultiprocessingEvent(multiprocessing.get_context(_START_METHOD))
        served = self.served.here()
        bridge = EventBridge(served.client(), event)
        store = ClaimTrackingStore(
            served.client().named(self.name),
            client=self.name,
            heartbeats=True,
            close_inner=True,
        )
        processes = WorkerProcesses(
            event,
            start_method=_START_METHOD,
            graceful_timeout=self.grace,
            terminate_timeout=self.teardown,
        )
        done: asyncio.Future[None] = loop.create_future()
        outcome: list[WorkerOutcome] = []

        def _finished() -> None:
            if not done.done():
                done.set_result(None)

        def _started() -> None:
            with contextlib.suppress(RuntimeError):  # the actor's loop is gone: it is being killed
                loop.call_soon_threadsafe(self.child_known.set)

        def _supervise() -> None:
            try:
                outcome.append(self._supervise(processes, runner, store, worker_id, event, _started))
            finally:
                _started()
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_finished)

        # On this loop, not awaited in a thread: a ray.cancel landing in that await would leave the bridge
        # running and attached to the server, outside the finally that stops it. It only starts a thread.
        bridge.start()
        thread = threading.Thread(target=_supervise, name=f"agl-ray-{self.name}", daemon=True)
        thread.start()
        try:
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                # ray.cancel, the driver's step after the grace: the runner's process's escalation moves
                # on at once (the shared one: SIGINT, SIGTERM, SIGKILL); ray.kill comes next.
                processes.hurry()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(done), 2 * self.teardown)
                raise
        finally:
            await asyncio.to_thread(bridge.stop)
            event.close()
        if not outcome:
            raise RuntimeError(f"the supervisor of {self.name}'s process failed; see the actor's log")
        return _report(outcome[0], node)

    def _supervise(
        self,
        processes: WorkerProcesses,
        runner: RunnerBundle,
        store: ClaimTrackingStore,
        worker_id: int,
        event: MultiprocessingEvent,
        started: Callable[[], None],
    ) -> WorkerOutcome:
        """On a thread of its own: start the runner's process, wait for it or the stop, stop it, reap it."""
        try:
            with _main_path_hidden():
                processes.start(
                    self.name,
                    runner,
                    store,
                    worker_id,
                    event,
                    cleanup=store.close,
                    # Most of a runner's CPU is its HTTP client and event loop: uvloop's where installed.
                    loop_factory=event_loops.new_event_loop,
                )
            self.child_pid = processes.pid(self.name)
            # Each wait also ends on a hurry (ray.cancel, see ``run``).
            while (
                processes.running
                and not event.is_set()
                and not processes.started(self.name)
                and not processes.hurried
            ):
                processes.wait(None)
            self.child_started = processes.started(self.name)
            if self.child_started or not processes.running:
                started()
            while processes.running and not event.is_set() and not processes.hurried:
                processes.wait(None)
            if processes.running:
                # Grace from now, then SIGINT, SIGTERM, SIGKILL, every step bounded; a hurry (before or
                # during the stop) moves it on at once, and a process still starting when hurried gets
                # SIGTERM at once (nothing of it to stop cleanly).
                processes.stop()
            return processes.outcomes[0]
        finally:
            processes.close()


@contextlib.contextmanager
def _main_path_hidden() -> Iterator[None]:
    """While a runner's process is spawned: the actor's ``__main__`` (Ray's worker script) without its path.

    Spawn runs a parent's main script again in each child (``multiprocessing.spawn``), and Ray's worker
    script imports all of Ray, which the runner's process never uses: 0.35 s more per runner on an idle
    machine (0.04 s without), over a second under load. Only the spawning thread reads it meanwhile.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _report(outcome: WorkerOutcome, node: str) -> tuple[str, bytes | None, float | None]:
    """A runner process's outcome as the actor reports it (see ``_RunnerHost``)."""
    if outcome.status == "died":
        died = RunnerProcessDied(outcome.name, outcome.pid, outcome.exitcode, node)
        return "died", dump_exception(died), None
    if outcome.error is not None:  # raised, or interrupted (a KeyboardInterrupt of its own)
        return "raised", dump_exception(outcome.error), outcome.raised_at
    return outcome.status, None, None


_RunnerActor: Any = ray.remote(max_restarts=0, max_task_retries=0)(_RunnerHost)


# -- the driver --------------------------------------------------------------------------------------------


@dataclass
class _Runner:
    """One runner actor as the driver sees it."""

    name: str
    handle: Any
    run_ref: Any
    future: concurrent.futures.Future[Any]
    where: concurrent.futures.Future[Any]
    child: concurrent.futures.Future[Any]
    child_told: bool = False
    killed: bool = False
    settled: bool = False
    node_names: dict[str, str] = field(default_factory=dict)

    def describe_node(self) -> tuple[int | None, str]:
        if not self.where.done() or self.where.exception() is not None:
            return None, "unknown (it had not reported where it runs)"
        node_id, pid = self.where.result()
        address = self.node_names.get(node_id)
        return pid, f"{node_id[:12]}" + (f" at {address}" if address else "")


class _Stopped(Exception):
    """The event was set (or the caller went away) before the driver had anything to stop."""


class _Driver:
    """One run's driver; see the module docstring."""

    def __init__(
        self,
        config: DriverConfig,
        control: multiprocessing.connection.Connection,
        event: MultiprocessingEvent,
    ) -> None:
        self.c = config
        self.control = control
        self.event = event
        self.inbox = threads.Inbox()
        self.runners: list[_Runner] = []
        self.group: Any = None
        self.nodes: dict[str, str] = {}
        self.owns_cluster = config.init.get("address") == "local"
        self.interrupted = False  # the caller said a Ctrl+C stops the run

    # -- the conversation with the caller -------------------------------------------------------------

    def send(self, *message: Any) -> None:
        with contextlib.suppress(OSError):  # the caller is gone: its death guard ends us soon
            self.control.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def wait(self, timeout: float | None) -> None:
        """Until a Ray future completes, the event is set, the caller writes, or ``timeout``."""
        handles: list[Any] = [self.inbox.reader_fd, self.control]
        if not self.event.is_set():
            handles.append(self.event)
        multiprocessing.connection.wait(handles, timeout)
        self.inbox.drain()

    def receive(self) -> tuple[Any, ...] | None:
        """The caller's next message, if one is there; ``("interrupted",)`` is noted."""
        try:
            if not self.control.poll(0):
                return None
            message: tuple[Any, ...] = pickle.loads(self.control.recv_bytes())
        except (EOFError, OSError):
            raise _Stopped from None  # the caller is gone: its death guard ends us soon
        if message[0] == "interrupted":
            self.interrupted = True
        return message

    def stopped(self) -> bool:
        """Whether the run stops (the event); the caller's word on why is read first (it comes first)."""
        if not self.event.is_set():
            return False
        while self.receive() is not None:
            pass
        return True

    def receive_serve(self) -> _Served:
        """The caller's ``("serve", url, token, unix_socket)``; ``_Stopped`` if the run stops first."""
        deadline = time.monotonic() + self.c.start_timeout
        while True:
            message = self.receive()
            if message is not None and message[0] == "serve":
                return _Served(*message[1:])
            if self.interrupted or self.stopped():
                raise _Stopped
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"ray: the store server was not ready within {self.c.start_timeout:g} s")
            self.wait(left)

    # -- starting -------------------------------------------------------------------------------------

    def connect(self) -> None:
        ray.init(**self.c.init)
        try:
            self.nodes = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
        except Exception as exc:
            _log.debug("could not list Ray's nodes: %r", exc)
        self.send("nodes", self.nodes, str(ray.util.get_node_ip_address()))

    def place(self, served: _Served, runner: RunnerBundle) -> None:
        c = self.c
        options = _actor_options(c.runner_resources)
        if c.placement in PG_STRATEGY:
            bundles = [dict(c.runner_resources) for _ in range(c.n_runners)]
            self.group = placement_group(bundles, strategy=PG_STRATEGY[c.placement])
            self._wait_for([self.group.ready().future()], "the placement group of the runners")
        elif c.placement == "spread":
            options["scheduling_strategy"] = "SPREAD"
        teardown = max(c.terminate_timeout, 0.1)
        for worker_id in range(c.n_runners):
            name = f"runner-{worker_id}"
            if self.group is not None:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group=self.group, placement_group_bundle_index=worker_id
                )
            handle = _RunnerActor.options(**options).remote(name, served, c.graceful_timeout, teardown)
            run_ref = handle.run.remote(runner, worker_id)
            actor = _Runner(
                name,
                handle,
                run_ref,
                run_ref.future(),
                handle.where.remote().future(),
                handle.child.remote().future(),
            )
            actor.node_names = self.nodes
            actor.future.add_done_callback(self._post)
            actor.child.add_done_callback(self._post)
            self.runners.append(actor)
        # Placed once every runner's process is running its bundle: the algorithm starts then, and a
        # Ctrl+C until then finds nothing of a runner to stop cleanly (K3).
        futures = [r.where for r in self.runners] + [r.child for r in self.runners]
        self._wait_for(futures, "the runner actors and their processes to start")
        self.collect()  # each runner's process, before the word that they all run
        self.send("placed", [(r.name, *r.describe_node()) for r in self.runners])

    def _post(self, _: object) -> None:
        self.inbox.put("ray")

    def _wait_for(self, futures: list[concurrent.futures.Future[Any]], what: str) -> None:
        """Wait (bounded by ``start_timeout``) for start-up futures; the event or a failure cuts it short."""
        deadline = time.monotonic() + self.c.start_timeout
        for future in futures:
            future.add_done_callback(self._post)
        while not all(f.done() for f in futures):
            self.collect()
            if self.stopped():
                raise _Stopped
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"ray: gave up waiting for {what} after start_timeout={self.c.start_timeout:g} s "
                    f"(resources per runner: {dict(self.c.runner_resources) or 'none'}, placement: "
                    f"{self.c.placement}); does the cluster have room for {self.c.n_runners} runner(s)?"
                )
            self.wait(left)
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error

    # -- watching -------------------------------------------------------------------------------------

    @property
    def running(self) -> list[_Runner]:
        return [runner for runner in self.runners if not runner.settled]

    def collect(self) -> None:
        """Report every runner process seen to start and every actor seen to end since the last call."""
        for runner in self.runners:
            if not runner.child_told and runner.child.done():
                runner.child_told = True
                if runner.child.exception() is None and runner.child.result() is not None:
                    self.send("child", runner.name, runner.child.result())
            if not runner.settled and runner.future.done():
                self._settle(runner)

    def watch(self) -> None:
        """Until the event is set or every actor ended."""
        while True:
            self.collect()
            if self.event.is_set() or not self.running:
                return
            self.wait(None)

    def _settle(self, runner: _Runner) -> None:
        """How a runner's actor ended (once): a bundle error, a death, our own stop, or a return."""
        runner.settled = True
        pid, node = runner.describe_node()
        status, error, at = "raised", None, None
        try:
            result = runner.future.result()
        except (ray.exceptions.TaskCancelledError, concurrent.futures.CancelledError, asyncio.CancelledError):
            status = "stopped"  # our own ray.cancel: a stop, not a failure
        except ray.exceptions.RayActorError as exc:
            if runner.killed:
                status = "stopped"  # our own ray.kill
            else:
                status, error = "died", dump_exception(ActorDied(runner.name, pid, node, _first_line(exc)))
        except ray.exceptions.RayTaskError as exc:  # the actor could not even start the bundle
            error = dump_exception(exc.as_instanceof_cause())
        except Exception as exc:
            error = dump_exception(exc)
        else:
            status, error, at = result
        self.send("ended", runner.name, status, error, at, pid, node)

    # -- stopping -------------------------------------------------------------------------------------

    def stop(self, urgency: int) -> None:
        """The actors' escalation (see the module docstring); each SIGINT meanwhile skips one step."""
        c = self.c
        actions: list[Callable[[], None]] = [self._cancel, self._kill]
        waits = [c.graceful_timeout + c.terminate_timeout, c.terminate_timeout, c.terminate_timeout]
        step, pending = 0, urgency > 0
        began = time.monotonic()
        while True:
            try:
                if pending:  # each action is idempotent: one interrupted half-way runs again
                    actions[step]()
                    step, began, pending = step + 1, time.monotonic(), False
                if not self._wait_until(began + waits[step]) or step >= len(actions):
                    return
                pending = True
            except KeyboardInterrupt:
                if step >= len(actions):
                    return
                pending = True

    def _wait_until(self, deadline: float) -> bool:
        """Report ends until every actor ended (``False``) or ``deadline`` passed (``True``)."""
        while True:
            self.collect()
            if not self.running:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.wait(left)

    def _cancel(self) -> None:
        for runner in self.running:
            _log.info("ray: %s still running after its grace; ray.cancel", runner.name)
            ray.cancel(runner.run_ref)

    def _kill(self) -> None:
        for runner in self.running:
            _log.warning("ray: %s did not stop when cancelled; ray.kill", runner.name)
            runner.killed = True
            ray.kill(runner.handle, no_restart=True)

    def _kill_starting(self) -> None:
        # An actor that is up is cancelled instead, quicker than Ray reports a killed actor dead:
        # ray.cancel ends its runner's process at once (SIGKILL) while that is still starting, rather
        # than letting it finish starting only to see the stop (over a second under load).
        for runner in self.running:
            if not runner.where.done():
                _log.info("ray: %s was still starting when interrupted; ray.kill", runner.name)
                runner.killed = True
                ray.kill(runner.handle, no_restart=True)
            elif not runner.child.done():
                _log.info("ray: %s's process was still starting when interrupted; ray.cancel", runner.name)
                ray.cancel(runner.run_ref)

    def remove(self) -> None:
        """Kill every actor and remove the placement group; wait (bounded) until they are gone."""
        gone: list[concurrent.futures.Future[Any]] = []
        self.collect()
        for runner in self.runners:
            if not runner.settled:
                _log.warning("ray: %s did not report how it ended; killed", runner.name)
            runner.killed = True
            with contextlib.suppress(Exception):
                ray.kill(runner.handle, no_restart=True)
            # Answered (with RayActorError) once the actor is dead: nothing of it is left running.
            future = runner.handle.where.remote().future()
            future.add_done_callback(self._post)
            gone.append(future)
        if self.group is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(self.group)
            self.group = None
        deadline = time.monotonic() + max(self.c.terminate_timeout, REMOVE_SECONDS)
        while not all(f.done() for f in gone) and time.monotonic() < deadline:
            self.wait(deadline - time.monotonic())
        self.collect()
        # Ray reports an actor dead a moment before its process has exited; the caller's
        # remote_resources() sees such a process until it has.
        if not all(f.done() for f in gone):
            _log.warning("ray: not every runner actor was reported dead within the bound of its kill")

    def disconnect(self) -> None:
        """``ray.shutdown()`` of a local cluster this driver started, bounded. A joined cluster is only
        left by this process's exit, which comes next and closes everything of its connection."""
        if not self.owns_cluster:
            return
        failures = FailureCollector(_log)
        thread = threading.Thread(target=_shutdown, args=(failures,), name="agl-ray-shutdown", daemon=True)
        thread.start()
        thread.join(_SHUTDOWN_SECONDS)
        if thread.is_alive():
            _log.warning("ray.shutdown() did not finish within %g s", _SHUTDOWN_SECONDS)

    # -- the whole run --------------------------------------------------------------------------------

    def run(self, runner: RunnerBundle) -> None:
        urgency = 0
        try:
            try:
                self.connect()
                self.place(self.receive_serve(), runner)
                self.watch()
            except _Stopped:
                if self.interrupted:  # nothing of an actor still starting is to be stopped cleanly (K3)
                    self._kill_starting()
            except KeyboardInterrupt:  # the caller's escalation (or the terminal's Ctrl+C): stop now
                urgency = 1
                self._kill_starting()
            if self.running:
                self.stop(urgency)
        finally:
            try:
                if ray.is_initialized():
                    self.remove()
                    self.disconnect()
            finally:
                self.inbox.close()


def _shutdown(failures: FailureCollector) -> None:
    with failures.cleanup("ray.shutdown"):
        ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__


async def drive(
    config: DriverConfig,
    control: multiprocessing.connection.Connection,
    runner: RunnerBundle,
    event: MultiprocessingEvent,
) -> None:
    """The driver process's callable (``processes.WorkerProcesses``); see the module docstring."""
    driver = _Driver(config, control, event)
    # Nothing runs on this loop: a signal's wake-up byte goes to the driver's inbox, so its waits see it.
    previous = signal.set_wakeup_fd(driver.inbox.wakeup_fd, warn_on_full_buffer=False)
    try:
        driver.run(runner)
    finally:
        signal.set_wakeup_fd(previous)
        control.close()
