"""Sandbox overhead per scenario: what ``run_scenario`` costs beyond ``execute()`` itself.

A trivial strategy (awaits each bundle once, on one loop) runs empty scripts; the overhead of one
scenario is its wall time in the caller minus the ``execute()`` time measured inside the sandbox. Also
measured in the same run: the zygote's cold start (paid once per pytest process) and, as the baseline
the zygote exists to beat, starting a fresh interpreter that imports the kit (what a spawn-per-scenario
sandbox would pay every time). Target: median overhead <= 50 ms.

Usage: ``python -m bench.sandbox [--quick] [--json PATH]``; ``run(quick)`` returns the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["NullStore", "TrivialStrategy", "main", "run"]

_REPO = Path(__file__).resolve().parent.parent
_TARGET_MS = 50.0


class _Event:
    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        return self._set


class TrivialStrategy:
    """Awaits the algorithm and each runner once on one loop: as little strategy as there can be."""

    capability_manifest: dict[str, Any] = {"uses_processes": False}

    def __init__(self, n_runners: int = 1) -> None:
        self.n_runners = n_runners

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        async def main() -> None:
            event = _Event()
            await algorithm(store, event)
            event.set()
            for worker_id in range(self.n_runners):
                await runner(store, worker_id, event)

        asyncio.run(main())


class NullStore:
    """A store nobody calls (the scripts are empty)."""


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and return rows: zygote start, per-scenario overhead, and the fresh-interpreter baseline."""
    if str(_REPO) not in sys.path:
        sys.path.insert(0, str(_REPO))
    from conformance.sandbox import run_scenario, shutdown_sandboxes
    from conformance.scenarios import Scenario, Target

    target = Target("bench.sandbox:TrivialStrategy", store_factory="bench.sandbox:NullStore")
    scenario = Scenario("overhead", n_runners=1)
    runs = 15 if quick else 60
    shutdown_sandboxes()  # measure a cold zygote
    started = time.perf_counter()
    first = run_scenario(target, scenario)
    cold = time.perf_counter() - started
    if first.outcome != "returned":
        raise RuntimeError(f"the trivial scenario did not return: {first.outcome} {first.exception}")
    overheads: list[float] = []
    walls: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        result = run_scenario(target, scenario)
        wall = time.perf_counter() - started
        walls.append(wall)
        overheads.append(wall - result.duration)
    shutdown_sandboxes()
    baseline: list[float] = []
    for _ in range(3 if quick else 10):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import conformance.sandbox"], check=True, cwd=_REPO)
        baseline.append(time.perf_counter() - started)
    median = statistics.median(overheads)
    base = statistics.median(baseline)
    return [
        {
            "bench": "sandbox",
            "metric": "overhead per scenario (wall - execute)",
            "unit": "ms",
            "median": round(median * 1000, 2),
            "p90": round(_percentile(overheads, 0.9) * 1000, 2),
            "wall_median": round(statistics.median(walls) * 1000, 2),
            "runs": runs,
            "target": _TARGET_MS,
            "meets_target": median * 1000 <= _TARGET_MS,
        },
        {
            "bench": "sandbox",
            "metric": "zygote cold start + first scenario",
            "unit": "ms",
            "value": round(cold * 1000, 1),
        },
        {
            "bench": "sandbox",
            "metric": "baseline: fresh interpreter importing the kit",
            "unit": "ms",
            "median": round(base * 1000, 1),
            "runs": len(baseline),
            "overhead_vs_baseline": round(median / base, 3),
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = run(args.quick)
    for row in rows:
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
