"""The kit's session cluster for ``ray`` (``ray_cluster.kit_session``, a ``conformance.session_services``
service): ``pytest --strategy=ray`` starts one local cluster for the whole session and stops every one of its
processes at the end; with ``RAY_ADDRESS`` given it starts nothing and never stops that cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from conformance.ray_session import RAY_MISSING

REPO = Path(__file__).resolve().parents[2]

try:
    import ray
except ImportError:
    ray = None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(ray is None, reason=RAY_MISSING),
]

# Records, as the session ends (before the kit stops its service), every process the pytest process started.
_RECORDER = """
import json, os, psutil

def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        return
    seen = [
        {"pid": p.pid, "name": p.name(), "sid": os.getsid(p.pid), "created": p.create_time()}
        for p in psutil.Process().children(recursive=True)
    ]
    with open(os.environ["RECORD_PATH"], "w") as out:
        json.dump({"address": os.environ.get("RAY_ADDRESS"), "processes": seen}, out)
"""


def _alive(record: dict[str, object]) -> bool:
    try:
        process = psutil.Process(int(record["pid"]))  # type: ignore[call-overload]
        return process.create_time() == record["created"] and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class _Run:
    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.env = env

    def kit(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``pytest --strategy=ray`` on one scenario, in the project directory, bounded."""
        command = [
            sys.executable,
            "-m",
            "pytest",
            "--strategy=ray",
            "--conformance-only",
            "-p",
            "no:randomly",
        ]
        command += ["-p", "no:cacheprovider", "-k", "L1 and one-runner", *args]
        return subprocess.run(
            command,
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def record(self) -> dict[str, Any]:
        return dict(json.loads((self.directory / "record.json").read_text(encoding="utf-8")))


@pytest.fixture
def project(tmp_path: Path) -> _Run:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env["RECORD_PATH"] = str(tmp_path / "record.json")
    (tmp_path / "conftest.py").write_text(_RECORDER, encoding="utf-8")
    return _Run(tmp_path, env)


def test_the_kit_starts_one_cluster_for_the_session_and_leaves_no_ray_process(project: _Run) -> None:
    result = project.kit("-n", "2")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert re.search(
        r"conformance: session service agentlightning\.execution\.ray_cluster:kit_session "
        r"ready in [0-9.]+ s; exports RAY_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN",
        result.stdout,
    ), result.stdout[:3000]
    record = project.record()
    assert record["address"].startswith("127.0.0.1:")
    names = {p["name"] for p in record["processes"]}
    assert {"gcs_server", "raylet"} <= names, names  # one head, started by the controller
    assert sum(p["name"] == "gcs_server" for p in record["processes"]) == 1
    left = [p for p in record["processes"] if _alive(p)]
    assert left == [], left


def test_with_ray_address_the_kit_joins_that_cluster_and_never_stops_it(project: _Run) -> None:
    from agentlightning.execution.ray_cluster import LocalRayCluster

    # A cluster of the user's: no prestarted workers, whose pids would come and go as actors take them.
    with LocalRayCluster(num_cpus=2, prestarted_workers=0) as cluster:
        project.env.update(cluster.environment())
        before = {p.pid for p in cluster.processes()}
        result = project.kit()
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
        assert "exports nothing (an existing one is used)" in result.stdout, result.stdout[:3000]
        record = project.record()
        assert record["address"] == cluster.address
        assert not [p for p in record["processes"] if p["name"] in ("gcs_server", "raylet")]
        assert before <= {p.pid for p in cluster.processes()}  # nothing of it was stopped
        names = {p.name() for p in cluster.processes()}
        assert {"gcs_server", "raylet"} <= names, names  # still running after the kit's session
    assert cluster.processes() == []


def test_kit_session_with_ray_address_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentlightning.execution import ray_cluster

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cluster was started although RAY_ADDRESS names one")

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    monkeypatch.setattr(ray_cluster, "LocalRayCluster", refuse)
    with ray_cluster.kit_session() as exported:
        assert exported == {}


def test_invalid_options_name_the_value() -> None:
    from agentlightning.execution.ray_cluster import LocalRayCluster

    with pytest.raises(ValueError, match=r"num_cpus.*0"):
        LocalRayCluster(num_cpus=0)
    with pytest.raises(ValueError, match=r"start_timeout.*-1"):
        LocalRayCluster(start_timeout=-1)


_OWNER = """
import json, sys
from agentlightning.execution.ray_cluster import LocalRayCluster

cluster = LocalRayCluster(num_cpus=1, prestarted_workers=0)
cluster.start()
print(json.dumps({"session": cluster.session_id, "directory": cluster._directory}), flush=True)
sys.stdin.read()  # until the test kills this process: stop() never comes
"""


def test_R2_a_cluster_whose_owner_is_killed_is_stopped_by_its_guard(tmp_path: Path) -> None:
    """A ``LocalRayCluster`` whose owner is SIGKILLed (no ``stop()``) does not outlive it: its guard ends
    every process of the cluster's session and removes its temporary directory (R2, R4)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        started = json.loads(owner.stdout.readline() or "{}")  # bounded by the cluster's start_timeout
        assert started, f"the owner failed to start its cluster (status {owner.wait(timeout=60)})"
        session = int(started["session"])
        assert _session(session), "the cluster should be running"
        owner.kill()
        owner.wait(timeout=60)
        directory = Path(started["directory"])
        deadline = time.monotonic() + 60  # the guard's SIGTERM, then SIGKILL 10 s later at most
        while (_session(session) or directory.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _session(session) == [], "the cluster outlived its killed owner"
        assert not directory.exists()  # removed by the guard once the cluster was gone
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(timeout=60)


def _session(session: int) -> list[str]:
    """Names of the live processes of process session ``session``."""
    found = []
    for process in psutil.process_iter(["name"]):
        try:
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                found.append(str(process.info["name"]))
        except (psutil.Error, OSError):
            continue
    return found
