"""The calc_x example runs end to end under every reference strategy, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "calc_x" / "train_calc_agent.py"


@pytest.mark.parametrize(
    "strategy", ["shm", "ipc", "cs", "strategies.single_loop.SingleLoopExecutionStrategy"]
)
def test_example_runs_and_summarises(strategy: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--strategy", strategy, "--tasks", "200", "--n-runners", "2",
         "--error-rate", "0.25", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "completed 200/200 rollouts" in proc.stdout
    accuracy = float(proc.stdout.split("accuracy ")[1].split()[0])
    assert 0.6 < accuracy < 0.9, proc.stdout  # about 1 - error_rate, deterministic for the seed


def test_bad_arguments_are_named() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--error-rate", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "--error-rate must be within [0, 1], got 2.0" in proc.stderr
