"""The benchmark's bundles: algorithms and runners that report through stamp files.

A module of their own, not ``bench.strategies``: run as ``python -m bench.strategies`` that module is
``__main__``, and a bundle defined there is pickled by reference as ``__main__.ThroughputRunner``, which
a Ray actor (a Ray worker process) or a runner process it spawns cannot import. Defined here, every
process that unpickles a bundle imports ``bench.bundles`` by name, as process strategies' workers do.

Each bundle reports through files in a scratch directory with ``time.monotonic()`` stamps (one clock for
every process on the machine), so the same workloads run unchanged against every strategy.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "HANG",
    "LifecycleAlgorithm",
    "LifecycleRunner",
    "ThroughputAlgorithm",
    "ThroughputRunner",
    "read_stamp",
]

HANG = 60.0
"""Seconds any wait in a bundle may last before it fails instead of hanging."""


def _stamp(directory: str, name: str, value: float) -> None:
    path = Path(directory, name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(repr(value))
    tmp.replace(path)  # atomic: a reader never sees a half-written stamp


def read_stamp(directory: str, name: str) -> float:
    """The stamp ``name`` that a bundle wrote in ``directory``."""
    return float(Path(directory, name).read_text())


async def _all_runners_ready(directory: str, n_runners: int) -> None:
    deadline = time.monotonic() + HANG
    while sum(Path(directory, f"ready-{i}").exists() for i in range(n_runners)) < n_runners:
        if time.monotonic() > deadline:
            raise TimeoutError(f"runners never all started ({n_runners} expected) in {directory}")
        await asyncio.sleep(0.001)


@dataclass(frozen=True)
class LifecycleAlgorithm:
    """W2/W4 (and W3 with ``wait_for_stop``): wait for every runner, then return (or wait for the stop)."""

    directory: str
    n_runners: int
    wait_for_stop: bool = False

    async def __call__(self, store: Any, event: Any) -> None:
        from agentlightning.execution.events import wait_async

        await _all_runners_ready(self.directory, self.n_runners)
        if self.wait_for_stop:
            await wait_async(event, HANG)
            return
        _stamp(self.directory, "algorithm-returns", time.monotonic())


@dataclass(frozen=True)
class LifecycleRunner:
    """Reports that it runs, then waits for the stop event (event-driven, no polling)."""

    directory: str

    async def __call__(self, store: Any, worker_id: int, event: Any) -> None:
        from agentlightning.execution.events import wait_async

        _stamp(self.directory, f"ready-{worker_id}", time.monotonic())
        await wait_async(event, HANG)


@dataclass(frozen=True)
class ThroughputAlgorithm:
    """W1: enqueue ``n_rollouts``, wait until all are complete, report the rate."""

    directory: str
    n_runners: int
    n_rollouts: int
    payload_bytes: int = 0
    """Size of a string carried in every rollout's input (0: just the index)."""
    wait_seconds: float = HANG
    """How long the rollouts may take to complete once enqueued (longer for CPU-bound runners)."""

    async def __call__(self, store: Any, event: Any) -> None:
        await _all_runners_ready(self.directory, self.n_runners)
        blob = "x" * self.payload_bytes
        start = time.perf_counter()
        ids = [
            (await store.enqueue_rollout(input={"i": i, "payload": blob} if blob else {"i": i})).rollout_id
            for i in range(self.n_rollouts)
        ]
        done = await store.wait_for_rollouts(rollout_ids=ids, timeout=self.wait_seconds)
        elapsed = time.perf_counter() - start
        if len(done) != self.n_rollouts or any(r.status != "succeeded" for r in done):
            raise RuntimeError(f"W1: {len(done)}/{self.n_rollouts} rollouts completed")
        _stamp(self.directory, "rate", self.n_rollouts / elapsed)


@dataclass(frozen=True)
class ThroughputRunner:
    """W1: claim and complete rollouts until the stop; back off from 0.5 ms to 8 ms while idle."""

    directory: str
    work_seconds: float = 0.0
    """Pure-Python CPU each rollout costs its runner before it completes (``bench.cpu_bound``)."""

    async def __call__(self, store: Any, worker_id: int, event: Any) -> None:
        from agentlightning.execution.events import wait_async

        _stamp(self.directory, f"ready-{worker_id}", time.monotonic())
        idle = 0.0005
        while not event.is_set():
            rollout = await store.dequeue_rollout()
            if rollout is None:
                await wait_async(event, idle)
                idle = min(idle * 2, 0.008)
                continue
            idle = 0.0005
            if self.work_seconds:
                _burn_cpu(self.work_seconds)
            await store.update_attempt(rollout.rollout_id, rollout.attempt.attempt_id, status="succeeded")


def _burn_cpu(seconds: float) -> int:
    """Pure-Python work for about ``seconds`` of CPU time (holds the GIL throughout)."""
    deadline = time.thread_time() + seconds
    total = 0
    while time.thread_time() < deadline:
        for i in range(2000):
            total += i * i % 7
    return total
