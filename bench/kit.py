"""Kit wall time: ``python -m conformance <strategy> -n 2`` timed as a subprocess, per strategy.

The property-based contract P1 is timed apart from the rest (``-k P1`` and ``-k "not P1"``): by default
it explores for a fixed time budget (``CI_BUDGET``, 45 s), which would only time the budget, so here it
runs a fixed number of scenarios (``--conformance-examples``) instead. Each figure is one run: the time
a user's CI job pays on this machine, with whatever else the machine runs at that moment.

``python -m bench.kit`` times whole-kit runs per reference strategy and per profile
(``--conformance-profile``), and breaks each down per contract (the items' wall time) and per phase
(sandbox, strategy start-up, execute, settle windows, cleanup, and P1 as a whole), read from the run's
report. ``--baseline DIR`` also times the kit of another checkout (say, the main branch) in the same
invocation, interleaved with this one's, so before and after see the same machine.

Usage: ``python -m bench.kit [--strategy shm ...] [--profile ci ...] [--baseline DIR]``;
``run(...)`` returns the ``-k`` selection rows, ``profile_rows(...)`` the profile rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["P1_EXAMPLES", "PHASES", "SELECTIONS", "breakdown", "main", "measure", "profile_rows", "run"]

_REPO = Path(__file__).resolve().parent.parent
SELECTIONS = ("not P1", "P1")
P1_EXAMPLES = 10
_HANG = 600.0
PHASES = ("sandbox", "start-up", "execute", "settle", "cleanup")
"""The phases the plugin records per item (``conformance.plugin._phases``)."""


def _summary_line(output: str) -> str:
    """pytest's closing line (``== 40 passed, 2 skipped in 12.3s ==``), without the rulers."""
    for line in reversed(output.strip().splitlines()):
        if " in " in line and any(word in line for word in ("passed", "failed", "error", "skipped")):
            return line.strip("= ").strip()
    return output.strip().splitlines()[-1] if output.strip() else ""


def measure(
    strategy: str,
    selection: str | None,
    workers: int = 2,
    extra: Sequence[str] = (),
    repo: Path = _REPO,
) -> dict[str, Any]:
    """Run the kit once for ``strategy`` (restricted to ``-k selection`` unless ``None``); wall time,
    pytest's verdict and, when ``extra`` asks for a JSON report, that report's ``breakdown``.

    ``extra`` goes to pytest as is (``--conformance-examples N`` fixes P1's work). ``repo`` is the
    checkout whose kit runs (this one by default).
    """
    command = [sys.executable, "-m", "conformance", strategy, "-n", str(workers)]
    command += ["-k", selection] if selection is not None else []
    command += ["-q", "-p", "no:cacheprovider", *extra]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
    }
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=repo, env=env, capture_output=True, text=True, timeout=_HANG, check=False
        )
        returncode: int | None = done.returncode
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:  # subprocess.run kills the child before raising
        partial = exc.stdout or b""
        returncode = None
        output = f"timed out after {_HANG:g} s\n" + (
            partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        )
    return {
        "strategy": strategy,
        "selection": selection,
        "workers": workers,
        "seconds": time.perf_counter() - started,
        "returncode": returncode,
        "summary": _summary_line(output),
        "command": " ".join(command[1:]),
        # A failing run keeps its report's tail (the minimal scenario and its replay command, for P1).
        "output_tail": output[-8000:] if returncode != 0 else "",
    }


def run(
    strategies: Sequence[str] = ("shm", "ipc", "cs"),
    selections: Sequence[str] = SELECTIONS,
    workers: int = 2,
    p1_examples: int = P1_EXAMPLES,
    progress: Callable[[str], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """One row per (strategy, selection), plus a ``total`` row per strategy summing its selections."""
    rows = []
    for strategy in strategies:
        parts = []
        for selection in selections:
            progress(f"kit {strategy} -k {selection!r}")
            extra = ("--conformance-examples", str(p1_examples)) if selection == "P1" else ()
            parts.append(
                {
                    **measure(strategy, selection, workers, extra),
                    "p1_examples": p1_examples if extra else None,
                }
            )
        rows.extend(parts)
        rows.append(
            {
                "strategy": strategy,
                "selection": "total",
                "workers": workers,
                "seconds": sum(p["seconds"] for p in parts),
                "returncode": max((p["returncode"] for p in parts), key=lambda c: -1 if c is None else c),
                "summary": "",
                "command": "",
            }
        )
    return rows


def breakdown(report: dict[str, Any]) -> dict[str, Any]:
    """Where a run's time went, from its JSON report: item seconds per contract, scenario seconds per
    phase (``P1`` apart: its exploration is one item), and the rest of the items' time as ``kit``
    (the checks' own work, the prerequisite settling, the sandbox's zygote)."""
    per_contract: dict[str, float] = {}
    phases = dict.fromkeys((*PHASES, "P1", "kit"), 0.0)
    for result in report.get("results", []):
        cid, seconds = str(result["id"]), float(result.get("duration", 0.0))
        per_contract[cid] = per_contract.get(cid, 0.0) + seconds
        if cid == "P1":
            phases["P1"] += seconds
            continue
        accounted = 0.0
        for phase, value in (result.get("phases") or {}).items():
            if phase in phases:
                phases[phase] += float(value)
                accounted += float(value)
        phases["kit"] += max(0.0, seconds - accounted)
    return {
        "per_contract": {cid: round(s, 2) for cid, s in sorted(per_contract.items(), key=lambda kv: -kv[1])},
        "phases": {phase: round(s, 2) for phase, s in phases.items()},
    }


def profile_rows(
    strategies: Sequence[str] = ("shm", "ipc", "cs"),
    profiles: Sequence[str] = ("quick", "ci"),
    workers: int = 2,
    baseline: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """One row per (strategy, profile, kit): the whole kit's wall time with its breakdown. With
    ``baseline``, that checkout's kit runs right before this one's for the same strategy (its default
    profile only when it predates profiles: the row says ``default``)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-kit-") as scratch:
        for strategy in strategies:
            runs: list[tuple[str, str, Path]] = []
            if baseline is not None:
                runs.append(("baseline", "default", baseline))
            runs += [("this", profile, _REPO) for profile in profiles]
            for kit, profile, repo in runs:
                report = Path(scratch) / f"{strategy}-{kit}-{profile}.json"
                extra = ["--conformance-report", str(report)]
                if profile != "default":
                    extra += ["--conformance-profile", profile]
                progress(f"kit {strategy} ({kit} kit, profile {profile})")
                row = {**measure(strategy, None, workers, extra, repo), "kit": kit, "profile": profile}
                try:
                    row.update(breakdown(json.loads(report.read_text(encoding="utf-8"))))
                except (OSError, ValueError) as error:
                    row["breakdown_error"] = f"no report: {error}"
                rows.append(row)
    return rows


def render_profile_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The wall-time table with the per-phase breakdown, then each run's slowest contracts."""
    columns = ("P1", *PHASES, "kit")
    lines = [
        f"{'strategy':<8} {'kit':<8} {'profile':<8} {'wall':>7} {'exit':>4}  "
        + " ".join(f"{c:>8}" for c in columns)
        + "  (phases: item seconds summed over both workers)"
    ]
    for row in rows:
        phases = row.get("phases", {})
        exit_code = "-" if row["returncode"] is None else str(row["returncode"])
        lines.append(
            f"{row['strategy']:<8} {row['kit']:<8} {row['profile']:<8} {row['seconds']:>6.1f}s "
            f"{exit_code:>4}  " + " ".join(f"{phases.get(c, 0.0):>7.1f}s" for c in columns)
        )
    lines.append("")
    for row in rows:
        top = list(row.get("per_contract", {}).items())[:8]
        if top:
            slowest = ", ".join(f"{cid} {seconds:.1f}s" for cid, seconds in top)
            lines.append(f"{row['strategy']} {row['kit']} {row['profile']}: slowest contracts {slowest}")
        if row.get("breakdown_error") or row["returncode"] not in (0, None):
            lines.append(f"  {row.get('breakdown_error', '')} {row.get('summary', '')}".rstrip())
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kit", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--strategy", action="append", help="repeatable (default: shm, ipc, cs)")
    parser.add_argument(
        "--profile", action="append", help="conformance profile, repeatable (default: quick, ci)"
    )
    parser.add_argument(
        "--baseline", metavar="DIR", type=Path, help="also time the kit of this checkout (before/after)"
    )
    parser.add_argument("--workers", type=int, default=2, help="xdist workers (default 2)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.baseline is not None and not (args.baseline / "conformance" / "__main__.py").exists():
        parser.error(f"--baseline {args.baseline}: no conformance kit in that directory")
    rows = profile_rows(
        args.strategy or ("shm", "ipc", "cs"),
        args.profile or ("quick", "ci"),
        args.workers,
        args.baseline,
        progress=lambda text: print(text, file=sys.stderr, flush=True),
    )
    print(render_profile_rows(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
