"""``python -m bench``: run every benchmark workload and write ``docs/benchmarks.md`` with its plots.

Workloads (``--only NAME``, repeatable): ``store`` (store cycles/s), ``strategies`` (W1-W4 for shm, ipc,
cs and, with its extra, ray, with 1, 2 and 4 runners), ``runners`` (W1 with 1, 2, 4 and 8 runners;
reuses the ``strategies`` W1 figures when both run), ``payload`` (W1 with 100 B to 1 MB per rollout),
``kit`` (the conformance kit's wall time per strategy), ``sandbox`` (the kit's per-scenario overhead),
``cpu-bound`` (ipc against shm on CPU-bound runners). ``scenarios`` (P1 scenarios/s) runs only when
named. The default run is budgeted to finish in under 10 minutes on a 2-core machine; ``--quick`` is a
smoke run of a minute or two.
Progress goes to stderr, one line per workload (and per long step) with the elapsed time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import machine
from bench.kit import P1_EXAMPLES

__all__ = ["WORKLOADS", "main"]

_REPO = Path(__file__).resolve().parent.parent
_STRATEGIES = ("shm", "ipc", "cs")


@dataclass(frozen=True)
class _Plan:
    """How much each workload repeats: ``quick`` trades confidence for a run of a minute or two."""

    quick: bool

    @property
    def strategy_repeats(self) -> int:
        return 2 if self.quick else 5

    @property
    def w1_repeats(self) -> int:
        # W1 is bimodal on small machines (it depends on where the kernel places each runner and the
        # server thread answering it), so its median needs more runs than the latency figures.
        return 3 if self.quick else 9

    @property
    def payload_repeats(self) -> int:
        return 1 if self.quick else 3

    @property
    def kit_selections(self) -> tuple[str, ...]:
        return ("L1 or L2", "P1") if self.quick else ("not P1", "P1")

    @property
    def kit_p1_examples(self) -> int:
        return 3 if self.quick else P1_EXAMPLES


class _Progress:
    """One line per step to stderr, stamped with the time since the run started."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[bench {time.perf_counter() - self.started:7.1f} s] {message}", file=sys.stderr, flush=True)


def _store(plan: _Plan, results: dict[str, Any], progress: Callable[[str], None]) -> list[dict[str, Any]]:
    from bench import store

    rows = store.run(plan.quick)
    results["store_verdicts"] = store._verdicts(rows)
    return rows


def _strategies(
    plan: _Plan, results: dict[str, Any], progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    from bench import strategies

    rows: list[dict[str, Any]] = []
    names, missing = strategies.available((*_STRATEGIES, "ray"))
    for name, why in missing.items():
        progress(f"W1-W4 {name}: skipped: {why}")
    # One call for every runner count: ray's cluster is started once (Ray is imported once per process),
    # and ray's W1 target (relative to cs's) is judged against cs's figure from the same call.
    rows += strategies.run(
        names, runners=(1, 2, 4), repeats=plan.strategy_repeats, w1_repeats=plan.w1_repeats, progress=progress
    )
    return rows


def _runners(plan: _Plan, results: dict[str, Any], progress: Callable[[str], None]) -> list[dict[str, Any]]:
    from bench import scaling

    known = results["workloads"].get("strategies", [])
    return scaling.run_runners(_STRATEGIES, repeats=plan.strategy_repeats, known=known, progress=progress)


def _payload(plan: _Plan, results: dict[str, Any], progress: Callable[[str], None]) -> list[dict[str, Any]]:
    from bench import scaling

    return scaling.run_payload(_STRATEGIES, repeats=plan.payload_repeats, progress=progress)


def _kit(plan: _Plan, results: dict[str, Any], progress: Callable[[str], None]) -> list[dict[str, Any]]:
    from bench import kit

    return kit.run(
        _STRATEGIES, selections=plan.kit_selections, p1_examples=plan.kit_p1_examples, progress=progress
    )


def _sandbox(plan: _Plan, results: dict[str, Any], progress: Callable[[str], None]) -> list[dict[str, Any]]:
    from bench import sandbox

    return sandbox.run(plan.quick)


def _cpu_bound(plan: _Plan, results: dict[str, Any], progress: Callable[[str], None]) -> list[dict[str, Any]]:
    from bench import cpu_bound

    return cpu_bound.run(plan.quick)


def _scenarios(plan: _Plan, results: dict[str, Any], progress: Callable[[str], None]) -> list[dict[str, Any]]:
    from bench import scenarios

    return scenarios.run(plan.quick)


_Workload = Callable[[_Plan, dict[str, Any], Callable[[str], None]], list[dict[str, Any]]]

WORKLOADS: dict[str, tuple[str, _Workload, bool]] = {
    "strategies": ("strategies", _strategies, True),
    "runners": ("runners", _runners, True),
    "payload": ("payload", _payload, True),
    "cpu-bound": ("cpu_bound", _cpu_bound, True),
    "sandbox": ("sandbox", _sandbox, True),
    "store": ("store", _store, True),
    "kit": ("kit", _kit, True),
    "scenarios": ("scenarios", _scenarios, False),
}
"""``--only`` name -> (key in the results, function, whether the default run includes it), in run order."""


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few repeats, a minute or two")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(WORKLOADS),
        metavar="NAME",
        help=f"run only this workload (repeatable): {', '.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--out", type=Path, default=_REPO / "docs" / "benchmarks.md", help="the Markdown page"
    )
    parser.add_argument("--img-dir", type=Path, help="where the PNG plots go (default: img/ beside --out)")
    parser.add_argument("--json", type=Path, help="also write every row as JSON here")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="measure nothing: rewrite the report from a --json file"
    )
    args = parser.parse_args(argv)
    if args.render and not args.render.is_file():
        parser.error(f"--render: no such file: {args.render}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    from bench.report import write_report

    if args.render:
        for path in write_report(
            json.loads(args.render.read_text()), args.out, args.img_dir or args.out.parent / "img"
        ):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    plan = _Plan(args.quick)
    chosen = [
        name for name, (_, _, default) in WORKLOADS.items() if (name in args.only if args.only else default)
    ]
    progress = _Progress()
    command = "python -m bench" + (" --quick" if args.quick else "")
    command += "".join(f" --only {name}" for name in args.only or ())
    results: dict[str, Any] = {
        "command": command,
        "quick": args.quick,
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine.describe(),
        "load_start": machine.load_average(),
        "workloads": {},
        "timings": [],
    }
    failed = False
    for name in chosen:
        key, function, _ = WORKLOADS[name]
        progress(f"{name}: start")
        started = time.perf_counter()
        error = None
        try:
            results["workloads"][key] = function(plan, results, progress)
        except Exception as exc:  # one broken workload must not cost the figures of the others
            failed = True
            error = f"failed: {type(exc).__name__}: {exc}"
            traceback.print_exc()
        elapsed = time.perf_counter() - started
        results["timings"].append({"workload": name, "seconds": elapsed, "error": error})
        progress(f"{name}: {'done' if error is None else error} in {elapsed:.1f} s")
    results["load_end"] = machine.load_average()
    results["total_seconds"] = time.perf_counter() - progress.started
    img_dir = args.img_dir or args.out.parent / "img"
    for path in write_report(results, args.out, img_dir):
        progress(f"wrote {path}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    progress(f"total {results['total_seconds']:.1f} s ({results['total_seconds'] / 60:.1f} min)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
