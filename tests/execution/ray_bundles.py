"""Scripted, picklable bundles for the ``ray`` strategy tests; Ray actors import this module by name.

Each bundle appends lines to ``journal.txt`` in a scratch directory (``O_APPEND``: atomic for short
lines, and every actor of the test cluster runs on this machine); tests and bundles synchronise on it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlightning.execution.events import wait_async
from agentlightning.types import RolloutConfig

HANG = 60.0

NODES: dict[str, Any] = {}
"""Node id -> a way to kill that node (``kill_all_processes``), set by the multi-node test's fixture."""


def _node_id() -> str:
    # A runner runs in a child process of its actor, which names its Ray node in the environment.
    node = os.environ.get("AGL_RAY_NODE_ID")
    if node:
        return node
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:
        return "?"


def _peer_families() -> list[str]:
    """The address families of this process's sockets connected to a named peer: its store connections
    (an event loop's socketpair has no peer name)."""
    families = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(int(name))) as sock:
                if sock.family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6) and sock.getpeername():
                    families.add(sock.family.name)
        except OSError:  # closed meanwhile, or not connected
            continue
    return sorted(families)


class RunnerFailed(Exception):
    """What a scripted runner raises (a type of the test's own: it must come back as itself)."""


def journal(directory: str, line: str) -> None:
    fd = os.open(os.path.join(directory, "journal.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_journal(directory: str) -> list[str]:
    path = Path(directory, "journal.txt")
    return path.read_text().splitlines() if path.exists() else []


async def until_journal(directory: str, prefix: str, count: int = 1) -> list[str]:
    """Wait (a handshake, bounded by ``HANG``) until ``count`` lines start with ``prefix``."""
    deadline = time.monotonic() + HANG
    while True:
        found = [line for line in read_journal(directory) if line.startswith(prefix)]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"journal never showed {count} x {prefix!r}: {read_journal(directory)}")
        await asyncio.sleep(0.01)


@dataclass(frozen=True)
class Algorithm:
    """``kind``: rollouts (enqueue ``n_rollouts``, wait for all) | return (once every runner started) |
    raise | wait-runners (for the event) | kill-runner-1."""

    directory: str
    kind: str = "rollouts"
    n_runners: int = 1
    n_rollouts: int = 0

    async def __call__(self, store: Any, event: Any) -> None:
        d = self.directory
        journal(d, f"algorithm started pid={os.getpid()}")
        if self.kind == "rollouts":
            ids = [(await store.enqueue_rollout({"i": i})).rollout_id for i in range(self.n_rollouts)]
            done = await store.wait_for_rollouts(rollout_ids=ids, timeout=HANG)
            journal(d, f"algorithm saw {len(done)} done")
        elif self.kind == "raise":
            await until_journal(d, "runner started", self.n_runners)
            raise ValueError("the algorithm failed")
        elif self.kind == "return":
            await until_journal(d, "runner started", self.n_runners)
        elif self.kind == "wait-runners":
            await until_journal(d, "runner started", self.n_runners)
            journal(d, "algorithm all started")
            await wait_async(event, HANG)
        elif self.kind == "kill-node-of-runner-1":
            for i in range(self.n_rollouts):
                await store.enqueue_rollout({"i": i}, config=retry_config())
            await until_journal(d, "claimed ")
            started = await until_journal(d, "runner started 1 ")
            node = started[0].split("node=")[1].split()[0]
            NODES[node].kill_all_processes(check_alive=False, allow_graceful=False)
            await wait_async(event, HANG)
        elif self.kind == "kill-runner-1":
            for i in range(self.n_rollouts):
                await store.enqueue_rollout({"i": i}, config=retry_config())
            if self.n_rollouts:
                await until_journal(d, "claimed ")
            started = await until_journal(d, "runner started 1 ")
            os.kill(int(started[0].split("pid=")[1]), signal.SIGKILL)
            await wait_async(event, HANG)
        journal(d, "algorithm returns")


@dataclass(frozen=True)
class Runner:
    """``kind``: work (dequeue and complete until stopped) | raise-1 | ki-1 | ignore (ignore the event
    while awaiting) | block (blocking sync code) | claim-1 (runner 1 claims a rollout and never ends it)."""

    directory: str
    kind: str = "work"

    async def __call__(self, store: Any, worker_id: int, event: Any) -> None:
        d = self.directory
        journal(d, f"runner started {worker_id} node={_node_id()} pid={os.getpid()}")
        try:
            if self.kind == "work" or (self.kind == "claim-1" and worker_id != 1):
                if self.kind == "claim-1":
                    await until_journal(d, "claimed ")
                while not event.is_set():
                    attempted = await store.dequeue_rollout()
                    if attempted is None:
                        await wait_async(event, 0.02)
                        continue
                    await store.update_attempt(
                        attempted.rollout_id, attempted.attempt.attempt_id, status="succeeded"
                    )
                    journal(d, f"completed {attempted.rollout_id} by {worker_id}")
                    journal(d, f"transport {worker_id} {' '.join(_peer_families())}")
            elif self.kind == "claim-1":
                while (attempted := await store.dequeue_rollout()) is None:
                    await asyncio.sleep(0.02)
                journal(d, f"claimed {attempted.rollout_id} by {worker_id}")
                await asyncio.sleep(HANG)
            elif self.kind == "raise-1" and worker_id == 1:
                raise RunnerFailed("runner 1 failed")
            elif self.kind == "ki-1" and worker_id == 1:
                raise KeyboardInterrupt
            elif self.kind == "ignore":
                await asyncio.sleep(HANG)
            elif self.kind == "block":
                time.sleep(HANG)
            else:
                await wait_async(event, HANG)
        except asyncio.CancelledError:
            journal(d, f"runner cancelled {worker_id}")
            raise
        except BaseException as exc:
            journal(d, f"runner raised {worker_id} {type(exc).__name__}")
            raise
        finally:
            journal(d, f"runner finally {worker_id}")


def retry_config() -> RolloutConfig:
    """Two attempts: a rollout whose runner is lost is requeued once."""
    return RolloutConfig(max_attempts=2, retry_condition=["unresponsive"])
