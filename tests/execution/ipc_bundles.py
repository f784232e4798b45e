"""Scripted, picklable bundles for the ``ipc`` strategy tests (module level: fork, spawn, forkserver).

Each bundle appends lines to ``journal.txt`` in a scratch directory (``O_APPEND``: atomic across
processes for short lines); tests read the journal to see who started, saw the stop, was cancelled,
ran its ``finally``. Handshakes between bundles go through the journal too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from agentlightning.execution.events import wait_async
from agentlightning.types import Span

HANG = 30.0


def journal(directory: str, line: str) -> None:
    fd = os.open(os.path.join(directory, "journal.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_journal(directory: str) -> list[str]:
    path = Path(directory, "journal.txt")
    return path.read_text().splitlines() if path.exists() else []


async def until_journal(directory: str, line: str) -> None:
    """Wait (a handshake, bounded by ``HANG``) until ``line`` is in the journal."""
    deadline = time.monotonic() + HANG
    while line not in read_journal(directory):
        if time.monotonic() > deadline:
            raise TimeoutError(f"journal never showed {line!r}: {read_journal(directory)}")
        await asyncio.sleep(0.002)


@dataclass(frozen=True)
class Algorithm:
    """``kind``: return | raise | ki | sysexit | wait | throughput | kill-runner | local-return."""

    directory: str
    kind: str = "return"
    n_runners: int = 1
    n_rollouts: int = 0

    async def __call__(self, store: Any, event: Any) -> None:
        d = self.directory
        journal(d, f"algorithm started pid={os.getpid()}")
        try:
            await self._body(store, event)
        except asyncio.CancelledError:
            journal(d, "algorithm cancelled")
            raise
        finally:
            journal(d, "algorithm finally")
        journal(d, f"algorithm end event={event.is_set()}")

    async def _body(self, store: Any, event: Any) -> None:
        d, kind = self.directory, self.kind
        if kind == "raise":
            raise ValueError("algorithm failed on purpose")
        if kind == "ki":
            raise KeyboardInterrupt
        if kind == "sysexit":
            raise SystemExit(4)
        for worker_id in range(self.n_runners):
            await until_journal(d, f"runner {worker_id} started")
        if kind == "return":
            return
        if kind == "wait":
            await wait_async(event, HANG)
            journal(d, f"algorithm saw-stop {event.is_set()}")
            return
        if kind == "throughput":
            ids = [(await store.enqueue_rollout({"i": i})).rollout_id for i in range(self.n_rollouts)]
            done = await store.wait_for_rollouts(rollout_ids=ids, timeout=HANG)
            journal(d, f"algorithm completed {sum(r.status == 'succeeded' for r in done)}")
            return
        if kind == "kill-runner":
            pid = int(Path(d, "runner-1.pid").read_text())
            os.kill(pid, signal.SIGKILL)
            await wait_async(event, HANG)
            return
        if kind == "local-return":
            await until_journal(d, "runner 0 end")
            journal(d, f"after runner 0 returned event={event.is_set()}")
            return
        raise AssertionError(f"unknown algorithm kind {kind!r}")


@dataclass(frozen=True)
class Runner:
    """``kinds[worker_id]`` (default ``default``): wait | return | raise | ki | sysexit | set | ignore |
    block | work | store-fault | raise-after-stop | raise-after-runner-0."""

    directory: str
    kinds: dict[int, str] = field(default_factory=dict)
    default: str = "wait"

    async def __call__(self, store: Any, worker_id: int, event: Any) -> None:
        d = self.directory
        Path(d, f"runner-{worker_id}.pid").write_text(str(os.getpid()))
        journal(d, f"runner {worker_id} started")
        try:
            await self._body(store, worker_id, event)
        except asyncio.CancelledError:
            journal(d, f"runner {worker_id} cancelled")
            raise
        except KeyboardInterrupt:
            journal(d, f"runner {worker_id} interrupted")
            raise
        finally:
            journal(d, f"runner {worker_id} finally")
        journal(d, f"runner {worker_id} end")

    async def _body(self, store: Any, worker_id: int, event: Any) -> None:
        kind = self.kinds.get(worker_id, self.default)
        if kind == "wait":
            await wait_async(event, HANG)
            journal(self.directory, f"runner {worker_id} saw-stop {event.is_set()}")
        elif kind == "return":
            return
        elif kind == "raise":
            raise ValueError(f"runner {worker_id} failed on purpose")
        elif kind == "raise-after-stop":
            await wait_async(event, HANG)
            raise RuntimeError(f"runner {worker_id} failed late")
        elif kind == "raise-after-runner-0":
            await until_journal(self.directory, "runner 0 finally")
            await _until_gone(int(Path(self.directory, "runner-0.pid").read_text()))  # it reported, too
            raise RuntimeError(f"runner {worker_id} failed second")
        elif kind == "ki":
            raise KeyboardInterrupt
        elif kind == "sysexit":
            raise SystemExit(5)
        elif kind == "set":
            event.set()
        elif kind == "ignore":
            await asyncio.sleep(HANG * 10)
        elif kind == "block":
            while True:
                time.sleep(0.01)
        elif kind == "work":
            await _work(store, worker_id, event)
        elif kind == "store-fault":
            await store.update_rollout("ro-does-not-exist", status="failed")
        else:
            raise AssertionError(f"unknown runner kind {kind!r}")


async def _until_gone(pid: int) -> None:
    deadline = time.monotonic() + HANG
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} still running")
        await asyncio.sleep(0.002)


async def _work(store: Any, worker_id: int, event: Any) -> None:
    idle = 0.0005
    while not event.is_set():
        rollout = await store.dequeue_rollout()
        if rollout is None:
            await wait_async(event, idle)
            idle = min(idle * 2, 0.01)
            continue
        idle = 0.0005
        attempt_id = rollout.attempt.attempt_id
        await store.add_span(
            Span(rollout_id=rollout.rollout_id, attempt_id=attempt_id, span_id=f"w{worker_id}", name="work")
        )
        await store.update_attempt(
            rollout.rollout_id, attempt_id, status="succeeded", worker_id=str(worker_id)
        )
