"""The local Ray cluster held for kit runs (``conformance.ray_session``): joined by a driver, gone after."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import psutil
import pytest

from conformance.ray_session import RAY_MISSING, held_cluster, main, ray_missing

needs_ray = pytest.mark.skipif(bool(ray_missing()), reason=RAY_MISSING)


def test_without_a_command_it_says_how_to_use_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: python -m conformance.ray_session COMMAND" in capsys.readouterr().err


@needs_ray
@pytest.mark.timeout(300)
def test_a_driver_joins_the_held_cluster_and_nothing_of_it_is_left_after() -> None:
    code = "import ray; ray.init(); print(ray.get_runtime_context().gcs_address); ray.shutdown()"
    before = {p.pid for p in psutil.process_iter()}
    with held_cluster() as env:
        # The cluster is one process session of its own (its raylet's); other processes this machine
        # started meanwhile are not the cluster's.
        sessions = set()
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if process.pid not in before and "raylet" in process.name():
                    sessions.add(os.getsid(process.pid))
        assert len(sessions) == 1, f"expected one raylet session, found {sessions}"
        family = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getsid(process.pid) in sessions:
                    family.append(process)
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        # Same cluster: its port (Ray 2.60 names the node by the machine's address, not 127.0.0.1).
        joined = out.stdout.strip().splitlines()[-1]
        assert joined.rpartition(":")[2] == env["RAY_ADDRESS"].rpartition(":")[2], (joined, env)
    _, alive = psutil.wait_procs(family, timeout=30)
    assert alive == [], f"left running: {[p.pid for p in alive]}"
