"""W1 throughput scaling: against the number of runners and against the payload each rollout carries.

Runners: W1 (N = 1,000 rollouts) with 1, 2, 4 and 8 runners per strategy; each figure's ratio is to the
same strategy's 1-runner median from the same run. Payload: W1 with 2 runners while every rollout's input
carries a string of 100 B to 1 MB; N shrinks as the payload grows (so a run moves at most ~50 MB per
strategy) and the ratio is to the same strategy's 100 B median from the same run.

Usage: ``python -m bench.scaling [--quick]``; ``run_runners(...)`` and ``run_payload(...)`` return rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bench.strategies import STRATEGIES, measure_w1

__all__ = ["PAYLOAD_SIZES", "RUNNER_COUNTS", "main", "rollouts_for_payload", "run_payload", "run_runners"]

RUNNER_COUNTS = (1, 2, 4, 8)
PAYLOAD_SIZES = (100, 1_000, 10_000, 100_000, 1_000_000)
_MAX_BYTES_PER_RUN = 50_000_000


def rollouts_for_payload(payload_bytes: int, n_rollouts: int = 1000) -> int:
    """N for one W1 run at ``payload_bytes``: ``n_rollouts``, capped so one run moves <= ~50 MB."""
    if payload_bytes < 0:
        raise ValueError(f"payload_bytes must be >= 0, got {payload_bytes}")
    return max(20, min(n_rollouts, _MAX_BYTES_PER_RUN // max(payload_bytes, 1)))


def _row(strategy: str, samples: list[float], **fields: Any) -> dict[str, Any]:
    return {
        "strategy": strategy,
        "unit": "rollouts/s",
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
        **fields,
    }


def _check(strategies: Sequence[str]) -> None:
    unknown = [name for name in strategies if name not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {unknown[0]!r}; known: {', '.join(sorted(STRATEGIES))}")


def run_runners(
    strategies: Sequence[str] = tuple(STRATEGIES),
    runners: Sequence[int] = RUNNER_COUNTS,
    repeats: int = 5,
    n_rollouts: int = 1000,
    known: Sequence[dict[str, Any]] = (),
    progress: Callable[[str], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """One row per (strategy, runners); W1 rows from ``bench.strategies`` in ``known`` are reused.

    Reusing keeps the default run inside its time budget: only the runner counts not measured yet
    (8) cost extra executions.
    """
    _check(strategies)
    reused = {
        (r["strategy"], r["n_runners"]): r
        for r in known
        if r.get("workload") == "W1" and r.get("n_rollouts") == n_rollouts
    }
    rows = []
    for name in strategies:
        for n in runners:
            if (name, n) in reused:
                samples = list(reused[(name, n)]["samples"])
            else:
                progress(f"W1 {name} with {n} runners")
                measure_w1(STRATEGIES[name], n, min(n_rollouts, 100))  # warm-up
                samples = [measure_w1(STRATEGIES[name], n, n_rollouts) for _ in range(repeats)]
            rows.append(_row(name, samples, n_runners=n, n_rollouts=n_rollouts, reused=(name, n) in reused))
        base = next(
            (r["median"] for r in rows if r["strategy"] == name and r["n_runners"] == runners[0]), None
        )
        for row in rows:
            if row["strategy"] == name:
                row["ratio_to_first"] = row["median"] / base if base else None
    return rows


def run_payload(
    strategies: Sequence[str] = tuple(STRATEGIES),
    sizes: Sequence[int] = PAYLOAD_SIZES,
    repeats: int = 3,
    n_runners: int = 2,
    progress: Callable[[str], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """One row per (strategy, payload size), with rollouts/s, MB/s and the ratio to the smallest size."""
    _check(strategies)
    rows = []
    for name in strategies:
        progress(f"payload scaling {name}")
        measure_w1(STRATEGIES[name], n_runners, 50)  # warm-up
        first: float | None = None
        for size in sizes:
            n = rollouts_for_payload(size)
            samples = [measure_w1(STRATEGIES[name], n_runners, n, size) for _ in range(repeats)]
            row = _row(name, samples, payload_bytes=size, n_rollouts=n, n_runners=n_runners)
            row["mb_per_s"] = row["median"] * size / 1e6
            first = row["median"] if first is None else first
            row["ratio_to_first"] = row["median"] / first
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="1 repeat instead of 3-5")
    args = parser.parse_args(argv)
    for row in run_runners(repeats=1 if args.quick else 5):
        print(f"{row['strategy']:<5} runners={row['n_runners']:<2} {row['median']:>10,.0f} rollouts/s")
    for row in run_payload(repeats=1 if args.quick else 3):
        print(
            f"{row['strategy']:<5} payload={row['payload_bytes']:>9,} B {row['median']:>10,.0f} rollouts/s "
            f"{row['mb_per_s']:>8.1f} MB/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
