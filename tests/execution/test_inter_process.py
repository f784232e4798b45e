"""The ``ipc`` strategy, contract by contract (L, K, E, R, S, F, G), with real runner processes.

Bundles come from ``ipc_bundles`` and journal what they see; SIGINT and parent-death scenarios run in
``ipc_child.py`` (a session of its own) so no signal can reach pytest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from claims_bundles import PROCESS_DEATHS, check_given_up, check_kept_alive
from held_start import HeldStart, opened_when_the_stop_reaches
from ipc_bundles import HANG, Algorithm, Runner, read_journal
from python_script import run_script

from agentlightning.execution.base import CAPABILITY_NAMES
from agentlightning.execution.inter_process import InterProcessExecutionStrategy
from agentlightning.execution.processes import START_METHODS, WorkerDied
from agentlightning.store.ipc import IpcStoreServer
from agentlightning.store.memory import InMemoryLightningStore

AVAILABLE = [m for m in START_METHODS if m in multiprocessing.get_all_start_methods()]
CHILD_SCRIPT = Path(__file__).with_name("ipc_child.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def scratch(tmp_path: Path) -> str:
    return str(tmp_path)


def ipc(n_runners: int = 1, start_method: str = "fork", **options: Any) -> InterProcessExecutionStrategy:
    # A grace long enough for a runner process to start on a loaded machine; escalation tests set theirs.
    options.setdefault("graceful_timeout", 3.0)
    options.setdefault("terminate_timeout", 1.0)
    return InterProcessExecutionStrategy(n_runners=n_runners, start_method=start_method, **options)


def _helpers_excluded_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "forkserver" in cmdline or "resource_tracker" in cmdline:
            continue
        found.append(child)
    return found


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """R2 after every test: no child process the test started is alive or a zombie.

    Children that existed before the test (another module's helpers on the same xdist worker, such as
    the conformance kit's sandbox zygote) are not this test's to judge.
    """
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    leftovers = [
        p for p in _helpers_excluded_children() if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE
    ]
    zombies = [
        p
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before and p.status() == psutil.STATUS_ZOMBIE
    ]
    assert not leftovers and not zombies, f"R2: {leftovers} {zombies}"


# -- G: configuration --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"n_runners": 0}, "n_runners"),
        ({"n_runners": True}, "n_runners"),
        ({"n_runners": "2"}, "n_runners"),
        ({"graceful_timeout": -1}, "graceful_timeout"),
        ({"graceful_timeout": float("nan")}, "graceful_timeout"),
        ({"terminate_timeout": 0}, "terminate_timeout"),
        ({"terminate_timeout": "1"}, "terminate_timeout"),
        ({"start_method": "threads"}, "start_method"),
    ],
)
def test_G2_invalid_parameters_name_themselves(options: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ValueError, match=parameter):
        InterProcessExecutionStrategy(**options)


def test_G3_strategy_and_store_client_pickle(scratch: str) -> None:
    strategy = ipc(n_runners=3, start_method="spawn", graceful_timeout=2.0)
    copy = pickle.loads(pickle.dumps(strategy))
    assert (copy.n_runners, copy.start_method, copy.graceful_timeout) == (3, "spawn", 2.0)
    pickle.loads(pickle.dumps(Runner(scratch)))


def test_capabilities_are_declared_and_valid() -> None:
    strategy = ipc(graceful_timeout=1.5, terminate_timeout=0.75)
    caps = strategy.capabilities
    assert set(caps) <= CAPABILITY_NAMES
    assert caps["uses_processes"] is True
    assert caps["shares_caller_store"] is True
    assert caps["can_cancel_blocking_code"] is True
    assert caps["supports_unmanaged_store"] is False
    assert set(caps["supports_start_methods"]) == set(AVAILABLE)
    assert (caps["grace_seconds"], caps["terminate_seconds"]) == (1.5, 0.75)
    assert InterProcessExecutionStrategy.alias == "ipc"
    assert InterProcessExecutionStrategy().start_method is None  # decided per runner as it starts


_DEFAULT_METHOD_SCRIPT = """
import json, os, sys
from agentlightning.execution.inter_process import InterProcessExecutionStrategy
from agentlightning.store.memory import InMemoryLightningStore

class Algorithm:
    async def __call__(self, store, event):
        pass

class Runner:
    def __init__(self, path):
        self.path = path

    async def __call__(self, store, worker_id, event):
        with open(self.path, "w") as out:
            out.write(str(os.getppid()))

if __name__ == "__main__":
    InterProcessExecutionStrategy().execute(Algorithm(), Runner(sys.argv[1]), InMemoryLightningStore())
    with open(sys.argv[1]) as seen:
        print(json.dumps({"me": os.getpid(), "runner_parent": int(seen.read())}))
"""


@pytest.mark.skipif("fork" not in AVAILABLE or not sys.platform.startswith("linux"), reason="forks on Linux")
def test_default_runners_are_forked_from_a_single_threaded_caller(tmp_path: Path) -> None:
    """The runners start before the server's threads, so the default start method forks them (see
    ``processes``: forked runners cost less CPU per rollout)."""
    seen = run_script(tmp_path, _DEFAULT_METHOD_SCRIPT, str(tmp_path / "runner-parent"))
    assert seen["runner_parent"] == seen["me"], f"the runner was not forked from the caller: {seen}"


# -- L: lifecycle ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_L1_L2_F3_bundles_called_and_normal_completion(scratch: str, start_method: str) -> None:
    ipc(3, start_method).execute(Algorithm(scratch, "return", 3), Runner(scratch), InMemoryLightningStore())
    lines = read_journal(scratch)
    assert sum(line.startswith("algorithm started") for line in lines) == 1
    for worker_id in range(3):
        assert lines.count(f"runner {worker_id} started") == 1
        assert f"runner {worker_id} saw-stop True" in lines  # L2: the algorithm's return set the event
    pids = {Path(scratch, f"runner-{i}.pid").read_text() for i in range(3)}
    assert len(pids) == 3 and str(os.getpid()) not in pids  # each runner in a process of its own


def test_L1_algorithm_runs_even_when_a_runner_stopped_everything_first(scratch: str) -> None:
    # Under fork a runner can set the event before the algorithm is even started; it still runs once.
    for _ in range(3):
        directory = tempfile.mkdtemp(dir=scratch)
        ipc(2).execute(
            Algorithm(directory, "wait", 0), Runner(directory, default="set"), InMemoryLightningStore()
        )
        assert read_journal(directory).count("algorithm saw-stop True") == 1


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_L1_runners_still_starting_when_the_algorithm_returned_are_called(
    scratch: str, start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The algorithm returns at once; the runner processes stay in their start-up (unpickling their bundle)
    # until the stop has dealt with them: past the grace, each is still called once and sees the stop.
    gate = multiprocessing.get_context(start_method).Event()
    with opened_when_the_stop_reaches(gate, monkeypatch):
        ipc(3, start_method, graceful_timeout=1.0).execute(
            Algorithm(scratch, "return", 0), HeldStart(gate, Runner(scratch)), InMemoryLightningStore()
        )
    lines = read_journal(scratch)
    for worker_id in range(3):
        assert lines.count(f"runner {worker_id} started") == 1
        assert f"runner {worker_id} saw-stop True" in lines


def test_L3_runner_return_is_local(scratch: str) -> None:
    runner = Runner(scratch, kinds={0: "return"}, default="wait")
    ipc(2).execute(Algorithm(scratch, "local-return", 2), runner, InMemoryLightningStore())
    lines = read_journal(scratch)
    assert "after runner 0 returned event=False" in lines
    assert "runner 1 saw-stop True" in lines


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_L4_F3_event_set_in_a_runner_reaches_everyone(scratch: str, start_method: str) -> None:
    runner = Runner(scratch, kinds={1: "set"}, default="wait")
    ipc(3, start_method).execute(Algorithm(scratch, "wait", 3), runner, InMemoryLightningStore())
    lines = read_journal(scratch)
    assert "algorithm saw-stop True" in lines
    assert "runner 0 saw-stop True" in lines and "runner 2 saw-stop True" in lines


def test_L6_awaiting_runner_cancelled_after_grace(scratch: str) -> None:
    runner = Runner(scratch, kinds={0: "ignore"})
    began = time.monotonic()
    ipc(1, graceful_timeout=0.3).execute(Algorithm(scratch, "return"), runner, InMemoryLightningStore())
    assert time.monotonic() - began < 0.3 + 2.0 + HANG  # hang bound only; L6's bound lives in the kit
    lines = read_journal(scratch)
    assert "runner 0 finally" in lines
    assert "runner 0 cancelled" in lines or "runner 0 interrupted" in lines


def test_L7_blocking_runner_is_stopped(scratch: str) -> None:
    runner = Runner(scratch, kinds={0: "block"})
    ipc(1, graceful_timeout=0.2, terminate_timeout=0.5).execute(
        Algorithm(scratch, "return"), runner, InMemoryLightningStore()
    )
    lines = read_journal(scratch)
    assert "runner 0 interrupted" in lines and "runner 0 finally" in lines


# -- E: exceptions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_E1_F3_algorithm_error_stops_runners(scratch: str, start_method: str) -> None:
    with pytest.raises(ValueError, match="algorithm failed on purpose"):
        ipc(2, start_method).execute(Algorithm(scratch, "raise"), Runner(scratch), InMemoryLightningStore())
    lines = read_journal(scratch)
    assert all(f"runner {i} saw-stop True" in lines for i in range(2) if f"runner {i} started" in lines)


def test_E2_runner_error_with_remote_traceback(scratch: str) -> None:
    runner = Runner(scratch, kinds={1: "raise"}, default="wait")
    with pytest.raises(ValueError, match="runner 1 failed on purpose") as info:
        ipc(2).execute(Algorithm(scratch, "wait", n_runners=0), runner, InMemoryLightningStore())
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "_body" in frames  # the runner's own frame, from the worker process
    if sys.version_info >= (3, 11):
        assert any("runner-1" in note for note in info.value.__notes__)
    assert "algorithm saw-stop True" in read_journal(scratch)


def test_E3_first_error_wins(scratch: str) -> None:
    # The algorithm fails first (recorded before it sets the event); runner 0 fails once it sees the stop.
    runner = Runner(scratch, kinds={0: "raise-after-stop"})
    with pytest.raises(ValueError, match="algorithm failed on purpose") as info:
        ipc(1).execute(Algorithm(scratch, "raise"), runner, InMemoryLightningStore())
    if sys.version_info >= (3, 11):
        assert any("runner 0 failed late" in note for note in info.value.__notes__)


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_E3_first_runner_failure_wins_whatever_reaches_us_first(scratch: str, start_method: str) -> None:
    # Runner 1 fails right after runner 0 did; its report may well arrive first. The failure that
    # happened first is raised (ordered by the workers' own timestamps), the other is attached.
    runner = Runner(scratch, kinds={0: "raise", 1: "raise-after-runner-0"})
    with pytest.raises(ValueError, match="runner 0 failed on purpose") as info:
        ipc(2, start_method).execute(
            Algorithm(scratch, "wait", n_runners=0), runner, InMemoryLightningStore()
        )
    if sys.version_info >= (3, 11):
        assert any("runner 1 failed second" in note for note in info.value.__notes__)


def test_E4_cleanup_error_does_not_mask(scratch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    original = IpcStoreServer.close

    def failing_close(self: IpcStoreServer, timeout: float = 5.0) -> None:
        original(self, timeout)
        raise OSError("server stop failed (injected)")

    monkeypatch.setattr(IpcStoreServer, "close", failing_close)
    with pytest.raises(ValueError, match="algorithm failed on purpose"):
        ipc(1).execute(Algorithm(scratch, "raise"), Runner(scratch), InMemoryLightningStore())
    with pytest.raises(OSError, match="injected"):  # alone, the cleanup error is raised
        ipc(1).execute(Algorithm(scratch, "return"), Runner(scratch), InMemoryLightningStore())


def test_E5_startup_error_no_hang(scratch: str) -> None:
    with pytest.raises(ValueError, match="runner 0 failed"):
        ipc(2).execute(
            Algorithm(scratch, "wait", n_runners=0),
            Runner(scratch, kinds={0: "raise"}),
            InMemoryLightningStore(),
        )


@pytest.mark.parametrize("side", ["algorithm", "runner"])
def test_E6_system_exit_not_swallowed(scratch: str, side: str) -> None:
    algorithm = Algorithm(scratch, "sysexit" if side == "algorithm" else "wait")
    runner = Runner(scratch, default="sysexit" if side == "runner" else "wait")
    with pytest.raises(SystemExit) as info:
        ipc(1).execute(algorithm, runner, InMemoryLightningStore())
    assert info.value.code == (4 if side == "algorithm" else 5)


# -- K: KeyboardInterrupt ----------------------------------------------------------------------------------


def test_K1_keyboard_interrupt_in_algorithm(scratch: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        ipc(2).execute(Algorithm(scratch, "ki"), Runner(scratch), InMemoryLightningStore())


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_K2_keyboard_interrupt_in_runner(scratch: str, start_method: str) -> None:
    runner = Runner(scratch, kinds={1: "ki"})
    with pytest.raises(KeyboardInterrupt):
        ipc(2, start_method).execute(
            Algorithm(scratch, "wait", n_runners=0), runner, InMemoryLightningStore()
        )
    assert "algorithm saw-stop True" in read_journal(scratch)


def _run_child(mode: str, start_method: str, directory: str) -> tuple[dict[str, Any], str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    # A short private TMPDIR: multiprocessing's forkserver binds a Unix socket under it, and pytest's
    # per-worker directories are too deep for sun_path.
    private_tmp = Path(tempfile.mkdtemp(prefix="agl-t-", dir="/tmp"))
    try:
        return _run_child_in(mode, start_method, directory, path, private_tmp)
    finally:
        shutil.rmtree(private_tmp, ignore_errors=True)


def _run_child_in(
    mode: str, start_method: str, directory: str, path: str, private_tmp: Path
) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, str(CHILD_SCRIPT), mode, start_method, directory],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path, "TMPDIR": str(private_tmp)},
        timeout=HANG * 4,
        start_new_session=True,  # a group SIGINT stays inside the child's own group
        check=False,
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert list(private_tmp.iterdir()) == [], "R4: the socket's temporary directory was left behind"
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _assert_clean_interrupt(result: dict[str, Any], err: str, bound: float) -> None:
    assert result["outcome"] == "KeyboardInterrupt", result
    assert result["seconds_after_signal"] and result["seconds_after_signal"][0] <= bound, result
    assert result["leftover_children"] == [], result
    assert result["new_threads"] == [], result
    assert result["sigint_handler_restored"], result
    assert "Traceback" not in err, err


@pytest.mark.parametrize("mode", ["before-start", "while-running", "event-set", "during-shutdown"])
def test_K3_sigint_main_at_each_moment(scratch: str, mode: str) -> None:
    result, err = _run_child(mode, "forkserver", scratch)
    # K3: within 1 s, plus the declared grace (1 s) and terminate step for non-cooperative runners.
    _assert_clean_interrupt(result, err, bound=1.0 + (2.0 if mode == "during-shutdown" else 0.0))


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_K4_sigint_to_the_group(scratch: str, start_method: str) -> None:
    result, err = _run_child("group", start_method, scratch)
    _assert_clean_interrupt(result, err, bound=1.0)


def test_K5_second_sigint_hurries_shutdown(scratch: str) -> None:
    result, err = _run_child("second", "fork", scratch)
    # The grace is 60 s and runners ignore the stop: only the second SIGINT can end it this early.
    _assert_clean_interrupt(result, err, bound=HANG)
    assert result["seconds_after_signal"][1] < 10.0, result


# -- F: process faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_F1_killed_runner_is_named(scratch: str, start_method: str) -> None:
    with pytest.raises(WorkerDied) as info:
        ipc(2, start_method).execute(
            Algorithm(scratch, "kill-runner", 2), Runner(scratch), InMemoryLightningStore()
        )
    assert info.value.name == "runner-1"
    assert info.value.exitcode == -signal.SIGKILL
    assert "SIGKILL" in str(info.value)
    assert "runner 0 saw-stop True" in read_journal(scratch)  # the others stopped


@pytest.mark.parametrize(("how", "config", "expected", "error"), PROCESS_DEATHS)
def test_T3_F1_a_runner_that_dies_holding_a_claim_has_it_given_up(
    scratch: str, how: str, config: dict[str, Any], expected: str, error: type[BaseException]
) -> None:
    """Given up as soon as the runner process is seen to end (the server knows each connection's peer
    process), while the algorithm still runs, by the retry policy, before execute() raises."""
    check_given_up(ipc(1, "forkserver"), scratch, how, config, expected, error)


def test_T3_a_live_but_silent_runner_is_kept_claimed_by_heartbeats(scratch: str) -> None:
    """Its heartbeats cross the socket: the store's clock only moves once one came (see claims_bundles)."""
    check_kept_alive(ipc(1, "forkserver"), scratch)


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_F4_runners_die_with_the_caller(tmp_path: Path, start_method: str) -> None:
    directory = str(tmp_path)
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    # A SIGKILLed caller cannot remove its socket directory: keep it inside pytest's tmp_path.
    proc = subprocess.Popen(
        [sys.executable, str(CHILD_SCRIPT), "parent-death", start_method, directory],
        env={**os.environ, "PYTHONPATH": path, "TMPDIR": directory},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + HANG
        wanted = {"runner 0 started", "runner 1 started"}
        while not wanted <= set(read_journal(directory)):
            assert time.monotonic() < deadline and proc.poll() is None, read_journal(directory)
            time.sleep(0.01)  # polling a journal handshake written by another process
        runners = [psutil.Process(int(Path(directory, f"runner-{i}.pid").read_text())) for i in range(2)]
        proc.kill()
        proc.wait(HANG)
        killed = time.monotonic()
        while any(_alive(p) for p in runners) and time.monotonic() < killed + HANG:
            psutil.wait_procs([p for p in runners if _alive(p)], timeout=0.05)
        elapsed = time.monotonic() - killed
        assert not any(_alive(p) for p in runners), "F4: runners outlived the SIGKILLed caller"
        assert elapsed <= 2.0, f"F4: runners outlived the caller by {elapsed:.2f}s (bound 2 s)"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(HANG)


def test_R4_F4_socket_directory_of_a_sigkilled_caller_is_swept_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller SIGKILLed mid-run leaves its socket directory; the next ``execute()`` sweeps it, and keeps
    a look-alike directory that is not ours."""
    directory = str(tmp_path)
    root = Path(tempfile.mkdtemp(prefix="agl-t-", dir="/tmp"))  # short: the socket path must fit sun_path
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    try:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD_SCRIPT), "parent-death", "fork", directory],
            env={**os.environ, "PYTHONPATH": path, "TMPDIR": str(root)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + HANG
            while not {"runner 0 started", "runner 1 started"} <= set(read_journal(directory)):
                assert time.monotonic() < deadline and proc.poll() is None, read_journal(directory)
                time.sleep(0.01)  # polling a journal handshake written by another process
            runners = [psutil.Process(int(Path(directory, f"runner-{i}.pid").read_text())) for i in range(2)]
            (left,) = root.glob("agl-ipc-*")
            proc.kill()
            proc.wait(HANG)
            psutil.wait_procs(runners, timeout=HANG)  # they follow their caller (F4)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(HANG)
        assert left.is_dir(), "a SIGKILLed caller removes nothing itself"
        look_alike = root / "agl-ipc-lookalike"
        look_alike.mkdir()
        (look_alike / "store.sock").write_text("not ours")
        multiprocessing.util.get_temp_dir()  # settled before TMPDIR moves (see the R1 test below)
        monkeypatch.setattr(tempfile, "tempdir", str(root))
        scratch = tempfile.mkdtemp(dir=directory)
        ipc(1).execute(Algorithm(scratch, "return", 1), Runner(scratch), InMemoryLightningStore())
        assert not left.exists(), "the stale socket directory outlived the next run"
        assert [p.name for p in root.glob("agl-ipc-*")] == ["agl-ipc-lookalike"]
        assert (look_alike / "store.sock").read_text() == "not ours"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- S: store interaction ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n_runners", [1, 3])
def test_S1_S2_S3_exactly_once_and_caller_store_updated(scratch: str, n_runners: int) -> None:
    store = InMemoryLightningStore()
    n = 300
    ipc(n_runners).execute(
        Algorithm(scratch, "throughput", n_runners, n), Runner(scratch, default="work"), store
    )
    assert f"algorithm completed {n}" in read_journal(scratch)  # S2: the algorithm saw them complete

    async def check() -> None:
        rollouts = await store.query_rollouts()
        assert len(rollouts) == n and all(r.status == "succeeded" for r in rollouts)
        for rollout in rollouts:
            attempts = await store.query_attempts(rollout.rollout_id)
            assert len(attempts) == 1, f"S1: {rollout.rollout_id} claimed {len(attempts)} times"
            spans = await store.query_spans(rollout.rollout_id)
            assert len(spans) == 1  # S3: the runner's span is in the caller's store
        workers = {(await store.get_latest_attempt(r.rollout_id)).worker_id for r in rollouts}  # type: ignore[union-attr]
        assert workers <= {str(i) for i in range(n_runners)}

    asyncio.run(check())


def test_S4_store_fault_in_runner(scratch: str) -> None:
    with pytest.raises(ValueError, match="ro-does-not-exist"):
        ipc(1).execute(
            Algorithm(scratch, "wait"), Runner(scratch, default="store-fault"), InMemoryLightningStore()
        )


class SlowStore(InMemoryLightningStore):
    """Every dequeue takes 20 ms (on the server's loop, without blocking it)."""

    async def dequeue_rollout(self) -> Any:
        await asyncio.sleep(0.02)
        return await super().dequeue_rollout()


def test_S5_slow_store_no_deadlock(scratch: str) -> None:
    store = SlowStore()
    ipc(2).execute(Algorithm(scratch, "throughput", 2, 20), Runner(scratch, default="work"), store)
    assert "algorithm completed 20" in read_journal(scratch)


# -- R: resources ------------------------------------------------------------------------------------------


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_R1_R3_R4_R6_R7_repeat_leaves_nothing(
    scratch: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    # multiprocessing keeps the temporary directory it first sees for the life of the process, and the
    # forkserver's socket lives there: both are settled first, or the first test of this worker to start
    # the forkserver would put them under private_tmp (too long a path for AF_UNIX, and deleted after).
    multiprocessing.util.get_temp_dir()
    multiprocessing.forkserver.ensure_running()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    strategy = ipc(2, "forkserver")
    strategy.execute(Algorithm(scratch, "return", 2), Runner(scratch), InMemoryLightningStore())  # warm-up
    threads = {t.name for t in threading.enumerate()}
    fds = _fds()
    handler = signal.getsignal(signal.SIGINT)
    method = multiprocessing.get_start_method(allow_none=True)
    root_level = logging.getLogger().level
    for _ in range(5):
        directory = tempfile.mkdtemp(dir=scratch)
        strategy.execute(Algorithm(directory, "return", 2), Runner(directory), InMemoryLightningStore())
        assert {t.name for t in threading.enumerate()} == threads  # R1
        assert list(private_tmp.iterdir()) == []  # R4: the socket's private directory is gone
    assert _fds() == fds  # R3, R6: no descriptor growth over repeated runs
    assert signal.getsignal(signal.SIGINT) is handler  # R7
    assert multiprocessing.get_start_method(allow_none=True) == method
    assert logging.getLogger().level == root_level
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


class NotThreadSafeStore(InMemoryLightningStore):
    """Declares itself not thread-safe: the strategy must confine it behind ``ThreadedLightningStore``."""

    thread_safe = False


def test_S3_store_that_is_not_thread_safe_is_wrapped(scratch: str) -> None:
    store = NotThreadSafeStore()
    threads = {t.name for t in threading.enumerate()}
    ipc(2).execute(Algorithm(scratch, "throughput", 2, 50), Runner(scratch, default="work"), store)
    assert "algorithm completed 50" in read_journal(scratch)
    assert len(asyncio.run(store.query_rollouts(status=["succeeded"]))) == 50
    assert {t.name for t in threading.enumerate()} == threads  # the wrapper's owner thread is gone (R1)


@pytest.mark.parametrize("start_method", [None, "forkserver"])
def test_execute_inside_a_running_loop_is_a_clear_error_and_starts_nothing(start_method: str | None) -> None:
    # It used to hang: the main bundle's loop cannot run inside another, and each failed attempt was
    # recorded and retried for ever.
    async def algorithm(store: Any, event: Any) -> None:
        raise AssertionError("the algorithm must not run")

    async def caller() -> None:
        threads, children = threading.active_count(), psutil.Process().children()
        with pytest.raises(RuntimeError, match=r"cannot run inside an event loop.*asyncio\.to_thread"):
            ipc(start_method=start_method).execute(algorithm, algorithm, InMemoryLightningStore())  # type: ignore[arg-type]
        assert threading.active_count() == threads
        assert psutil.Process().children() == children

    asyncio.run(caller())
