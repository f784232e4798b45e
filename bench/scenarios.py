"""P1 throughput: hypothesis-drawn scenarios per second for each reference strategy.

Each strategy runs the same derandomised sequence of P1 scenarios (seed 0, the thorough profile with a
fixed number of examples, no time budget) through the sandbox and the oracle; a row gives the scenarios
run, the wall time, scenarios per second and the median / 90th percentile sandbox wall time per
scenario. The CI profile's time budget (``CI_BUDGET``) divided by the median says how many scenarios a
CI run of P1 explores for that strategy. Each strategy is measured twice in the same run, from the same
seed: without the scheduling perturbation (``perturbation: off``) and with it as the profiles draw it
(``p1``: most scenarios perturbed); drawing the perturbation changes the scenarios drawn after the first,
so the two rates compare P1 as each mode runs it, side by side.

Usage: ``python -m bench.scenarios [--quick] [--json PATH]``; ``run(quick)`` returns the rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "run"]

_REPO = Path(__file__).resolve().parent.parent
_STRATEGIES = ("shm", "ipc", "cs")


def _measure(alias: str, examples: int, perturb: bool = False) -> dict[str, Any]:
    from conformance.checks import CheckContext
    from conformance.contracts.properties import CI_BUDGET, explore
    from conformance.schedules import ScheduleBounds
    from conformance.target import make_target, validate_target

    resolved = validate_target(make_target(alias))
    ctx = CheckContext("P1", "default", resolved.target, resolved.capabilities, seed=0)
    bounds = ScheduleBounds(perturb=perturb)
    exploration = explore(ctx, examples=examples, budget=None, reruns=0, shrink_runs=0, bounds=bounds)
    walls = sorted(float(r.measurements.get("observer_wall", r.duration)) for r in ctx.results)
    median = statistics.median(walls) if walls else float("nan")
    p90 = walls[min(len(walls) - 1, int(0.9 * len(walls)))] if walls else float("nan")
    return {
        "bench": "p1-scenarios",
        "strategy": alias,
        "perturbation": "p1" if perturb else "off",
        "scenarios": exploration.examples,
        "seconds": round(exploration.seconds, 2),
        "scenarios_per_second": round(exploration.examples / exploration.seconds, 2),
        "median_scenario_s": round(median, 3),
        "p90_scenario_s": round(p90, 3),
        "ci_budget_s": CI_BUDGET,
        "failed": exploration.finding is not None,
        # A failure here is a P1 verdict, not a speed figure: say what it was so it can be replayed.
        "violations": exploration.finding.violations if exploration.finding is not None else [],
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    if str(_REPO) not in sys.path:
        sys.path.insert(0, str(_REPO))
    examples = 10 if quick else 40
    try:
        return [_measure(alias, examples, perturb) for alias in _STRATEGIES for perturb in (False, True)]
    finally:
        from conformance.sandbox import shutdown_sandboxes

        shutdown_sandboxes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer scenarios per strategy")
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
