"""CPU-bound runners: ``ipc`` (runner processes) against ``shm`` (runner threads), 2 runners each.

Each rollout makes its runner spend ``work_ms`` of pure-Python CPU time (no I/O, no C extension that
releases the GIL), as an agent that parses, scores or simulates in Python would. Threads share one
GIL, so ``shm`` runs such runners one at a time; ``ipc`` runs them in parallel on separate cores.
Both are measured in the same run, from the first enqueue to the last completion (after every runner
is up), so the ratio holds on a noisy machine.

Usage: ``python -m bench.cpu_bound [--quick] [--rollouts N] [--work-ms MS] [--runners N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from bench.strategies import STRATEGIES, measure_w1

__all__ = ["main", "run"]


def measure(name: str, n_runners: int, n_rollouts: int, work_ms: float) -> float:
    """Rollouts per second for one strategy: W1 with ``work_ms`` of CPU per rollout."""
    return measure_w1(STRATEGIES[name], n_runners, n_rollouts, work_seconds=work_ms / 1000.0)


def run(
    quick: bool = False, n_rollouts: int = 200, work_ms: float = 5.0, n_runners: int = 2
) -> list[dict[str, Any]]:
    """Medians for ``shm`` and ``ipc``, interleaved run by run; one row each plus the ipc/shm ratio."""
    repeats = 3 if quick else 7
    samples: dict[str, list[float]] = {"shm": [], "ipc": []}
    for _ in range(repeats):
        for name, values in samples.items():
            values.append(measure(name, n_runners, n_rollouts, work_ms))
    rows: list[dict[str, Any]] = []
    for name, values in samples.items():
        rows.append(
            {
                "strategy": name,
                "workload": "cpu-bound",
                "n_runners": n_runners,
                "n_rollouts": n_rollouts,
                "work_ms": work_ms,
                "unit": "rollouts/s",
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "samples": values,
                "ideal": n_runners * 1000.0 / work_ms,
            }
        )
    ratio = rows[1]["median"] / rows[0]["median"]
    for row in rows:
        row["ipc_over_shm"] = ratio
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    first = rows[0]
    lines = [
        f"CPU-bound runners: {first['n_runners']} runners, {first['n_rollouts']} rollouts, "
        f"{first['work_ms']:g} ms of pure-Python CPU each (ideal with {first['n_runners']} cores: "
        f"{first['ideal']:,.0f} rollouts/s)",
        f"{'strategy':<9}{'median rollouts/s':>20}{'[min-max]':>22}",
    ]
    for row in rows:
        spread = "[{:,.1f}-{:,.1f}]".format(row["min"], row["max"])
        lines.append(f"{row['strategy']:<9}{row['median']:>20,.1f}{spread:>22}")
    lines.append(f"ipc / shm = {first['ipc_over_shm']:.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_bound", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--work-ms", type=float, default=5.0)
    parser.add_argument("--runners", type=int, default=2)
    args = parser.parse_args(argv)
    rows = run(args.quick, args.rollouts, args.work_ms, args.runners)
    print(format_table(rows))
    return 0 if rows[0]["ipc_over_shm"] > 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
