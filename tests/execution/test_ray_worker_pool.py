"""Prestarted Ray workers (``ray_worker_pool``) kept by a ``LocalRayCluster``: an actor takes one, the pool
is topped up, and nothing of it is left once the cluster stops; a cluster without a pool gets none."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from conformance.ray_session import RAY_MISSING, ray_missing

REPO = Path(__file__).resolve().parents[2]
HANG = 180.0  # a hang bound for a loaded 2-core machine, never a speed target

needs_ray = pytest.mark.skipif(bool(ray_missing()), reason=RAY_MISSING)

# A driver of its own job that places one actor and prints the pid of the worker process it runs in.
_ACTOR_PID = """
import os, ray
ray.init()

@ray.remote(num_cpus=0)
class Where:
    def pid(self):
        return os.getpid()

print(ray.get(Where.remote().pid.remote(), timeout=120))
"""


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {HANG:g} s")
        time.sleep(0.1)


def _idle(pids: list[int]) -> bool:
    """Whether every one of ``pids`` is a Ray worker that finished starting and waits for work."""
    try:
        return bool(pids) and all(psutil.Process(pid).cmdline()[0].startswith("ray::IDLE") for pid in pids)
    except (psutil.Error, IndexError):
        return False


def _actor_pid(env: dict[str, str]) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _ACTOR_PID],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.strip().splitlines()[-1])


def _cluster_env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


@needs_ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_actor_takes_a_prestarted_worker_the_pool_is_topped_up_and_gone_after_stop() -> None:
    from agentlightning.execution.ray_cluster import LocalRayCluster

    with LocalRayCluster(num_cpus=2, prestarted_workers=2, env=_cluster_env()) as cluster:
        assert cluster.pooled
        keeper = psutil.Process(cluster._keeper.pid)  # type: ignore[union-attr]
        _until(lambda: len(cluster.pool_pids()) == 2 and _idle(cluster.pool_pids()), "two idle pool workers")
        pool = cluster.pool_pids()
        pid = _actor_pid(cluster.environment())
        assert pid in pool, f"the actor ran in pid {pid}, not in one of the pool's workers {pool}"
        # Taken by the actor, whose job ended with its driver: the pool is asked for a new worker.
        _until(lambda: len(set(cluster.pool_pids()) - set(pool)) >= 1, "the pool to be topped up")
        assert cluster.await_full_pool(HANG), "the pool full again, its new worker booted"
        assert pid not in cluster.pool_pids()
        workers = [psutil.Process(p) for p in cluster.pool_pids()]
    assert not cluster.pooled
    _, alive = psutil.wait_procs([keeper, *workers], timeout=30)
    assert alive == [], f"left running after the cluster stopped: {[p.pid for p in alive]}"
    assert cluster.pool_pids() == []


@needs_ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_cluster_without_a_pool_gets_no_prestarted_worker() -> None:
    from agentlightning.execution.ray_cluster import LocalRayCluster

    before = _keepers()
    with LocalRayCluster(num_cpus=2, prestarted_workers=0, env=_cluster_env()) as cluster:
        assert not cluster.pooled
        assert cluster.await_full_pool(0.0)  # nothing to wait for
        assert not Path(cluster._directory or "", "pool.log").exists()  # no keeper was ever started
        _actor_pid(cluster.environment())  # a run on it starts no keeper either
        assert _keepers() - before == set()


def _keepers() -> set[int]:
    """Pool keepers running on this machine now."""
    found = set()
    for process in psutil.process_iter():
        try:
            if "agentlightning.execution.ray_worker_pool" in process.cmdline():
                found.add(process.pid)
        except psutil.Error:
            continue
    return found


@needs_ray
@pytest.mark.timeout(300)
def test_the_keeper_says_why_there_is_no_pool_within_its_deadline() -> None:
    # No raylet listens on port 1: the first call misses its deadline, the keeper reports and exits.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentlightning.execution.ray_worker_pool",
            "--raylet=127.0.0.1:1",
            f"--raylet-pid={os.getpid()}",
            "--size=1",
            "--start-timeout=1",
        ],
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("unavailable: "), result.stdout


def test_a_cluster_whose_keeper_cannot_pool_runs_without_one_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from agentlightning.execution.ray_cluster import LocalRayCluster

    cluster = LocalRayCluster(prestarted_workers=1)
    cluster._keeper = subprocess.Popen(
        [sys.executable, "-c", "print('unavailable: no PrestartWorkers here')"], stdout=subprocess.PIPE
    )
    with caplog.at_level(logging.WARNING, logger="agentlightning.execution.ray_cluster"):
        cluster._await_keeper()
    assert not cluster.pooled
    assert "runs without prestarted workers: unavailable: no PrestartWorkers here" in caplog.text


def test_invalid_pool_options_name_the_value() -> None:
    from agentlightning.execution.ray_cluster import LocalRayCluster
    from agentlightning.execution.ray_worker_pool import PoolKeeper

    with pytest.raises(ValueError, match=r"prestarted_workers.*-1"):
        LocalRayCluster(prestarted_workers=-1)
    with pytest.raises(ValueError, match=r"prestarted_workers.*65"):
        LocalRayCluster(prestarted_workers=65)
    with pytest.raises(ValueError, match=r"keep_alive.*0"):
        LocalRayCluster(keep_alive=0)
    with pytest.raises(ValueError, match=r"size.*0"):
        PoolKeeper("127.0.0.1:1", os.getpid(), 0)
