"""Store throughput: rollout cycles per second at 1k, 10k and 100k rollouts already queued, and bulk work.

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

Bulk work, on one loop: one ``wait_for_rollouts`` over 1k and over 100k finished ids (rollouts returned
per second), and the batch pattern of a training step, which enqueues a batch, claims all of it, completes
all of it and waits for all of it, at 1k and 20k rollouts (rollouts per second over the four phases). Each
large size is judged against its small twin measured in the same run: the cost per rollout must not grow
with the size of the batch (large batches keep many returned models alive at once, which is where the
garbage collector's full passes would show). Targets: a 100k-id wait returns >= 200,000 rollouts/s, and a
20k batch runs within 20% of the 1k batch's rate. The ``batch (no GC)`` rows take the same samples with the
collector off (no target): their ratio is what the larger working set alone costs (a batch keeps about
2.4 KB per rollout: at 1k that fits in a core's L2 cache of a few MiB, at 20k it does not), and the gap
between the two ratios is the collector's share.

Durable rows: ``SqliteLightningStore`` on one loop under each sync mode (``sqlite NORMAL``, the default,
``sqlite FULL``, ``sqlite OFF``), preloaded the same way, so each write call is one commit; the target
is >= 5,000 cycles/s with durability on (NORMAL) at every size, flat within 20%, and the price of each
mode is printed as a share of the in-memory one-loop rate measured in the same run.

Run: ``python -m bench.store`` (``--quick`` for a short run); ``run(quick)`` returns the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import gc
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agentlightning.store.base import LightningStore
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.sqlite import SYNC_MODES, SqliteLightningStore
from agentlightning.store.threaded import ThreadedLightningStore
from agentlightning.types import AttemptedRollout

__all__ = ["bulk_verdicts", "main", "run", "run_bulk"]

QUEUED_SIZES = (1_000, 10_000, 100_000)
TARGET_CYCLES_PER_SECOND = 30_000.0
TARGET_DURABLE_CYCLES_PER_SECOND = 5_000.0
_DURABLE = "sqlite"  # the mode name of SqliteLightningStore rows: "sqlite NORMAL" etc., on one loop
TARGET_FLATNESS = 0.20
WAIT_SIZES = (1_000, 100_000)
BATCH_SIZES = (1_000, 20_000)
BATCH_NO_GC = "batch (no GC)"
"""The batch pattern with the collector off: a diagnostic row beside ``batch``, judged by no target."""
TARGET_WAIT_PER_SECOND = 200_000.0
TARGET_BATCH_RATIO = 0.80


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


async def _preload_durable(store: SqliteLightningStore, queued: int) -> None:
    """The preload in memory, then one commit of it all: 100k single commits would take minutes, and
    the file ends the same (the store journals every dirty rollout at its next commit)."""
    for n in range(queued):
        await InMemoryLightningStore.enqueue_rollout(store, {"preloaded": n})
    await store.wait_for_rollouts(rollout_ids=[], timeout=0)  # commits what is pending


def _new_store(mode: str) -> InMemoryLightningStore:
    if mode.startswith(_DURABLE):
        return SqliteLightningStore(synchronous=mode.rsplit(" ", 1)[-1])  # type: ignore[arg-type]
    return _SingleLoopStore() if mode == "owner-thread x2" else InMemoryLightningStore()


class _Collections:
    """Wall time the garbage collector spends in its passes, and how many full passes ran, while
    installed in ``gc.callbacks``: the share of a figure that goes to collecting rather than working."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.full += info["generation"] == 2

    def __enter__(self) -> _Collections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self)


@dataclasses.dataclass(frozen=True)
class _Timing:
    elapsed: float
    cpu: float
    in_gc: float
    full_collections: float


def _time_on_loop(work: Callable[[], Awaitable[None]]) -> _Timing:
    """Wall, CPU and collector time of ``work()`` on a fresh event loop (its start-up is not timed)."""

    async def timed() -> _Timing:
        with _Collections() as collections:
            started, cpu_started = time.perf_counter(), time.process_time()
            await work()
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return _Timing(elapsed, cpu, collections.seconds, collections.full)

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
            inner = _new_store(mode)
            if isinstance(inner, SqliteLightningStore):
                asyncio.run(_preload_durable(inner, queued))
            else:  # before any wrapper exists: no loop owns the store yet
                asyncio.run(_preload(inner, queued))
            stores[queued] = (
                inner if mode == "one loop" or mode.startswith(_DURABLE) else ThreadedLightningStore(inner)
            )
        for _ in range(repeats):
            for queued, store in stores.items():
                gc.collect()
                if mode == "one loop" or mode.startswith(_DURABLE):
                    timing = _time_on_loop(functools.partial(_cycles, store, cycles))
                    elapsed, cpu = timing.elapsed, timing.cpu
                else:
                    elapsed, cpu = _time_threads(store, cycles, 2)
                rates[queued].append(cycles / elapsed)
                cpu_rates[queued].append(cycles / cpu)
    finally:
        for store in stores.values():
            if isinstance(store, ThreadedLightningStore):
                store.close_sync()
            elif isinstance(store, SqliteLightningStore):
                asyncio.run(store.close())
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


# -- bulk work ------------------------------------------------------------------------------------------


async def _claim_and_complete(store: LightningStore, count: int) -> list[str]:
    """Enqueue ``count`` rollouts, claim every one, mark every attempt succeeded; the rollout ids."""
    ids = [(await store.enqueue_rollout({"n": n})).rollout_id for n in range(count)]
    claimed: list[AttemptedRollout] = []
    for _ in range(count):
        attempted = await store.dequeue_rollout()
        if attempted is None:
            raise RuntimeError(f"the queue ran dry after {len(claimed)} of {count} claims")
        claimed.append(attempted)  # held, as a runner holds its work until it reports
    for attempted in claimed:
        await store.update_attempt(attempted.rollout_id, attempted.attempt.attempt_id, status="succeeded")
    return ids


async def _wait_all(store: LightningStore, ids: list[str]) -> None:
    finished = await store.wait_for_rollouts(rollout_ids=ids, timeout=60.0)
    if len(finished) != len(ids) or any(rollout.status != "succeeded" for rollout in finished):
        raise RuntimeError(f"waited for {len(ids)} finished rollouts, got {len(finished)} back")


async def _batch(store: LightningStore, count: int) -> None:
    await _wait_all(store, await _claim_and_complete(store, count))


async def _waits(store: LightningStore, ids: list[str], rounds: int) -> None:
    for _ in range(rounds):
        await _wait_all(store, ids)  # each round's models are dropped before the next round


def _bulk_row(pattern: str, size: int, timings: list[_Timing]) -> dict[str, Any]:
    rates = [size / timing.elapsed for timing in timings]
    median = statistics.median(rates)
    return {
        "pattern": pattern,
        "size": size,
        "repeats": len(rates),
        "median_rps": median,
        "min_rps": min(rates),
        "max_rps": max(rates),
        "spread_pct": 100.0 * (max(rates) - min(rates)) / median,
        "median_cpu_rps": statistics.median(size / timing.cpu for timing in timings),
        "gc_pct": statistics.median(100.0 * timing.in_gc / timing.elapsed for timing in timings),
        "full_collections": statistics.median(timing.full_collections for timing in timings),
    }


def _measure_waits(repeats: int) -> list[dict[str, Any]]:
    finished: dict[int, tuple[LightningStore, list[str]]] = {}
    for size in WAIT_SIZES:
        filled = InMemoryLightningStore()
        finished[size] = (filled, asyncio.run(_claim_and_complete(filled, size)))
    timings: dict[int, list[_Timing]] = {size: [] for size in WAIT_SIZES}
    for _ in range(repeats):
        for size, (store, ids) in finished.items():
            rounds = max(1, WAIT_SIZES[-1] // size)  # every sample returns as many rollouts
            gc.collect()
            timing = _time_on_loop(functools.partial(_waits, store, ids, rounds))
            timings[size].append(
                dataclasses.replace(
                    timing,
                    elapsed=timing.elapsed / rounds,
                    cpu=timing.cpu / rounds,
                    in_gc=timing.in_gc / rounds,
                    full_collections=timing.full_collections / rounds,
                )
            )
    return [_bulk_row("wait_for_rollouts", size, timings[size]) for size in WAIT_SIZES]


async def _batch_uncollected(store: LightningStore, count: int) -> None:
    gc.disable()
    try:
        await _batch(store, count)
    finally:
        gc.enable()


def _measure_batches(repeats: int) -> list[dict[str, Any]]:
    """One batch per sample on a fresh store, with no other store alive: the collector's full passes
    then cost what the batch itself makes them cost. Each sample is taken again with the collector off
    (``BATCH_NO_GC``, no target): what the larger batch loses there is the cost of its larger working set
    (memory, caches), which no store-side change to what the collector sees can win back."""
    patterns = {"batch": _batch, BATCH_NO_GC: _batch_uncollected}
    timings: dict[tuple[str, int], list[_Timing]] = {(p, size): [] for p in patterns for size in BATCH_SIZES}
    for _ in range(repeats):
        for pattern, work in patterns.items():
            for size in BATCH_SIZES:
                fresh = InMemoryLightningStore()
                gc.collect()
                timings[pattern, size].append(_time_on_loop(functools.partial(work, fresh, size)))
                del fresh
    return [_bulk_row(pattern, size, timings[pattern, size]) for pattern in patterns for size in BATCH_SIZES]


def run_bulk(quick: bool) -> list[dict[str, Any]]:
    """Bulk waits and whole batches on one loop; one row per (pattern, size), ``ratio`` against the
    pattern's smallest size. Samples go round-robin over the sizes, each after a full collection."""
    repeats = 3 if quick else 7
    rows = _measure_waits(repeats) + _measure_batches(repeats)
    smallest = {row["pattern"]: row["median_rps"] for row in reversed(rows)}
    for row in rows:
        row["ratio"] = row["median_rps"] / smallest[row["pattern"]]
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
        *((f"{_DURABLE} {sync}", 300 if quick else 2_000, 3 if quick else 5) for sync in SYNC_MODES),
    ]
    return [row for mode, cycles, repeats in plan for row in _measure_mode(mode, cycles, repeats)]


def bulk_verdicts(rows: Sequence[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The bulk targets, judged on ``run_bulk``'s rows."""
    by_key = {(row["pattern"], row["size"]): row for row in rows}
    wait = by_key[("wait_for_rollouts", WAIT_SIZES[-1])]["median_rps"]
    batch = by_key[("batch", BATCH_SIZES[-1])]["ratio"]
    return [
        (
            f"wait_for_rollouts over {WAIT_SIZES[-1]:,} ids >= {TARGET_WAIT_PER_SECOND:,.0f} rollouts/s "
            f"(got {wait:,.0f})",
            wait >= TARGET_WAIT_PER_SECOND,
        ),
        (
            f"batch of {BATCH_SIZES[-1]:,} within {1 - TARGET_BATCH_RATIO:.0%} of the {BATCH_SIZES[0]:,} "
            f"batch's rate (ratio {batch:.2f})",
            batch >= TARGET_BATCH_RATIO,
        ),
    ]


def _durable_verdicts(rows: Sequence[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The durable store with durability on (``synchronous=NORMAL``, the default): the rate and its
    flatness; then what each sync mode costs against the in-memory store on one loop (same run)."""
    memory = {row["queued"]: row["median_cps"] for row in rows if row["mode"] == "one loop"}
    durable = {row["queued"]: row["median_cps"] for row in rows if row["mode"] == f"{_DURABLE} NORMAL"}
    if not durable:
        return []
    slowest = min(durable.values())
    flatness = abs(durable[QUEUED_SIZES[-1]] - durable[QUEUED_SIZES[0]]) / durable[QUEUED_SIZES[0]]
    verdicts = [
        (
            f"{_DURABLE} NORMAL >= {TARGET_DURABLE_CYCLES_PER_SECOND:,.0f} cycles/s at every size "
            f"(slowest {slowest:,.0f})",
            slowest >= TARGET_DURABLE_CYCLES_PER_SECOND,
        ),
        (
            f"{_DURABLE} NORMAL flat within {TARGET_FLATNESS:.0%} from 1k to 100k queued "
            f"(differs by {flatness:.1%})",
            flatness <= TARGET_FLATNESS,
        ),
    ]
    for sync in SYNC_MODES:
        mode = {row["queued"]: row["median_cps"] for row in rows if row["mode"] == f"{_DURABLE} {sync}"}
        if mode and memory:
            price = [f"{mode[q] / memory[q]:.1%}" for q in QUEUED_SIZES]
            print(
                f"{_DURABLE} {sync}: {', '.join(price)} of the in-memory rate at {list(QUEUED_SIZES)} queued"
            )
    return verdicts


def _verdicts(rows: Sequence[dict[str, Any]]) -> list[tuple[str, bool]]:
    one_loop = {row["queued"]: row["median_cps"] for row in rows if row["mode"] == "one loop"}
    slowest = min(one_loop.values())
    flatness = abs(one_loop[QUEUED_SIZES[-1]] - one_loop[QUEUED_SIZES[0]]) / one_loop[QUEUED_SIZES[0]]
    return [
        *_durable_verdicts(rows),
        (
            f"one loop >= {TARGET_CYCLES_PER_SECOND:,.0f} cycles/s at every size (slowest {slowest:,.0f})",
            slowest >= TARGET_CYCLES_PER_SECOND,
        ),
        (
            f"one loop flat within {TARGET_FLATNESS:.0%} from 1k to 100k queued (differs by {flatness:.1%})",
            flatness <= TARGET_FLATNESS,
        ),
    ]


_CYCLE_COLUMNS = (  # (header, row key, width, format spec)
    ("mode", "mode", 16, ""),
    ("queued", "queued", 8, ","),
    ("cycles", "cycles", 7, ","),
    ("median cycles/s", "median_cps", 16, ",.0f"),
    ("min", "min_cps", 9, ",.0f"),
    ("max", "max_cps", 9, ",.0f"),
    ("spread %", "spread_pct", 8, ".1f"),
    ("per CPU-s", "median_cpu_cps", 10, ",.0f"),
)
_BULK_COLUMNS = (
    ("bulk (one loop)", "pattern", 18, ""),
    ("size", "size", 8, ","),
    ("median rollouts/s", "median_rps", 18, ",.0f"),
    ("min", "min_rps", 9, ",.0f"),
    ("max", "max_rps", 9, ",.0f"),
    ("spread %", "spread_pct", 8, ".1f"),
    ("per CPU-s", "median_cpu_rps", 10, ",.0f"),
    ("ratio", "ratio", 6, ".2f"),
    ("in GC %", "gc_pct", 7, ".0f"),
    ("full GCs", "full_collections", 8, ".2g"),
)


def _table(columns: Sequence[tuple[str, str, int, str]], rows: Sequence[dict[str, Any]]) -> str:
    """Fixed-width text, the first column left-aligned and the others right-aligned."""

    def line(cells: Sequence[str]) -> str:
        first, *rest = zip(cells, (width for _, _, width, _ in columns), strict=True)
        return " ".join([f"{first[0]:<{first[1]}}", *(f"{cell:>{width}}" for cell, width in rest)])

    header = line([name for name, _, _, _ in columns])
    body = [line([format(row[key], spec) for _, key, _, spec in columns]) for row in rows]
    return "\n".join([header, "-" * len(header), *body])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cycles and repeats (a smoke run)")
    parser.add_argument(
        "--only", choices=("cycles", "bulk"), help="measure only the cycle rows or only the bulk rows"
    )
    args = parser.parse_args(argv)
    reference = _await_cost_ns()
    rows = [] if args.only == "bulk" else run(args.quick)
    bulk = [] if args.only == "cycles" else run_bulk(args.quick)
    print(f"Python {sys.version.split()[0]}; machine reference: {reference:.0f} ns per trivial await")
    if rows:
        print(_table(_CYCLE_COLUMNS, rows))
    if bulk:
        print(_table(_BULK_COLUMNS, bulk))
    print("cycles/s and rollouts/s are wall clock (the targets); 'per CPU-s' divides by this process's CPU")
    print("time instead, which other load on a shared machine disturbs less. 'ratio' is against the")
    print("pattern's smallest size, measured in the same run.")
    ok = True
    verdicts = (_verdicts(rows) if rows else []) + (bulk_verdicts(bulk) if bulk else [])
    for text, passed in verdicts:
        ok &= passed
        print(f"[{'PASS' if passed else 'FAIL'}] {text}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
