"""The ``ray`` strategy against a real local Ray cluster, one per module (Ray 2.60 puts it on the
machine's own address even when asked for 127.0.0.1).

The cluster is started once by the module fixture (Ray is CPU-heavy); each ``execute()`` then uses the
caller's connection, which it must leave connected. The strategy's own cluster (started and shut down by
``execute()``) and Ctrl+C are tested in a child process (``ray_child.py``) that no signal of the test can
reach pytest from. Tests that need Ray skip, naming the extra, when it is not installed.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from agentlightning.execution.processes import WorkerDied
from agentlightning.store.memory import InMemoryLightningStore
from conformance.ray_session import RAY_MISSING

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

try:
    import ray
except ImportError:
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason=RAY_MISSING)

T = TypeVar("T")


def test_importing_agentlightning_never_imports_ray() -> None:
    code = "import sys, agentlightning, agentlightning.trainer; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_asking_for_ray_without_it_names_the_extra() -> None:
    # A meta-path finder that hides Ray, as if the extra were not installed.
    code = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from agentlightning.trainer.init_utils import build_component\n"
        "from agentlightning.trainer.registry import ExecutionStrategyRegistry\n"
        "from agentlightning.execution.base import ExecutionStrategy\n"
        "try:\n"
        "    build_component('ray', expected_type=ExecutionStrategy, registry=ExecutionStrategyRegistry)\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert "pip install 'agentlightning-execution[ray]'" in out.stdout, out.stdout + out.stderr


@needs_ray
@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"n_runners": 0}, "n_runners"),
        ({"placement": "everywhere"}, "placement"),
        ({"placement": "strict_spread"}, "runner_resources"),
        ({"runner_resources": {"CPU": -1}}, "runner_resources"),
        ({"graceful_timeout": -1}, "graceful_timeout"),
        ({"server_port": 70000}, "server_port"),
        ({"start_timeout": 0}, "start_timeout"),
        ({"address": " "}, "address"),
    ],
)
def test_invalid_options_name_the_parameter(options: dict[str, Any], parameter: str) -> None:
    from agentlightning.execution.ray_actors import RayExecutionStrategy

    with pytest.raises(ValueError, match=parameter):
        RayExecutionStrategy(**options)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local Ray cluster for the module; actors import the test bundles by name."""
    if ray is None:
        pytest.skip(RAY_MISSING)
    path = os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        yield
    finally:
        ray.shutdown()


def _thread_names() -> dict[int, str]:
    """This process's threads by id, with the name the kernel keeps for each."""
    names = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm:
                names[int(tid)] = comm.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
    return names


def strategy(n_runners: int = 2, **options: Any) -> Any:
    from agentlightning.execution.ray_actors import RayExecutionStrategy

    # A grace long enough for an actor to see the stop on a loaded machine; escalation tests set theirs.
    options.setdefault("graceful_timeout", 5.0)
    options.setdefault("terminate_timeout", 2.0)
    return RayExecutionStrategy(n_runners=n_runners, **options)


def live_runner_pids(scratch: Path) -> list[int]:
    from ray_bundles import read_journal

    pids = {
        int(line.split("pid=")[1]) for line in read_journal(str(scratch)) if line.startswith("runner started")
    }
    return sorted(pid for pid in pids if _alive(pid))


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def settled(read: Callable[[], list[T]], bound: float = 10.0) -> list[T]:
    """``read()`` once it is empty, or as it still is after ``bound`` seconds: what is left behind, after
    the settle window the kit's leak checks allow too (a killed actor's process is reaped a moment later)."""
    deadline = time.monotonic() + bound
    left = read()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = read()
    return left


def wait_gone(pids: list[int], bound: float = 10.0) -> list[int]:
    return settled(lambda: [pid for pid in pids if _alive(pid)], bound)


@needs_ray
def test_rollouts_done_exactly_once_and_connection_kept(cluster: None, tmp_path: Path) -> None:
    from ray_bundles import Algorithm, Runner, read_journal

    store = InMemoryLightningStore()
    s = strategy(2)
    s.execute(Algorithm(str(tmp_path), n_rollouts=6), Runner(str(tmp_path)), store)
    assert settled(s.remote_resources) == []  # the kit's probe (R1-R6): nothing left on the cluster
    assert pickle.loads(pickle.dumps(s)).n_runners == 2  # still picklable after a run
    lines = read_journal(str(tmp_path))
    assert "algorithm saw 6 done" in lines
    completed = [line.split()[1] for line in lines if line.startswith("completed ")]
    assert sorted(completed) == sorted(set(completed)) and len(completed) == 6  # S1
    assert {line.split()[2] for line in lines if line.startswith("runner started")} == {"0", "1"}  # L1
    assert sum(line.startswith("runner finally") for line in lines) == 2
    # Runners on the caller's machine reach its store through its Unix socket, never TCP.
    transports = {line for line in lines if line.startswith("transport ")}
    assert transports and transports <= {"transport 0 AF_UNIX", "transport 1 AF_UNIX"}, transports
    assert ray.is_initialized()  # the caller's connection is the caller's: never shut down
    assert wait_gone(live_runner_pids(tmp_path)) == []  # no runner process left behind


@needs_ray
def test_runner_error_arrives_with_type_message_and_remote_traceback(cluster: None, tmp_path: Path) -> None:
    from ray_bundles import Algorithm, Runner, RunnerFailed

    started = time.monotonic()
    with pytest.raises(RunnerFailed, match="runner 1 failed") as info:
        strategy(2).execute(
            Algorithm(str(tmp_path), "wait-runners", 2),
            Runner(str(tmp_path), "raise-1"),
            store := InMemoryLightningStore(),
        )
    del store
    assert time.monotonic() - started < 60
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "runner-1" in notes and "node" in notes  # E2: where it was raised
    frames = [frame.name for frame in __import__("traceback").extract_tb(info.value.__traceback__)]
    assert "__call__" in frames  # the runner's own frame, from the actor
    assert wait_gone(live_runner_pids(tmp_path)) == []


@needs_ray
def test_keyboard_interrupt_in_a_runner(cluster: None, tmp_path: Path) -> None:
    from ray_bundles import Algorithm, Runner

    with pytest.raises(KeyboardInterrupt):
        strategy(2).execute(
            Algorithm(str(tmp_path), "wait-runners", 2),
            Runner(str(tmp_path), "ki-1"),
            InMemoryLightningStore(),
        )
    assert wait_gone(live_runner_pids(tmp_path)) == []


@needs_ray
def test_algorithm_error_stops_the_runners(cluster: None, tmp_path: Path) -> None:
    from ray_bundles import Algorithm, Runner, read_journal

    with pytest.raises(ValueError, match="the algorithm failed"):
        strategy(2).execute(
            Algorithm(str(tmp_path), "raise", 2), Runner(str(tmp_path), "wait"), InMemoryLightningStore()
        )
    lines = read_journal(str(tmp_path))
    assert sum(line.startswith("runner finally") for line in lines) == 2  # they saw the stop (L4)
    assert wait_gone(live_runner_pids(tmp_path)) == []


@needs_ray
def test_runner_ignoring_the_stop_is_cancelled_after_grace(cluster: None, tmp_path: Path) -> None:
    from ray_bundles import Algorithm, Runner, read_journal

    s = strategy(1, graceful_timeout=1.0, terminate_timeout=2.0)
    s.execute(
        Algorithm(str(tmp_path), "return", 1), Runner(str(tmp_path), "ignore"), InMemoryLightningStore()
    )
    lines = read_journal(str(tmp_path))
    assert "runner cancelled 0" in lines and "runner finally 0" in lines  # L6


@needs_ray
def test_runner_stuck_in_blocking_code_is_interrupted(cluster: None, tmp_path: Path) -> None:
    from ray_bundles import Algorithm, Runner, read_journal

    s = strategy(1, graceful_timeout=0.5, terminate_timeout=1.0)
    started = time.monotonic()
    s.execute(Algorithm(str(tmp_path), "return", 1), Runner(str(tmp_path), "block"), InMemoryLightningStore())
    assert time.monotonic() - started < 40  # the runner sleeps 60 s: it was not waited for (L7)
    # Its actor's escalation began with SIGINT, which interrupts blocking code in the runner's process.
    lines = read_journal(str(tmp_path))
    assert "runner raised 0 KeyboardInterrupt" in lines and "runner finally 0" in lines, lines
    assert wait_gone(live_runner_pids(tmp_path)) == []


@needs_ray
def test_actor_killed_mid_run_is_worker_died_and_its_claim_requeued(cluster: None, tmp_path: Path) -> None:
    from ray_bundles import Algorithm, Runner, read_journal

    store = InMemoryLightningStore()
    with pytest.raises(WorkerDied, match=r"runner-1.*node") as info:
        strategy(2).execute(
            Algorithm(str(tmp_path), "kill-runner-1", 2, n_rollouts=1),
            Runner(str(tmp_path), "claim-1"),
            store,
        )
    assert info.value.name == "runner-1"  # F1: the worker, its exit status and its node are named
    assert info.value.exitcode == -signal.SIGKILL and "SIGKILL" in str(info.value), info.value
    rollout_id = next(line.split()[1] for line in read_journal(str(tmp_path)) if line.startswith("claimed "))
    import asyncio

    rollout = asyncio.run(store.get_rollout_by_id(rollout_id))
    attempts = asyncio.run(store.query_attempts(rollout_id))
    assert rollout is not None
    # Nothing lost: the dead runner's attempt was given up and the rollout requeued by its policy (T3).
    assert attempts[0].status == "unresponsive"
    assert rollout.status in ("queuing", "requeuing", "running", "succeeded"), rollout.status
    assert wait_gone(live_runner_pids(tmp_path)) == []


@needs_ray
def test_a_dead_runner_process_is_worker_died_naming_status_and_node_across_processes() -> None:
    from agentlightning.execution.ray_driver import RunnerProcessDied
    from agentlightning.remote_errors import dump_exception, load_exception

    error = load_exception(dump_exception(RunnerProcessDied("runner-1", 4242, -9, "0123abcd at 127.0.0.1")))
    assert type(error) is RunnerProcessDied and isinstance(error, WorkerDied)
    assert (error.name, error.pid, error.exitcode, error.node) == (
        "runner-1",
        4242,
        -9,
        "0123abcd at 127.0.0.1",
    )
    assert "'runner-1'" in str(error) and "SIGKILL" in str(error) and "0123abcd at 127.0.0.1" in str(error)


@needs_ray
def test_owned_cluster_and_ctrl_c(tmp_path: Path) -> None:
    """A cluster execute() started is stopped by it; Ctrl+C raises KeyboardInterrupt, no actor left."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("RAY_ADDRESS", None)
    child = subprocess.Popen(
        [sys.executable, str(HERE / "ray_child.py"), str(tmp_path)],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        from ray_bundles import read_journal

        deadline = time.monotonic() + 240
        while "algorithm all started" not in read_journal(str(tmp_path)):
            assert child.poll() is None, child.communicate()[0]
            assert time.monotonic() < deadline, "the runners never started"
            time.sleep(0.05)
        raylets = [p.pid for p in psutil.Process(child.pid).children(recursive=True) if "raylet" in p.name()]
        assert raylets, "execute() should have started a local cluster of its own"
        os.kill(child.pid, signal.SIGINT)
        out, _ = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert "raised KeyboardInterrupt" in out, out  # K3
    assert wait_gone(raylets) == [], "the cluster execute() started must be stopped"
    assert wait_gone(live_runner_pids(tmp_path)) == []


@needs_ray
def test_the_kit_probe_names_live_actors_and_none_after_the_run(cluster: None, tmp_path: Path) -> None:
    """The kit's probe reads the machine's process table: the actors while they run, none once gone."""
    from ray_bundles import until_journal

    s = strategy(2)
    seen: list[str] = []

    async def probing_algorithm(store: Any, event: Any) -> None:
        await until_journal(str(tmp_path), "runner started", 2)
        seen.extend(s.remote_resources())  # mid-run: both actors are alive

    from ray_bundles import Runner

    s.execute(probing_algorithm, Runner(str(tmp_path), "wait"), InMemoryLightningStore())
    actors = sorted(entry.split("'")[1] for entry in seen if entry.startswith("Ray actor"))
    processes = sorted(entry.split("'")[1] for entry in seen if entry.startswith("runner process"))
    assert actors == processes == ["runner-0", "runner-1"], seen  # each actor and its runner's process
    assert all("still running" in entry and "node" in entry for entry in seen)
    assert wait_gone(live_runner_pids(tmp_path)) == []
    # Ray reports an actor dead a moment before its process exits: the kit polls its probe in a settle
    # window, and so does this test (a process still there after it is a leak).
    assert settled(s.remote_resources) == []


@needs_ray
def test_execute_leaves_no_ray_thread_or_connection_in_the_caller(cluster: None, tmp_path: Path) -> None:
    """Ray's driver runs in a process of its own: the caller gains no thread and no socket (R1, R3)."""
    from ray_bundles import Algorithm, Runner

    from agentlightning.execution.ray_actors import _await_timer_threads

    _await_timer_threads()  # the fixture's own connection completes gRPC's timer pool first
    me = psutil.Process()
    threads_before = _thread_names()
    sockets_before = {(c.laddr, c.raddr) for c in me.net_connections()}
    strategy(2).execute(
        Algorithm(str(tmp_path), "return", 2), Runner(str(tmp_path), "wait"), InMemoryLightningStore()
    )
    # A joined thread leaves ``threading`` a moment before its OS thread is gone: wait for that.
    started = settled(lambda: [(tid, n) for tid, n in _thread_names().items() if tid not in threads_before])
    assert started == [], threads_before
    assert {(c.laddr, c.raddr) for c in me.net_connections()} - sockets_before == set()
    assert wait_gone(live_runner_pids(tmp_path)) == []
