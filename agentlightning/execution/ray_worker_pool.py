"""A pool of prestarted Ray workers on a node of a cluster we started: runner actors start on a ready worker.

Each ``execute()`` of the ``ray`` strategy is a Ray job of its own (its driver process joins the
cluster), and Ray starts workers for a job's actors when the job asks: a worker that hosted an actor
exits with it, and the ``num_cpus`` workers Ray prestarts when a driver registers boot at the very
moment the run begins. So every run's actors waited for Ray to boot a fresh worker process (Python,
Ray's core worker, then the actor's module): measured with 2 runners against a running local cluster
on a 2-core machine, 1.0-1.6 s from asking for the actors to their ``__init__`` at load 3-4, 2.4-5.4 s
at load 6.

The raylet can start workers that belong to no job (``NodeManagerService.PrestartWorkers`` without a
job id, with a keep-alive): any job whose runtime env matches (the default, empty one) then takes one
of them for an actor instead of booting a process. Ray's Python API does not expose that call (its
core worker's C++ ``PrestartWorkers`` is called by nothing), so the keeper calls the raylet's gRPC
service with Ray's own generated stub and channel (``ray._private.grpc_utils.init_grpc_channel``, which
adds the cluster's token), each call bounded by a deadline. Ray's system config has no equivalent:
``prestart_worker_first_driver`` starts workers as a driver registers (too late for its own actors),
and ``enable_worker_prestart`` starts them for a job whose leases already queue; neither keeps workers
waiting between runs.

``PoolKeeper`` (``python -m agentlightning.execution.ray_worker_pool``, one process per cluster, started
and stopped by ``ray_cluster.LocalRayCluster``) keeps ``size`` such workers idle on the node: it counts
the raylet's child processes that are Ray workers of no job (``RAY_JOB_ID`` the nil id) and still
idle or starting, and asks for the missing ones once actors took some (polled every 0.25 s; workers
asked for and not yet seen are owed for 2 s, so none is asked for twice, and the raylet, which drops
what exceeds its start-up concurrency, is asked again).
Each worker is asked for with a bounded keep-alive (``keep_alive`` s: the raylet does not reap it as
idle before; after, it may, and the keeper asks again), and the keeper exits when the raylet is gone
or its own parent is: nothing of the pool outlives the cluster, whose stop ends every worker anyway.
It is only ever run for a cluster its owner started (``LocalRayCluster``), or by a user who runs this
module for a node of theirs on purpose. When the call is not available (no ``grpcio``, a Ray without
the RPC) it reports why and exits: the cluster then runs without a pool (logged by its owner).

Measured by phase (six ``execute()`` calls in one process against a held cluster, 2 runners, the code
before and after one after the other, a 2-core machine at load 5-7 from other work): the actors ran
0.11-0.23 s after they were asked for with the pool, against 1.6-6.6 s without; the start-up as a whole
varied too much under that load to show it (medians 4.0 and 3.8 s), as the workers the pool boots in
the background take the same CPU as before and slow the runner processes of the runs that follow. So
a replacement is asked for only once the pool has been short for 2 s (at once when it is empty): a run
that just took workers is starting. The cluster that keeps the pool turns Ray's own prestart as a
driver registers off (``prestart_worker_first_driver``), which booted workers right as a run started.

A pool worker is counted by the kit as the cluster's, not a run's: it is a child of the raylet, never
of the scenario's process, and ``RayExecutionStrategy.remote_resources`` reports only the actors and
runner processes of its own run (an actor on a pool worker is that run's until it exits with its actor).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import psutil

__all__ = ["DEFAULT_KEEP_ALIVE", "NO_JOB", "PRELOAD", "READY", "PoolKeeper", "main", "pool_workers"]

_log = logging.getLogger(__name__)

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

NO_JOB = "ffffffff"
"""``RAY_JOB_ID`` of a Ray worker started for no job (Ray's nil job id, in hex)."""
DEFAULT_KEEP_ALIVE = 300
"""Seconds the raylet keeps a prestarted worker even when it would reap it as idle."""
_POLL = 0.25
_REFILL_DELAY = 2.0  # how long a pool short of workers (not empty) waits before it asks for them
_RPC_SECONDS = 5.0  # the deadline of one call to the raylet
_OWED_SECONDS = 2.0  # asked for, unseen since: dropped by the raylet (its start-up concurrency); ask again
READY = "ready"
"""What the keeper prints once the pool is asked for; anything else it prints says why there is none."""
PRELOAD = ("agentlightning.execution.ray_driver",)
"""Modules a pool's cluster has its workers import before they take work (the runner actor's module)."""
_UNAVAILABLE = "unavailable: "


def _children(pid: int) -> list[psutil.Process]:
    """``pid``'s children: from each of its threads' ``/proc`` list (Linux; a few small reads, where
    ``psutil``'s ``children()`` reads every process of the machine), else from ``psutil``."""
    try:
        pids: set[int] = set()
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{tid}/children") as listed:
                pids.update(int(child) for child in listed.read().split())
    except OSError:
        with contextlib.suppress(psutil.Error):
            return list(psutil.Process(pid).children())
        return []
    found = []
    for child in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(child))
    return found


def pool_workers(raylet_pid: int, *, booted: bool = False) -> list[int]:
    """Pids of the raylet's workers that belong to no job and host nothing yet (idle or still starting;
    ``booted``: idle only, done starting)."""
    found = []
    for child in _children(raylet_pid):
        with contextlib.suppress(psutil.Error, OSError):
            cmdline = child.cmdline()
            idle = bool(cmdline) and cmdline[0].startswith("ray::IDLE")
            starting = not booted and any(part.endswith("default_worker.py") for part in cmdline)
            if (idle or starting) and child.environ().get("RAY_JOB_ID") == NO_JOB:
                found.append(child.pid)
    return found


class PoolKeeper:
    """Keeps ``size`` prestarted workers of no job idle under the raylet ``raylet_pid`` (its gRPC service
    at ``raylet``, ``host:port``); see the module docstring."""

    def __init__(self, raylet: str, raylet_pid: int, size: int, keep_alive: int = DEFAULT_KEEP_ALIVE) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1; got {size!r}")
        if isinstance(keep_alive, bool) or not isinstance(keep_alive, int) or keep_alive < 1:
            raise ValueError(f"keep_alive must be an int >= 1 (seconds); got {keep_alive!r}")
        self.raylet = raylet
        self.raylet_pid = raylet_pid
        self.size = size
        self.keep_alive = keep_alive
        self._stub: Any = None
        self._request: Any = None
        self._seen: set[int] = set()
        self._owed: list[float] = []  # when each worker asked for and not yet seen was asked for
        self._short_since: float | None = None  # since when the pool is short of workers (not empty)

    def connect(self) -> None:
        """Make Ray's stub of the raylet's service; ``RuntimeError`` names what is missing."""
        try:
            from ray._private.grpc_utils import init_grpc_channel
            from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc
        except ImportError as exc:
            raise RuntimeError(f"Ray's gRPC client cannot be imported ({exc}); pip install grpcio") from exc
        stub = node_manager_pb2_grpc.NodeManagerServiceStub(init_grpc_channel(self.raylet))
        if not hasattr(stub, "PrestartWorkers") or not hasattr(node_manager_pb2, "PrestartWorkersRequest"):
            raise RuntimeError("this Ray's raylet has no PrestartWorkers call")
        self._stub = stub
        self._request = lambda n: node_manager_pb2.PrestartWorkersRequest(
            language=common_pb2.Language.PYTHON, keep_alive_duration_secs=self.keep_alive, num_workers=n
        )

    def ask(self, count: int) -> None:
        """Ask the raylet for ``count`` more workers of no job (bounded by ``_RPC_SECONDS``)."""
        self._stub.PrestartWorkers(self._request(count), timeout=_RPC_SECONDS)
        self._owed += [time.monotonic()] * count

    def top_up(self) -> int:
        """Ask for the workers missing from the pool now; return how many were asked for."""
        now = time.monotonic()
        workers = pool_workers(self.raylet_pid)
        fresh = [pid for pid in workers if pid not in self._seen]
        self._seen = set(workers)
        self._owed = [at for at in self._owed if now - at < _OWED_SECONDS][len(fresh) :]
        missing = self.size - len(workers) - len(self._owed)
        if missing <= 0 or not workers:
            self._short_since = None
        elif self._short_since is None:
            self._short_since = now
        # Workers were just taken: a run is starting, and a worker booting now would take CPU from it.
        # Wait a moment, unless none is left.
        if missing > 0 and (not workers or now - (self._short_since or now) >= _REFILL_DELAY):
            self.ask(missing)
            return missing
        return 0

    def run(self, stop: threading.Event) -> None:
        """Top the pool up until ``stop`` is set, the raylet is gone or this process's parent is."""
        parent = os.getppid()
        failing = False
        while not stop.is_set() and psutil.pid_exists(self.raylet_pid) and os.getppid() == parent:
            try:
                self.top_up()
                failing = False
            except Exception as exc:  # a deadline missed under load, the raylet going away: try again
                if not failing:
                    _log.warning("ray worker pool: asking the raylet at %s failed: %r", self.raylet, exc)
                failing = True
            stop.wait(_POLL)


def _raylet_of_session(session_id: int, deadline: float) -> int:
    """The pid of the raylet of process session ``session_id``, once it runs (bounded)."""
    while time.monotonic() < deadline:
        for process in psutil.process_iter(["name"]):
            with contextlib.suppress(psutil.Error, OSError):
                if process.info["name"] == "raylet" and os.getsid(process.pid) == session_id:
                    return int(process.pid)
        time.sleep(_POLL)
    raise TimeoutError(f"no raylet appeared in process session {session_id}")


def _first_call(keeper: PoolKeeper, deadline: float) -> None:
    """The first top-up, retried until the raylet answers or ``deadline``."""
    while True:
        try:
            keeper.top_up()
            return
        except Exception:
            if time.monotonic() >= deadline:
                raise
            time.sleep(_POLL)


def main(argv: Sequence[str] | None = None) -> int:
    """The keeper process: report ``ready`` (or ``unavailable: why``) on stdout, then keep the pool."""
    parser = argparse.ArgumentParser(prog="python -m agentlightning.execution.ray_worker_pool")
    parser.add_argument("--raylet", required=True, help="the raylet's gRPC address, host:port")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--raylet-pid", type=int, help="the raylet's pid")
    where.add_argument("--session-id", type=int, help="the process session the raylet runs in")
    parser.add_argument("--size", type=int, required=True, help="idle workers to keep")
    parser.add_argument("--keep-alive", type=int, default=DEFAULT_KEEP_ALIVE, help="seconds, per worker")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="seconds to reach the raylet")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    deadline = time.monotonic() + args.start_timeout
    try:
        raylet_pid = args.raylet_pid or _raylet_of_session(args.session_id, deadline)
        keeper = PoolKeeper(args.raylet, raylet_pid, args.size, args.keep_alive)
        keeper.connect()
        _first_call(keeper, deadline)
    except Exception as exc:
        print(f"{_UNAVAILABLE}{exc}", flush=True)
        return 0
    print(READY, flush=True)
    keeper.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
