"""Store throughput: rollout cycles per second at 1k, 10k and 100k rollouts already queued.

One cycle is what a training step does to the store: the algorithm enqueues a rollout, a runner claims
the oldest one with ``dequeue_rollout``, marks its attempt succeeded, and the algorithm observes it
finished with ``wait_for_rollouts``. The queue length stays at the preloaded size throughout, so the
figures show whether an operation's cost grows with the queue. Modes: one event loop on
``InMemoryLightningStore``; ``ThreadedLightningStore`` from 2 threads (each with its own loop) on the
direct path; and, for reference, the owner-thread path a non-thread-safe store gets.

Each figure is the median over repeats (min, max and spread shown); repeats go round-robin over the
queue sizes so that other load on a shared machine hits every size alike. Wall-clock cycles/s are the
figures the targets apply to; cycles per CPU-second of this process are shown beside them as a check
that is less disturbed by other processes. Targets: >= 30,000 cycles/s on one loop, and 100k-queued
within 20% of 1k-queued (a ratio measured in the same run).

Run: ``python -m bench.store`` (``--quick`` for a short run); ``run(quick)`` returns the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from agentlightning.store.base import LightningStore
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.threaded import ThreadedLightningStore

__all__ = ["main", "run"]

QUEUED_SIZES = (1_000, 10_000, 100_000)
TARGET_CYCLES_PER_SECOND = 30_000.0
TARGET_FLATNESS = 0.20


class _SingleLoopStore(InMemoryLightningStore):
    """The in-memory store declared not thread-safe, to measure the owner-thread path."""

    thread_safe = False


async def _cycles(store: LightningStore, count: int) -> None:
    for n in range(count):
        await store.enqueue_rollout({"n": n})
        attempted = await store.dequeue_rollout()
        if attempted is None:
            raise RuntimeError("the queue ran dry: the preload is smaller than it should be")
        await store.update_attempt(attempted.rollout_id, attempted.attempt.attempt_id, status="succeeded")
        finished = await store.wait_for_rollouts(rollout_ids=[attempted.rollout_id], timeout=10.0)
        if not finished or finished[0].status != "succeeded":
            raise RuntimeError(f"rollout {attempted.rollout_id} not observed as succeeded")


async def _preload(store: LightningStore, queued: int) -> None:
    for n in range(queued):
        await store.enqueue_rollout({"preloaded": n})


def _time_one_loop(store: LightningStore, cycles: int) -> tuple[float, float]:
    async def timed() -> tuple[float, float]:
        started, cpu_started = time.perf_counter(), time.process_time()
        await _cycles(store, cycles)
        return time.perf_counter() - started, time.process_time() - cpu_started

    return asyncio.run(timed())


def _time_threads(store: LightningStore, cycles: int, n_threads: int) -> tuple[float, float]:
    """Wall and CPU time for ``n_threads`` threads, each on its own loop, to run ``cycles`` between them."""
    start = threading.Barrier(n_threads + 1)
    errors: list[BaseException] = []

    def target(share: int) -> None:
        async def body() -> None:
            start.wait()
            await _cycles(store, share)

        try:
            asyncio.run(body())
        except BaseException as exc:
            errors.append(exc)

    shares = [cycles // n_threads + (1 if i < cycles % n_threads else 0) for i in range(n_threads)]
    threads = [
        threading.Thread(target=target, args=(share,), name=f"bench-loop-{i}")
        for i, share in enumerate(shares)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    started, cpu_started = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if errors:
        raise errors[0]
    return elapsed, cpu


def _measure_mode(mode: str, cycles: int, repeats: int) -> list[dict[str, Any]]:
    """One row per queue size. Repeats go round-robin over the sizes, so a burst of other load on the
    machine hits every size alike instead of skewing the 1k-vs-100k ratio."""
    stores: dict[int, LightningStore] = {}
    rates: dict[int, list[float]] = {queued: [] for queued in QUEUED_SIZES}
    cpu_rates: dict[int, list[float]] = {queued: [] for queued in QUEUED_SIZES}
    try:
        for queued in QUEUED_SIZES:
            inner = _SingleLoopStore() if mode == "owner-thread x2" else InMemoryLightningStore()
            asyncio.run(_preload(inner, queued))  # before any wrapper exists: no loop owns the store yet
            stores[queued] = inner if mode == "one loop" else ThreadedLightningStore(inner)
        for _ in range(repeats):
            for queued, store in stores.items():
                gc.collect()
                if mode == "one loop":
                    elapsed, cpu = _time_one_loop(store, cycles)
                else:
                    elapsed, cpu = _time_threads(store, cycles, 2)
                rates[queued].append(cycles / elapsed)
                cpu_rates[queued].append(cycles / cpu)
    finally:
        for store in stores.values():
            if isinstance(store, ThreadedLightningStore):
                store.close_sync()
    rows = []
    for queued in QUEUED_SIZES:
        median = statistics.median(rates[queued])
        rows.append(
            {
                "mode": mode,
                "queued": queued,
                "cycles": cycles,
                "repeats": repeats,
                "median_cps": median,
                "min_cps": min(rates[queued]),
                "max_cps": max(rates[queued]),
                "spread_pct": 100.0 * (max(rates[queued]) - min(rates[queued])) / median,
                "median_cpu_cps": statistics.median(cpu_rates[queued]),
            }
        )
    return rows


def _await_cost_ns() -> float:
    """A machine-speed reference from the same run: ns per trivial ``await`` of a coroutine."""

    async def nothing() -> None:
        return None

    async def loop(count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            await nothing()
        return time.perf_counter() - started

    count = 200_000
    return min(asyncio.run(loop(count)) for _ in range(3)) / count * 1e9


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure every mode at every queue size; one row per (mode, queued)."""
    plan = [  # (mode, cycles per repeat, repeats)
        ("one loop", 3_000 if quick else 20_000, 3 if quick else 7),
        ("threaded x2", 3_000 if quick else 20_000, 3 if quick else 7),
        ("owner-thread x2", 300 if quick else 1_000, 3 if quick else 5),
    ]
    return [row for mode, cycles, repeats in plan for row in _measure_mode(mode, cycles, repeats)]


def _verdicts(rows: Sequence[dict[str, Any]]) -> list[tuple[str, bool]]:
    one_loop = {row["queued"]: row["median_cps"] for row in rows if row["mode"] == "one loop"}
    slowest = min(one_loop.values())
    flatness = abs(one_loop[QUEUED_SIZES[-1]] - one_loop[QUEUED_SIZES[0]]) / one_loop[QUEUED_SIZES[0]]
    return [
        (
            f"one loop >= {TARGET_CYCLES_PER_SECOND:,.0f} cycles/s at every size (slowest {slowest:,.0f})",
            slowest >= TARGET_CYCLES_PER_SECOND,
        ),
        (
            f"one loop flat within {TARGET_FLATNESS:.0%} from 1k to 100k queued (differs by {flatness:.1%})",
            flatness <= TARGET_FLATNESS,
        ),
    ]


def _table(rows: Sequence[dict[str, Any]]) -> str:
    columns = (
        ("queued", 8),
        ("cycles", 7),
        ("median cycles/s", 16),
        ("min", 9),
        ("max", 9),
        ("spread", 7),
        ("per CPU-s", 10),
    )
    header = f"{'mode':<16} " + " ".join(f"{name:>{width}}" for name, width in columns)
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['mode']:<16} {row['queued']:>8,} {row['cycles']:>7,} {row['median_cps']:>16,.0f} "
            f"{row['min_cps']:>9,.0f} {row['max_cps']:>9,.0f} {row['spread_pct']:>6.1f}% "
            f"{row['median_cpu_cps']:>10,.0f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cycles and repeats (a smoke run)")
    args = parser.parse_args(argv)
    reference = _await_cost_ns()
    rows = run(args.quick)
    print(f"Python {sys.version.split()[0]}; machine reference: {reference:.0f} ns per trivial await")
    print(_table(rows))
    print("cycles/s is wall clock (the targets); 'per CPU-s' divides by this process's CPU time instead,")
    print("which other load on a shared machine disturbs less.")
    ok = True
    for text, passed in _verdicts(rows):
        ok &= passed
        print(f"[{'PASS' if passed else 'FAIL'}] {text}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
