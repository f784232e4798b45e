"""A local Ray cluster started once and stopped with every one of its processes: for test sessions.

Starting Ray takes tens of seconds on a small machine, so a test session (the conformance kit, the
``ray`` strategy's own tests, a benchmark of start-up against a running cluster) starts one head node
and lets every ``RayExecutionStrategy`` join it by ``RAY_ADDRESS``.

``LocalRayCluster`` runs ``ray start --head --block`` in a process session of its own, with a private
``--temp-dir``, token authentication (a token made per cluster, handed to its drivers through
``RAY_AUTH_TOKEN``) and the head's port on 127.0.0.1 (Ray 2.60 still binds its servers on every
interface and names the node by the machine's address; see docs/running-on-ray.md). ``stop()`` ends
every process of that session (Ray's own, its raylet, its workers and actors: none leaves the
session), SIGTERM first and SIGKILL after a bound, and waits until they are gone. Ray itself is never
imported here: only its command line is run.

Prestarted workers (``prestarted_workers``, default 4; 0: none): the cluster keeps that many idle Ray
workers of no job on its node, topped up as actors take them, so that a run's actors start on a ready
worker instead of Ray booting one per actor (``ray_worker_pool``: why, how, and what it saves). Its
keeper is a process of its own, started with the head and stopped before it; its workers, the
raylet's children, end with the cluster. The cluster's workers also import the runner actor's module
before they take work (Ray's ``preload_python_modules``), so an actor on a pool worker does not import
it either, and Ray's own prestart as each driver registers is off (it booted workers right as a run
started, competing with it, when the pool has them waiting). Only a cluster started here gets a pool:
one named by ``RAY_ADDRESS`` is never touched. When the pool cannot be had (``grpcio`` missing, a Ray
without the call), the cluster runs without one and says why in a warning.

A guard (``python -m agentlightning.execution.ray_cluster --guard``, a process of its own session
started with the head) ends the cluster when its owner is gone without stopping it (SIGKILLed, or a
``start()`` whose ``stop()`` never came): it waits for the end of a pipe only the owner writes to, and
at its end-of-file ends every process of the cluster's session the way ``stop()`` does and removes the
cluster's temporary directory. ``stop()`` ends the cluster first, then closes the pipe: the guard then
finds nothing left and exits.

``kit_session`` is the conformance kit's session service for the ``ray`` strategy
(``conformance.session_services``): with ``RAY_ADDRESS`` set it joins that cluster and never stops it;
otherwise it starts a ``LocalRayCluster`` for the session and stops it at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import psutil

from agentlightning.execution.ray_worker_pool import DEFAULT_KEEP_ALIVE, PRELOAD, READY, pool_workers

__all__ = ["LocalRayCluster", "kit_session"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

_log = logging.getLogger(__name__)

_READY_MARK = b"Ray runtime started"
_POLL = 0.1
_TERM_SECONDS = 10.0  # SIGTERM -> SIGKILL
_KILL_SECONDS = 10.0  # SIGKILL -> gone
_OBJECT_STORE_BYTES = 200 * 1024 * 1024
_MAX_PRESTARTED = 64


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_command() -> str:
    """The ``ray`` command of this interpreter's environment."""
    beside = Path(sys.executable).with_name("ray")
    if beside.exists():
        return str(beside)
    found = shutil.which("ray")
    if found is None:
        raise FileNotFoundError(
            "the 'ray' command is not installed beside this Python nor on PATH: "
            "pip install 'agentlightning-execution[ray]'"
        )
    return found


class LocalRayCluster:
    """A single-node Ray cluster on this machine; see the module docstring.

    ``num_cpus``: CPUs the head advertises (default: the machine's). ``start_timeout``: how long the
    head may take to report it started before ``start()`` fails (and stops what it began). ``env``:
    variables for the cluster's processes, its workers included (e.g. ``PYTHONPATH``, so that actors
    import what the caller's strategy is made of). ``prestarted_workers``: idle workers kept ready for
    actors (0: none; see the module docstring); ``keep_alive``: seconds the raylet keeps each of them.
    """

    def __init__(
        self,
        num_cpus: int | None = None,
        start_timeout: float = 180.0,
        env: dict[str, str] | None = None,
        prestarted_workers: int = 4,
        keep_alive: int = DEFAULT_KEEP_ALIVE,
    ) -> None:
        if num_cpus is not None and (
            isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1
        ):
            raise ValueError(f"num_cpus must be None or an int >= 1; got {num_cpus!r}")
        if not start_timeout > 0:
            raise ValueError(f"start_timeout must be > 0 seconds; got {start_timeout!r}")
        if (
            isinstance(prestarted_workers, bool)
            or not isinstance(prestarted_workers, int)
            or not 0 <= prestarted_workers <= _MAX_PRESTARTED
        ):
            raise ValueError(
                f"prestarted_workers must be an int from 0 to {_MAX_PRESTARTED}; got {prestarted_workers!r}"
            )
        if isinstance(keep_alive, bool) or not isinstance(keep_alive, int) or keep_alive < 1:
            raise ValueError(f"keep_alive must be an int >= 1 (seconds); got {keep_alive!r}")
        self.num_cpus = num_cpus or os.cpu_count() or 1
        self.start_timeout = float(start_timeout)
        self.env = dict(env or {})
        self.prestarted_workers = prestarted_workers
        self.keep_alive = keep_alive
        self.token = secrets.token_hex(32)
        self.port = 0
        self.session_id: int | None = None
        self._head: subprocess.Popen[bytes] | None = None
        self._keeper: subprocess.Popen[bytes] | None = None
        self._guard: subprocess.Popen[bytes] | None = None
        self._directory: str | None = None
        self._node_manager_port = 0

    @property
    def address(self) -> str:
        if self._head is None:
            raise RuntimeError("the local Ray cluster is not started")
        return f"127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """What a driver needs to join this cluster: ``RAY_ADDRESS`` and the token."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def start(self) -> str:
        """Start the head node; return its address once Ray reports it started."""
        if self._head is not None:
            raise RuntimeError("the local Ray cluster is already started")
        self._directory = tempfile.mkdtemp(prefix="agl-ray-")  # short: Ray puts AF_UNIX sockets under it
        self.port = _free_port()
        self._node_manager_port = _free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        env.update(self.env)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0")
        command = [
            _ray_command(),
            "start",
            "--head",
            "--block",
            f"--port={self.port}",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--num-cpus={self.num_cpus}",
            f"--object-store-memory={_OBJECT_STORE_BYTES}",
            f"--temp-dir={self._directory}",
            "--disable-usage-stats",
            f"--node-manager-port={self._node_manager_port}",
        ]
        if self.prestarted_workers:
            # Ray's own prestart as each driver registers would boot workers right as a run starts, when
            # the pool already has them waiting: it only took CPU from the run's start-up.
            config = {"preload_python_modules": list(PRELOAD), "prestart_worker_first_driver": False}
            command.append(f"--system-config={json.dumps(config)}")
        log_path = os.path.join(self._directory, "head.log")
        with open(log_path, "wb") as log:
            self._head = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.session_id = self._head.pid  # the session leader's pid is the session id
        try:
            self._start_guard(env)
            if self.prestarted_workers:
                self._start_keeper(env)  # imports Ray meanwhile the head starts
            self._await_ready(log_path)
            if self._keeper is not None:
                self._await_keeper()
        except BaseException:
            self.stop()
            raise
        return self.address

    def _start_guard(self, env: dict[str, str]) -> None:
        """The cluster's guard (module docstring): its stdin is a pipe only this process writes to."""
        assert self._directory is not None and self.session_id is not None
        command = [
            sys.executable,
            "-m",
            "agentlightning.execution.ray_cluster",
            f"--guard={self.session_id}",
            self._directory,
        ]
        # A session of its own: a terminal's Ctrl+C to this process's group must not end it early.
        self._guard = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True
        )

    def _stop_guard(self) -> None:
        guard, self._guard = self._guard, None
        if guard is None:
            return
        assert guard.stdin is not None
        guard.stdin.close()  # its end-of-file: the cluster is stopped already, so it exits
        try:
            guard.wait(timeout=_TERM_SECONDS)
        except subprocess.TimeoutExpired:
            guard.kill()
            guard.wait(timeout=_KILL_SECONDS)

    def _start_keeper(self, env: dict[str, str]) -> None:
        assert self._directory is not None
        command = [
            sys.executable,
            "-m",
            "agentlightning.execution.ray_worker_pool",
            f"--raylet=127.0.0.1:{self._node_manager_port}",
            f"--session-id={self.session_id}",
            f"--size={self.prestarted_workers}",
            f"--keep-alive={self.keep_alive}",
            f"--start-timeout={self.start_timeout}",
        ]
        with open(os.path.join(self._directory, "pool.log"), "wb") as log:
            self._keeper = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log
            )

    def _await_keeper(self) -> None:
        """The keeper's first word (bounded): the pool is asked for, or why there is none (logged)."""
        keeper = self._keeper
        assert keeper is not None and keeper.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        line = b""
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            readable, _, _ = select.select([keeper.stdout], [], [], deadline - time.monotonic())
            if not readable:
                break
            chunk = os.read(keeper.stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
        keeper.stdout.close()
        word = line.decode(errors="replace").strip() or f"its keeper said nothing (status {keeper.poll()})"
        if word != READY:
            _log.warning("ray: the local cluster runs without prestarted workers: %s", word)
            self._stop_keeper()

    def _stop_keeper(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is None:
            return
        for sig, bound in ((signal.SIGTERM, _TERM_SECONDS), (signal.SIGKILL, _KILL_SECONDS)):
            with contextlib.suppress(ProcessLookupError):
                keeper.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                keeper.wait(timeout=bound)
                break
        if keeper.stdout is not None:
            keeper.stdout.close()

    def pool_pids(self, *, booted: bool = False) -> list[int]:
        """Pids of the cluster's idle workers of no job now: its prestarted pool (empty once stopped);
        ``booted``: only those done starting."""
        raylets = [p.pid for p in self.processes() if p.name() == "raylet"]
        return [pid for raylet in raylets for pid in pool_workers(raylet, booted=booted)]

    @property
    def pooled(self) -> bool:
        """Whether the cluster keeps prestarted workers (its keeper runs)."""
        return self._keeper is not None and self._keeper.poll() is None

    def await_full_pool(self, timeout: float) -> bool:
        """Until the pool holds all its ``prestarted_workers`` again, booted and idle, or ``timeout``
        seconds passed; whether it does (a cluster without a pool: at once). For measurements: the
        pool's replacement boots, which a cluster without a pool never makes, take CPU from what runs
        beside them."""
        if not self.pooled:
            return True
        deadline = time.monotonic() + timeout
        while True:
            if len(self.pool_pids(booted=True)) >= self.prestarted_workers:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _await_ready(self, log_path: str) -> None:
        assert self._head is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            text = Path(log_path).read_bytes()
            if _READY_MARK in text:
                return
            if self._head.poll() is not None:
                raise RuntimeError(
                    f"'ray start --head' exited with status {self._head.returncode} before the cluster "
                    f"started:\n{text.decode(errors='replace')[-4000:]}"
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"the local Ray cluster did not start within {self.start_timeout:g} s:\n"
                    f"{text.decode(errors='replace')[-4000:]}"
                )
            time.sleep(_POLL)

    def processes(self) -> list[psutil.Process]:
        """Every live process of the cluster's session (empty once stopped)."""
        return [] if self.session_id is None else _session_processes(self.session_id)

    def stop(self) -> None:
        """End every process of the cluster (SIGTERM, then SIGKILL after a bound); idempotent."""
        self._stop_keeper()  # first: it would ask for workers of a cluster going away
        head, self._head = self._head, None
        try:
            if head is not None:
                assert self.session_id is not None
                _end_session(self.session_id)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    head.wait(timeout=_KILL_SECONDS)
                left = self.processes()
                if left:
                    raise RuntimeError(
                        "processes of the local Ray cluster survived SIGKILL: "
                        + ", ".join(f"{p.pid} ({p.name()})" for p in left)
                    )
        finally:
            self._stop_guard()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def __enter__(self) -> LocalRayCluster:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def kit_session() -> Iterator[dict[str, str]]:
    """The kit's session service for ``ray``: the cluster named by ``RAY_ADDRESS``, or one started here."""
    if os.environ.get("RAY_ADDRESS"):
        yield {}  # a cluster of the caller's: joined by every scenario, never stopped by the kit
        return
    with LocalRayCluster() as cluster:
        yield cluster.environment()


def _session_processes(session_id: int) -> list[psutil.Process]:
    """Every live process of process session ``session_id``."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(process.pid) == session_id and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def _end_session(session_id: int) -> None:
    """SIGTERM every process of the session, SIGKILL those left after ``_TERM_SECONDS``; bounded.

    Gone means exited: a zombie counts as gone, as the guard is not the parent that would reap it (and
    ``psutil.wait_procs`` would wait out its bound for a zombie that is not its child).
    """
    for sig, bound in ((signal.SIGTERM, _TERM_SECONDS), (signal.SIGKILL, _KILL_SECONDS)):
        alive = _session_processes(session_id)
        if not alive:
            return
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.send_signal(sig)
        deadline = time.monotonic() + bound
        while _session_processes(session_id) and time.monotonic() < deadline:
            time.sleep(_POLL)


def _guard(session_id: int, directory: str) -> int:
    """The guard's life (module docstring): wait for the owner's pipe to end, then end what is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):
        pass  # the owner never writes; end-of-file comes when it closes the pipe or dies
    if _session_processes(session_id):
        _log.warning("ray: the owner of the local cluster %d is gone; stopping the cluster", session_id)
        _end_session(session_id)
    shutil.rmtree(directory, ignore_errors=True)
    return 0


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentlightning.execution.ray_cluster",
        description="The guard of a LocalRayCluster (started by it; see the module docstring).",
    )
    parser.add_argument(
        "--guard", type=int, required=True, metavar="SESSION_ID", help="the cluster's session"
    )
    parser.add_argument("directory", help="the cluster's temporary directory, removed with it")
    args = parser.parse_args(argv)
    return _guard(args.guard, args.directory)


if __name__ == "__main__":
    sys.exit(_main())
