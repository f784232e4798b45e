"""calc_x on three namespace hosts, one runner host lost mid-run: training completes, every rollout
accounted for, what the lost host held retried on the other (D2; ``examples/calc_x/three_hosts.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.hosts import probe_namespaces

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "calc_x" / "three_hosts.py"


@pytest.mark.slow  # three hosts start cs sides; the loss is detected after cs's host_loss_timeout
@pytest.mark.parametrize("silent", [False, True], ids=["killed", "cut-then-killed"])
def test_a_runner_host_lost_mid_run_costs_no_rollout(silent: bool) -> None:
    availability = probe_namespaces()
    if not availability.available:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to make network namespaces: {availability.reason}")
        pytest.skip(availability.reason)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    # Host 2's runners each hold one problem until the host dies (their latency outlasts the run): a
    # loss then always finds work in flight, however the claims and the kill interleave.
    argv = [
        sys.executable, str(SCRIPT), "--tasks", "200", "--host-2-think-seconds", "3600",
        *(["--silent"] if silent else []),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "host 2 (" in proc.stdout and "killed at" in proc.stdout
    killed_at = int(proc.stdout.split("killed at ")[1].split("/")[0])
    assert 0 < killed_at < 200, proc.stdout  # the loss came mid-run
    assert "completed 200/200 rollouts" in proc.stdout
    assert "rollouts: 200 enqueued, 200 succeeded" in proc.stdout
    retried = int(proc.stdout.split("succeeded, ")[1].split(" retried")[0])
    assert retried >= 1, proc.stdout  # what host 2 held was given up and done again on host 1
