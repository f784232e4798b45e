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
        family = [p for p in psutil.process_iter() if p.pid not in before and p.pid != os.getpid()]
        names = []
        for process in family:
            with contextlib.suppress(psutil.Error):
                names.append(process.name())
        assert any("raylet" in name for name in names), names
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
