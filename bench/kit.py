"""Kit wall time: ``python -m conformance <strategy> -n 2`` timed as a subprocess, per strategy.

The property-based contract P1 is timed apart from the rest (``-k P1`` and ``-k "not P1"``): by default
it explores for a fixed time budget (``CI_BUDGET``, 45 s), which would only time the budget, so here it
runs a fixed number of scenarios (``--conformance-examples``) instead. Each figure is one run: the time
a user's CI job pays on this machine, with whatever else the machine runs at that moment.

Usage: ``python -m bench.kit [--quick] [--strategy shm ...]``; ``run(...)`` returns the rows.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["P1_EXAMPLES", "SELECTIONS", "main", "measure", "run"]

_REPO = Path(__file__).resolve().parent.parent
SELECTIONS = ("not P1", "P1")
P1_EXAMPLES = 10
_HANG = 600.0


def _summary_line(output: str) -> str:
    """pytest's closing line (``== 40 passed, 2 skipped in 12.3s ==``), without the rulers."""
    for line in reversed(output.strip().splitlines()):
        if " in " in line and any(word in line for word in ("passed", "failed", "error", "skipped")):
            return line.strip("= ").strip()
    return output.strip().splitlines()[-1] if output.strip() else ""


def measure(strategy: str, selection: str, workers: int = 2, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Run the kit once for ``strategy`` restricted to ``-k selection``; wall time and pytest's verdict.

    ``extra`` goes to pytest as is (``--conformance-examples N`` fixes P1's work).
    """
    command = [
        sys.executable,
        "-m",
        "conformance",
        strategy,
        "-n",
        str(workers),
        "-k",
        selection,
        "-q",
        "-p",
        "no:cacheprovider",
        *extra,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])),
    }
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=_REPO, env=env, capture_output=True, text=True, timeout=_HANG, check=False
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kit", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--strategy", action="append", help="repeatable (default: shm, ipc, cs)")
    args = parser.parse_args(argv)
    for row in run(args.strategy or ("shm", "ipc", "cs")):
        print(f"{row['strategy']:<5} {row['selection']:<8} {row['seconds']:>7.1f} s  {row['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
