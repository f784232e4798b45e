"""``python -m bench.ray_cost``'s accounting, without Ray: roles read from command lines, and CPU charged to
the role of each process counted (this process's descendants here; a cluster's session in real use)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.ray_cost import ROLES, CpuReader, role_of

HANG = 60.0


@pytest.mark.parametrize(
    ("command", "own", "role"),
    [
        (
            "/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet "
            "--python_worker_command=python default_worker.py --system_config=ray_worker_pool",
            False,
            "raylet",
        ),
        ("/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp/x", False, "GCS"),
        (
            "/venv/bin/python3.11 -u /venv/lib/ray/_private/workers/default_worker.py --node-ip-address=x",
            False,
            "Ray workers (booting or idle)",
        ),
        ("ray::IDLE", False, "Ray workers (booting or idle)"),
        ("ray::_RunnerHost.run", False, "runner actors"),
        ("ray::DashboardAgent", False, "other cluster processes"),
        (
            "python -B -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5)",
            False,
            "runner processes",
        ),
        (
            "python -B -c from multiprocessing.resource_tracker import main;main(8)",
            False,
            "resource trackers",
        ),
        ("python -m agentlightning.execution.ray_worker_pool --raylet=127.0.0.1:1", False, "pool keeper"),
        (
            "python -B -c from multiprocessing.forkserver import main; main(9)",
            True,
            "this process's children",
        ),
    ],
)
def test_roles_are_read_from_the_command_line(command: str, own: bool, role: str) -> None:
    assert role_of(command, pid=42, own=own, me=1) == role
    assert role in ROLES


def test_the_cpu_of_a_descendant_is_charged_and_the_readers_own_is_not() -> None:
    burn = "import time\nwhile time.process_time() < 0.3: pass\n"
    with CpuReader(session_id=-1, every=0.01) as reader:  # no cluster: only this process and its children
        subprocess.run([sys.executable, "-c", burn], check=True, timeout=HANG)
    # A process that ends between two readings loses its last increment: a floor, not the whole 0.3 s.
    assert reader.charged["this process's children"] >= 0.15, reader.charged
    assert reader.charged["caller"] < 0.3, reader.charged  # the reader's own thread is not the caller's
