"""The local Ray cluster held for kit runs (``conformance.ray_session``): joined by a driver, gone after."""

from __future__ import annotations

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
    with held_cluster() as env:
        holder = [
            p for p in psutil.Process().children() if "conformance.ray_session" in " ".join(p.cmdline())
        ]
        assert len(holder) == 1, holder
        family = [holder[0], *holder[0].children(recursive=True)]
        assert any("raylet" in p.name() for p in family), [p.name() for p in family]
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == env["RAY_ADDRESS"]
    _, alive = psutil.wait_procs(family, timeout=30)
    assert alive == [], f"left running: {[p.pid for p in alive]}"
