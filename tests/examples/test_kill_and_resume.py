"""``examples/kill_and_resume.py``: a run SIGKILLed mid-way and started again completes every rollout once.

The demo itself is the test: it kills the first run once the store file shows a third of the rollouts
succeeded (synchronised on the file's contents), resumes on the same file, and checks that every task is
in the store once, succeeded by exactly one attempt, with the dead run's attempts retried.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kill_and_resume.py"


def test_a_killed_run_resumes_and_completes_every_rollout_exactly_once(tmp_path: Path) -> None:
    store = tmp_path / "run.db"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "demo", "--tasks", "60", "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=300,  # a hang bound: the demo itself bounds each run
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("kill -9 ") for line in lines), done.stdout
    resumed = [line for line in lines if "rollouts found in the store" in line]
    assert resumed[0].split(": ", 1)[1].startswith("0 rollouts found"), done.stdout
    assert not resumed[1].split(": ", 1)[1].startswith("0 rollouts found"), done.stdout  # it resumed
    assert lines[-1] == "every one of the 60 rollouts was completed exactly once", done.stdout
