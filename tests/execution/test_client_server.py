"""The ``cs`` strategy, contract by contract (IDs from CONTRACTS.md), against real processes and HTTP.

Bundles are scripted and picklable (``cs_bundles.py``); they report through a cross-process journal and
synchronise on it (handshakes), never on bare sleeps. Scenarios that deliver SIGINT, kill the caller or
need two ``execute()`` processes (the multi-machine shape) run in ``cs_child.py`` so nothing reaches pytest.
Time bounds are generous hang bounds; latencies are measured in ``bench/``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import trustme
from claims_bundles import PROCESS_DEATHS, check_given_up, check_kept_alive
from claims_bundles import read_journal as read_claims_journal
from cs_bundles import Journal, ScriptedAlgorithm, ScriptedError, ScriptedRunner
from held_start import HeldStart, opened_when_the_stop_reaches
from python_script import run_script

from agentlightning.execution.base import ExecutionStrategy
from agentlightning.execution.client_server import ClientServerExecutionStrategy
from agentlightning.execution.processes import WorkerDied
from agentlightning.store.http import LightningStoreServer, ServerBindError, StoreServerUnreachable
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.trainer.init_utils import build_component
from agentlightning.trainer.registry import ExecutionStrategyRegistry

CHILD = Path(__file__).with_name("cs_child.py")
HANG = 60.0
TOKEN = "cs-shared-token-for-tests"

WAIT_EVENT = (("wait_event",),)
BOTH_RUNNERS_STARTED = (("wait_journal", "runner 0", "start"), ("wait_journal", "runner 1", "start"))


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(str(tmp_path))


def _cs(**kwargs: Any) -> ClientServerExecutionStrategy:
    kwargs.setdefault("graceful_timeout", 2.0)
    kwargs.setdefault("terminate_timeout", 2.0)
    return ClientServerExecutionStrategy(**kwargs)


def _worker_processes() -> set[int]:
    """Live or zombie children, except multiprocessing's own long-lived helpers."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        except psutil.ZombieProcess:
            cmdline = "<zombie>"
        if "forkserver" in cmdline or "resource_tracker" in cmdline:
            continue
        pids.add(child.pid)
    return pids


def _snapshot() -> tuple[set[int | None], set[int], int]:
    return {t.ident for t in threading.enumerate()}, _worker_processes(), psutil.Process().num_fds()


def _assert_nothing_left(before: tuple[set[int | None], set[int], int]) -> None:
    threads, children, fds = _snapshot()
    assert threads <= before[0], [t.name for t in threading.enumerate() if t.ident not in before[0]]
    assert children <= before[1], children - before[1]
    assert fds <= before[2], f"{fds} fds open after execute(), {before[2]} before"


def _child(scenario: str, directory: Path, *args: str, **popen: Any) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(CHILD.parent), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.Popen(
        [sys.executable, str(CHILD), scenario, str(directory), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **popen,
    )


def _report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=HANG * 2)
    lines = out.strip().splitlines()
    assert proc.returncode == 0 and lines, f"child failed ({proc.returncode}):\n{err[-3000:]}"
    return json.loads(lines[-1])


# -- L: lifecycle ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_runners", [1, 3])
def test_L1_bundles_called_once_with_distinct_worker_ids(journal: Journal, n_runners: int) -> None:
    waits = tuple(("wait_journal", f"runner {i}", "start") for i in range(n_runners))
    algorithm = ScriptedAlgorithm(journal, (("store_type",), *waits))
    runner = ScriptedRunner(journal, (("store_type",), *WAIT_EVENT))
    assert _cs(n_runners=n_runners).execute(algorithm, runner, InMemoryLightningStore()) is None
    starts = [who for _, who, what, _ in journal.entries() if what == "start"]
    assert sorted(starts) == sorted(["algorithm", *(f"runner {i}" for i in range(n_runners))])
    assert journal.has("algorithm", "store=InMemoryLightningStore")  # the caller's store itself
    # An HTTP client seen through the runner's own claim tracker (heartbeats, T3).
    assert all(
        journal.has(f"runner {i}", "store=ClaimTrackingStore inner=HttpLightningStore")
        for i in range(n_runners)
    )
    runner_pids = {pid for _, who, _, pid in journal.entries() if who.startswith("runner")}
    assert len(runner_pids) == n_runners and os.getpid() not in runner_pids


def test_L1_runners_still_starting_when_the_algorithm_returned_are_called(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The algorithm returns at once; the runner processes stay in their start-up (unpickling their bundle)
    # until the stop has dealt with them: past the grace, each is still called once and sees the stop.
    gate = multiprocessing.get_context("forkserver").Event()
    runner = HeldStart(gate, ScriptedRunner(journal, WAIT_EVENT))
    with opened_when_the_stop_reaches(gate, monkeypatch):
        strategy = _cs(n_runners=3, graceful_timeout=1.0, start_method="forkserver")
        assert strategy.execute(ScriptedAlgorithm(journal), runner, InMemoryLightningStore()) is None
    starts = sorted(who for _, who, what, _ in journal.entries() if what == "start")
    assert starts == ["algorithm", "runner 0", "runner 1", "runner 2"]


@pytest.mark.parametrize("main_process", ["algorithm", "runner"])
def test_L2_algorithm_return_sets_event_and_stops_runners(journal: Journal, main_process: str) -> None:
    before = _snapshot()
    algorithm = ScriptedAlgorithm(journal, (("wait_journal", "runner 0", "start"),))
    _cs(main_process=main_process).execute(
        algorithm, ScriptedRunner(journal, WAIT_EVENT), InMemoryLightningStore()
    )
    assert (
        journal.has("algorithm", "end")
        and journal.has("runner 0", "saw stop")
        and journal.has("runner 0", "end")
    )
    _assert_nothing_left(before)


def test_L3_runner_return_is_local(journal: Journal) -> None:
    runner = ScriptedRunner(journal, per_worker={0: (), 1: WAIT_EVENT})
    algorithm = ScriptedAlgorithm(
        journal,
        (("wait_journal", "runner 0", "end"), ("wait_journal", "runner 1", "start"), ("event_state",)),
    )
    _cs(n_runners=2).execute(algorithm, runner, InMemoryLightningStore())
    assert journal.has("algorithm", "event=False"), journal.timeline()
    assert journal.has("runner 1", "saw stop")


@pytest.mark.parametrize("setter", ["algorithm", "runner 1"])
def test_L4_event_set_anywhere_is_seen_by_every_process(journal: Journal, setter: str) -> None:
    sets = (*BOTH_RUNNERS_STARTED, ("set_event",)) if setter == "algorithm" else (("set_event",),)
    waits = (*BOTH_RUNNERS_STARTED, *WAIT_EVENT)
    algorithm = ScriptedAlgorithm(journal, sets if setter == "algorithm" else waits)
    runner = ScriptedRunner(journal, WAIT_EVENT, per_worker={1: sets} if setter == "runner 1" else {})
    _cs(n_runners=2).execute(algorithm, runner, InMemoryLightningStore())
    watchers = {"algorithm", "runner 0", "runner 1"} - {setter}
    assert all(journal.has(who, "saw stop") for who in watchers), journal.timeline()


def test_L6_runner_ignoring_event_is_cancelled_after_grace_and_finally_runs(journal: Journal) -> None:
    before = _snapshot()
    algorithm = ScriptedAlgorithm(journal, (("wait_journal", "runner 0", "start"),))
    runner = ScriptedRunner(journal, (("sleep", HANG),))
    started = time.monotonic()
    _cs(graceful_timeout=0.5).execute(algorithm, runner, InMemoryLightningStore())
    assert time.monotonic() - started < HANG / 2  # bounded by the grace, not by the bundle's sleep
    assert journal.has("runner 0", "finally"), journal.timeline()
    _assert_nothing_left(before)


def test_L6_main_thread_algorithm_ignoring_event_is_cancelled(journal: Journal) -> None:
    algorithm = ScriptedAlgorithm(journal, (("sleep", HANG),))
    runner = ScriptedRunner(journal, (("set_event",),))
    _cs(graceful_timeout=0.5).execute(algorithm, runner, InMemoryLightningStore())
    assert journal.has("algorithm", "cancelled") and journal.has("algorithm", "finally")


@pytest.mark.parametrize("ignores_sigint", [False, True])
def test_L7_blocking_runner_is_escalated_and_reaped(journal: Journal, ignores_sigint: bool) -> None:
    before = _snapshot()
    steps = ((("ignore_sigint",),) if ignores_sigint else ()) + (("block", HANG),)
    algorithm = ScriptedAlgorithm(journal, (("wait_journal", "runner 0", "start"),))
    started = time.monotonic()
    _cs(graceful_timeout=0.2, terminate_timeout=0.5).execute(
        algorithm, ScriptedRunner(journal, steps), InMemoryLightningStore()
    )
    assert time.monotonic() - started < HANG / 2
    # SIGINT interrupts the blocking call (its finally runs); a runner ignoring SIGINT gets SIGTERM.
    # (Under coverage with sigterm = true, coverage's own SIGTERM handler runs Python first, so the
    # finally may run there too: only the SIGINT case is checked then.)
    if not ignores_sigint or os.environ.get("COVERAGE_RUN") is None:
        assert journal.has("runner 0", "finally") != ignores_sigint
    _assert_nothing_left(before)


def test_L7_capabilities_declared() -> None:
    caps = _cs(graceful_timeout=1.5, terminate_timeout=2.5).capabilities
    assert caps["uses_processes"] is True and caps["can_cancel_blocking_code"] is True
    assert caps["shares_caller_store"] is True and caps["supports_unmanaged_store"] is False
    assert caps["grace_seconds"] == 1.5 and caps["terminate_seconds"] == 2.5
    assert set(caps["supports_start_methods"]) <= {"fork", "spawn", "forkserver"}


# -- K: KeyboardInterrupt -------------------------------------------------------------------------------


def test_K1_keyboard_interrupt_in_algorithm_is_reraised(journal: Journal) -> None:
    algorithm = ScriptedAlgorithm(journal, (("wait_journal", "runner 0", "start"), ("ki",)))
    with pytest.raises(KeyboardInterrupt):
        _cs().execute(algorithm, ScriptedRunner(journal, WAIT_EVENT), InMemoryLightningStore())
    assert journal.has("runner 0", "saw stop")


def test_K2_keyboard_interrupt_in_runner_is_reraised(journal: Journal) -> None:
    before = _snapshot()
    # Runner 1 raises once runner 0 is in its bundle: a stop by KeyboardInterrupt sends SIGTERM to runners
    # still starting instead of calling them, so a slow runner 0 would otherwise never see the stop.
    runner = ScriptedRunner(
        journal, WAIT_EVENT, per_worker={1: (("wait_journal", "runner 0", "start"), ("ki",))}
    )
    with pytest.raises(KeyboardInterrupt):
        _cs(n_runners=2).execute(ScriptedAlgorithm(journal, WAIT_EVENT), runner, InMemoryLightningStore())
    assert journal.has("algorithm", "saw stop") and journal.has("runner 0", "saw stop")
    _assert_nothing_left(before)


@pytest.mark.parametrize(
    "moment", ["sigint_before_start", "sigint_running", "sigint_shutdown", "sigint_event_set"]
)
def test_K3_sigint_to_the_main_process_is_reraised(tmp_path: Path, moment: str) -> None:
    report = _report(_child(moment, tmp_path))
    assert report["outcome"] == "KeyboardInterrupt", report
    assert report["threads"] == [] and report["children"] == [], report


def test_K4_sigint_to_the_process_group(tmp_path: Path) -> None:
    proc = _child("group", tmp_path, start_new_session=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    runner_pids = {pid for _, who, _, pid in Journal(str(tmp_path)).entries() if who.startswith("runner")}
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl+C does
    report = _report(proc)
    assert report["outcome"] == "KeyboardInterrupt", report
    assert report["children"] == [] and not any(psutil.pid_exists(pid) for pid in runner_pids)


def test_K5_second_sigint_skips_the_grace(tmp_path: Path) -> None:
    report = _report(_child("second_sigint", tmp_path))  # grace 30 s, nobody cooperates
    assert report["outcome"] == "KeyboardInterrupt", report
    assert report["seconds"] < 25, report
    assert report["threads"] == [] and report["children"] == []


def test_K5_third_sigint_abandons_an_algorithm_that_swallows_cancellation(tmp_path: Path) -> None:
    report = _report(_child("third_sigint", tmp_path))  # grace 30 s; the algorithm swallows for 60 s
    assert report["outcome"] == "KeyboardInterrupt", report
    assert report["seconds"] < 25, report
    assert Journal(str(tmp_path)).has("algorithm", "swallowed a cancellation")
    assert report["threads"] == [] and report["children"] == [], report


# -- E: exceptions --------------------------------------------------------------------------------------


def test_E1_algorithm_error_is_reraised_with_type_and_message(journal: Journal) -> None:
    algorithm = ScriptedAlgorithm(
        journal, (("wait_journal", "runner 0", "start"), ("raise", "algorithm broke"))
    )
    with pytest.raises(ScriptedError, match="algorithm broke"):
        _cs().execute(algorithm, ScriptedRunner(journal, WAIT_EVENT), InMemoryLightningStore())
    assert journal.has("runner 0", "saw stop")


def test_E2_runner_error_crosses_the_process_boundary_with_its_traceback(journal: Journal) -> None:
    before = _snapshot()
    runner = ScriptedRunner(journal, WAIT_EVENT, per_worker={1: (("raise", "runner 1 broke"),)})
    with pytest.raises(ScriptedError, match="runner 1 broke") as info:
        _cs(n_runners=2).execute(ScriptedAlgorithm(journal, WAIT_EVENT), runner, InMemoryLightningStore())
    frames = [entry.name for entry in info.traceback]
    assert "_perform" in frames  # the remote frames are attached
    assert any("runner-1" in note for note in getattr(info.value, "__notes__", []))
    assert journal.has("algorithm", "saw stop") and journal.has("runner 0", "saw stop")
    _assert_nothing_left(before)


def test_E3_first_error_wins(journal: Journal) -> None:
    runner = ScriptedRunner(journal, (("raise", "first"),))
    algorithm = ScriptedAlgorithm(journal, (("wait_event",), ("raise_value_error", "second")))
    with pytest.raises(ScriptedError, match="first") as info:
        _cs().execute(algorithm, runner, InMemoryLightningStore())
    if sys.version_info >= (3, 11):
        assert any("second" in note for note in info.value.__notes__)


def test_E4_server_stop_error_does_not_mask_the_bundle_error(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_stop = LightningStoreServer.stop

    def failing_stop(self: LightningStoreServer, timeout: float | None = None) -> None:
        real_stop(self, timeout)
        raise RuntimeError("server stop failed")

    monkeypatch.setattr(LightningStoreServer, "stop", failing_stop)
    algorithm = ScriptedAlgorithm(journal, (("raise", "the real failure"),))
    with pytest.raises(ScriptedError, match="the real failure"):
        _cs().execute(algorithm, ScriptedRunner(journal, WAIT_EVENT), InMemoryLightningStore())
    with pytest.raises(RuntimeError, match="server stop failed"):  # alone, it is the failure
        _cs().execute(
            ScriptedAlgorithm(journal), ScriptedRunner(journal, WAIT_EVENT), InMemoryLightningStore()
        )


def test_E5_runner_failing_at_once_causes_no_hang_and_no_leak(journal: Journal) -> None:
    before = _snapshot()
    runner = ScriptedRunner(journal, (("raise", "at once"),))
    with pytest.raises(ScriptedError, match="at once"):
        _cs(n_runners=2).execute(ScriptedAlgorithm(journal, WAIT_EVENT), runner, InMemoryLightningStore())
    _assert_nothing_left(before)


@pytest.mark.parametrize("where", ["algorithm", "runner"])
def test_E6_system_exit_is_not_swallowed(journal: Journal, where: str) -> None:
    failing = (("system_exit", 3),)
    algorithm = ScriptedAlgorithm(journal, failing if where == "algorithm" else WAIT_EVENT)
    runner = ScriptedRunner(journal, failing if where == "runner" else WAIT_EVENT)
    with pytest.raises(SystemExit) as info:
        _cs().execute(algorithm, runner, InMemoryLightningStore())
    assert info.value.code == 3


# -- R: resources ---------------------------------------------------------------------------------------


def test_R1_R2_R3_R6_repeated_runs_leave_nothing_and_reuse_the_port(journal: Journal) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _cs(server_port=port).execute(  # a first run: lazily created module state is not a leak
        ScriptedAlgorithm(journal), ScriptedRunner(journal, WAIT_EVENT), InMemoryLightningStore()
    )
    before = _snapshot()
    for _ in range(4):  # the same fixed port, again and again (R3)
        _cs(server_port=port, n_runners=2).execute(
            ScriptedAlgorithm(journal, BOTH_RUNNERS_STARTED),
            ScriptedRunner(journal, WAIT_EVENT),
            InMemoryLightningStore(),
        )
        _assert_nothing_left(before)
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))


def test_R7_caller_state_is_restored(journal: Journal) -> None:
    import logging

    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    root = logging.getLogger()
    logging_state = (root.level, list(root.handlers), logging.getLogger("uvicorn").handlers[:])
    _cs().execute(ScriptedAlgorithm(journal), ScriptedRunner(journal, WAIT_EVENT), InMemoryLightningStore())
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert (root.level, list(root.handlers), logging.getLogger("uvicorn").handlers[:]) == logging_state
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


# -- S: store -------------------------------------------------------------------------------------------


def test_S1_S2_S3_exactly_once_and_the_callers_store_holds_every_write(journal: Journal) -> None:
    store = InMemoryLightningStore()
    algorithm = ScriptedAlgorithm(journal, (("enqueue_and_wait", 60),))
    _cs(n_runners=3).execute(algorithm, ScriptedRunner(journal, (("work",),)), store)
    assert journal.has("algorithm", "completed 60/60"), journal.timeline()  # S2: seen while it ran
    done = [
        what for _, who, what, _ in journal.entries() if who.startswith("runner") and what.startswith("done")
    ]
    assert len(done) == len(set(done)) == 60  # S1: each exactly once

    async def check() -> None:
        rollouts = await store.query_rollouts()
        assert len(rollouts) == 60 and {r.status for r in rollouts} == {"succeeded"}
        for rollout in rollouts:  # S3: attempts and spans written through HTTP are in the caller's store
            assert len(await store.query_attempts(rollout.rollout_id)) == 1
            assert len(await store.query_spans(rollout.rollout_id)) == 1

    asyncio.run(check())


def test_S4_failing_store_call_in_a_runner_stops_and_raises(journal: Journal) -> None:
    runner = ScriptedRunner(journal, (("bad_store_call",),))
    with pytest.raises(ValueError, match="ro-does-not-exist"):
        _cs().execute(ScriptedAlgorithm(journal, WAIT_EVENT), runner, InMemoryLightningStore())
    assert journal.has("algorithm", "saw stop")


class _SlowStore(InMemoryLightningStore):
    async def dequeue_rollout(self) -> Any:
        await asyncio.sleep(0.02)
        return await super().dequeue_rollout()


def test_S5_slow_store_no_deadlock(journal: Journal) -> None:
    algorithm = ScriptedAlgorithm(journal, (("enqueue_and_wait", 10),))
    _cs(n_runners=2).execute(algorithm, ScriptedRunner(journal, (("work",),)), _SlowStore())
    assert journal.has("algorithm", "completed 10/10")


def test_S6_unmanaged_store_is_refused_where_runners_cannot_share_it() -> None:
    with pytest.raises(ValueError, match="managed_store=False"):
        ClientServerExecutionStrategy(managed_store=False)
    strategy = ClientServerExecutionStrategy(role="runner", server_port=1, managed_store=False)
    with pytest.raises(ValueError, match="InMemoryLightningStore cannot be shared"):
        strategy.execute(None, None, InMemoryLightningStore())  # type: ignore[arg-type]


# -- F: faults in processes -----------------------------------------------------------------------------


def test_F1_killed_worker_is_reported_by_name_and_status(journal: Journal) -> None:
    before = _snapshot()
    runner = ScriptedRunner(journal, WAIT_EVENT, per_worker={1: (("kill_self", signal.SIGKILL),)})
    with pytest.raises(WorkerDied, match=r"runner-1.*SIGKILL") as info:
        _cs(n_runners=2).execute(ScriptedAlgorithm(journal, WAIT_EVENT), runner, InMemoryLightningStore())
    assert info.value.exitcode == -signal.SIGKILL
    assert journal.has("algorithm", "saw stop") and journal.has("runner 0", "saw stop")
    _assert_nothing_left(before)


def test_F2_taken_port_is_a_clear_error_before_anything_is_spawned(journal: Journal) -> None:
    before = _snapshot()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerBindError, match=rf"127\.0\.0\.1:{port}.*in use"):
            _cs(server_port=port).execute(
                ScriptedAlgorithm(journal), ScriptedRunner(journal, WAIT_EVENT), InMemoryLightningStore()
            )
    assert journal.entries() == []  # no bundle ever started
    _assert_nothing_left(before)


_RUNNER_FORK_SCRIPT = """
import json, os, socket, sys, threading
from agentlightning.execution.client_server import ClientServerExecutionStrategy
from agentlightning.store.memory import InMemoryLightningStore

def held_sockets():
    # (listening: local names, connected: [family, peer name]) of the sockets this process holds
    listening, connected = [], []
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(int(name))) as sock:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    listening.append(str(sock.getsockname()))
                elif sock.family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
                    connected.append([sock.family.name, str(sock.getpeername())])
        except OSError:
            pass
    return listening, connected

class Algorithm:
    async def __call__(self, store, event):
        await store.wait_for_rollouts(rollout_ids=[(await store.enqueue_rollout(input={})).rollout_id])

class Runner:
    def __init__(self, path):
        self.path = path

    async def __call__(self, store, worker_id, event):
        rollout = None
        while rollout is None:
            rollout = await store.dequeue_rollout()
        with open(self.path, "w") as out:
            listening, peers = held_sockets()
            json.dump({"parent": os.getppid(), "listening": listening, "peers": peers}, out)
        await store.update_attempt(rollout.rollout_id, rollout.attempt.attempt_id, status="succeeded")

if __name__ == "__main__":
    if sys.argv[2] == "threaded":
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
    ClientServerExecutionStrategy().execute(Algorithm(), Runner(sys.argv[1]), InMemoryLightningStore())
    with open(sys.argv[1]) as seen:
        print(json.dumps({"me": os.getpid(), **json.load(seen)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux, reads /proc")
@pytest.mark.parametrize("caller", ["single-threaded", "threaded"])
def test_default_runners_are_forked_from_a_single_threaded_caller(tmp_path: Path, caller: str) -> None:
    """The runners start before the server's threads, so the default start method forks them from a
    single-threaded caller (forkserver otherwise); either way no runner holds the server's socket (R3: the
    port is free again once the run ends; F2: the port was bound before any runner started)."""
    seen = run_script(tmp_path, _RUNNER_FORK_SCRIPT, str(tmp_path / "runner"), caller)
    forked = seen["parent"] == seen["me"]
    assert forked == (caller == "single-threaded"), seen
    assert seen["listening"] == [], f"a runner holds listening sockets: {seen}"
    # Its requests go through the server's Unix socket (in a private directory, gone afterwards), not TCP.
    peers = [peer for _, peer in seen["peers"] if peer]  # an event loop's socketpair has no name
    assert len(peers) == 1 and all(family == "AF_UNIX" for family, _ in seen["peers"]), seen
    path = peers[0]
    assert path.endswith("/store.sock") and not os.path.exists(os.path.dirname(path)), seen


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_F3_start_methods(journal: Journal, start_method: str) -> None:
    algorithm = ScriptedAlgorithm(journal, (*BOTH_RUNNERS_STARTED, ("set_event",)))
    _cs(n_runners=2, start_method=start_method).execute(
        algorithm, ScriptedRunner(journal, WAIT_EVENT), InMemoryLightningStore()
    )
    assert journal.has("runner 0", "saw stop") and journal.has("runner 1", "saw stop")
    with pytest.raises(ScriptedError, match="E1 under"):
        _cs(start_method=start_method).execute(
            ScriptedAlgorithm(journal, (("raise", f"E1 under {start_method}"),)),
            ScriptedRunner(journal, WAIT_EVENT),
            InMemoryLightningStore(),
        )


def test_F4_workers_die_with_the_caller(tmp_path: Path) -> None:
    proc = _child("parent_death", tmp_path)  # runners stuck in blocking code
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    runner_pids = {pid for _, who, _, pid in Journal(str(tmp_path)).entries() if who.startswith("runner")}
    assert len(runner_pids) == 2
    proc.kill()
    proc.communicate(timeout=HANG)
    killed = time.monotonic()
    while any(_alive(pid) for pid in runner_pids):
        assert time.monotonic() - killed < 10, "a worker outlived its caller"
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(("how", "config", "expected", "error"), PROCESS_DEATHS)
def test_T3_F1_a_runner_that_dies_holding_a_claim_has_it_given_up(
    tmp_path: Path, how: str, config: dict[str, Any], expected: str, error: type[BaseException]
) -> None:
    """The server knows which runner claimed it (its client names itself); given up as soon as the runner
    process is seen to end, while the algorithm still runs, by the retry policy, before execute() raises."""
    check_given_up(_cs(n_runners=1), str(tmp_path), how, config, expected, error)


def test_T3_a_live_but_silent_runner_is_kept_claimed_by_heartbeats(tmp_path: Path) -> None:
    """Its heartbeats cross HTTP: the store's clock only moves once one came (see claims_bundles)."""
    check_kept_alive(_cs(n_runners=1), str(tmp_path))


# -- the multi-machine shape and the runner role -------------------------------------------------------------


def _two_machines(tmp_path: Path, script: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The multi-machine shape on loopback: ``execute()`` with role "algorithm" and with role "runner"
    in two processes; the runner side learns the port the algorithm side logged."""
    algorithm_side = _child("algorithm_role", tmp_path, script)
    assert algorithm_side.stdout is not None
    line = algorithm_side.stdout.readline().split()
    assert line and line[0] == "SERVING", line
    port = line[1].rsplit(":", 1)[1]
    runner_side = _child("runner_role", tmp_path, port, script)
    return _report(algorithm_side), _report(runner_side)


def test_algorithm_and_runner_roles_in_two_processes(tmp_path: Path) -> None:
    algorithm_report, runner_report = _two_machines(tmp_path, "work")
    assert algorithm_report["outcome"] == "returned" and algorithm_report["statuses"] == ["succeeded"]
    assert runner_report["outcome"] == "returned", runner_report
    assert runner_report["children"] == [] and runner_report["threads"] == []
    journal = Journal(str(tmp_path))
    assert journal.has("algorithm", "completed 20/20")
    assert journal.has("runner 0", "end") and journal.has("runner 1", "end")


def test_L3_across_machines_runner_side_ending_does_not_stop_the_algorithm(tmp_path: Path) -> None:
    algorithm_report, runner_report = _two_machines(tmp_path, "l3")
    assert algorithm_report["outcome"] == "returned" and runner_report["outcome"] == "returned"
    assert Journal(str(tmp_path)).has("algorithm", "event=False")


def test_L4_across_machines_event_set_by_a_remote_runner(tmp_path: Path) -> None:
    algorithm_report, runner_report = _two_machines(tmp_path, "l4")
    assert algorithm_report["outcome"] == "returned" and runner_report["outcome"] == "returned"
    journal = Journal(str(tmp_path))
    assert journal.has("algorithm", "saw stop") and journal.has("runner 0", "saw stop")


def test_T3_across_machines_a_runner_side_reports_its_dead_runner(tmp_path: Path) -> None:
    """A runner machine's runner is SIGKILLed holding a claim: that machine tells the server at once
    (POST /v1/claims/release), so the algorithm sees the rollout given up while it runs."""
    algorithm_report, runner_report = _two_machines(tmp_path, "t3")
    assert runner_report["outcome"].startswith("WorkerDied"), runner_report  # that machine's own failure
    assert algorithm_report["outcome"] == "returned", algorithm_report
    assert algorithm_report["statuses"] == ["failed"]
    assert "algorithm saw failed" in read_claims_journal(str(tmp_path))
    assert runner_report["children"] == [] and runner_report["threads"] == []


def test_runner_role_fails_fast_when_the_server_is_unreachable(journal: Journal) -> None:
    before = _snapshot()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    strategy = ClientServerExecutionStrategy(
        role="runner", server_port=port, connect_timeout=0.3, server_token=TOKEN
    )
    with pytest.raises(StoreServerUnreachable, match=rf"127\.0\.0\.1:{port}"):
        strategy.execute(None, ScriptedRunner(journal, WAIT_EVENT), None)  # type: ignore[arg-type]
    assert journal.entries() == []
    _assert_nothing_left(before)


class _KnockingAlgorithm:
    """Runs on the main thread: knocks on its own run's store server as another local process would
    (no token, or ``knock_token``), then has the runner complete a rollout through the same server."""

    def __init__(self, caplog: pytest.LogCaptureFixture, knock_token: str | None = None) -> None:
        self.caplog, self.knock_token = caplog, knock_token
        self.answers: dict[str, int] = {}
        self.completed = 0

    async def __call__(self, store: Any, event: Any) -> None:
        url = next(
            record.getMessage().split()[5]
            for record in self.caplog.records
            if record.getMessage().startswith("cs: serving the store at")
        )
        headers = {"authorization": f"Bearer {self.knock_token}"} if self.knock_token else {}
        async with httpx.AsyncClient(base_url=url, headers=headers, verify=False, timeout=HANG) as knock:
            knocks: list[tuple[str, Any]] = [("query_rollouts", {}), ("get_latest_resources", None)]
            if self.knock_token is None:  # what a stranger would try; the run's own token may not
                knocks += [("enqueue_rollout", {"input": "injected"}), ("event/set", None)]
            for method, body in knocks:
                self.answers[method] = (await knock.post(f"/v1/{method}", json=body)).status_code
        rollout = await store.enqueue_rollout({"from": "the algorithm"})
        done = await store.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=HANG)
        self.completed = sum(r.status == "succeeded" for r in done)


def test_D5_a_local_process_without_the_runs_token_is_refused(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    """Loopback is no boundary between local users: the server of a run answers only its own runners."""
    store = InMemoryLightningStore()
    algorithm = _KnockingAlgorithm(caplog)
    with caplog.at_level(logging.INFO, logger="agentlightning"):
        _cs().execute(algorithm, ScriptedRunner(journal, (("work",),)), store)
    assert algorithm.answers == {
        "query_rollouts": 401,
        "enqueue_rollout": 401,
        "get_latest_resources": 401,
        "event/set": 401,
    }
    assert algorithm.completed == 1  # the run's own runner was let in
    assert [r.input for r in asyncio.run(store.query_rollouts())] == [{"from": "the algorithm"}]


def test_D5_the_token_never_appears_in_logs_or_reprs(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    strategy = _cs(server_token=TOKEN)
    algorithm = _KnockingAlgorithm(caplog, knock_token=TOKEN)
    with caplog.at_level(logging.DEBUG):
        strategy.execute(algorithm, ScriptedRunner(journal, (("work",),)), InMemoryLightningStore())
    assert algorithm.answers["query_rollouts"] == 200 and algorithm.completed == 1  # the token given
    texts = [record.getMessage() for record in caplog.records] + [repr(strategy), str(strategy)]
    texts += [caplog.text, repr(pickle.loads(pickle.dumps(strategy)))]
    assert not [text for text in texts if TOKEN in text]


def test_G2_short_tokens_are_refused_naming_the_parameter_or_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match=r"^server_token must be at least 16"):
        ClientServerExecutionStrategy(server_token="")
    monkeypatch.setenv("AGL_SERVER_TOKEN", "too-short")
    with pytest.raises(ValueError, match=r"AGL_SERVER_TOKEN \(value hidden.*at least 16") as refused:
        ClientServerExecutionStrategy()
    assert "too-short" not in str(refused.value)


@pytest.mark.parametrize("role", ["algorithm", "runner"])
def test_G2_separate_roles_need_a_shared_token(role: str) -> None:
    with pytest.raises(ValueError, match=r"server_token or AGL_SERVER_TOKEN"):
        ClientServerExecutionStrategy(role=role, server_port=4747)  # type: ignore[arg-type]


def test_tls_between_the_server_and_its_runners(
    journal: Journal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    files = {name: str(tmp_path / f"{name}.pem") for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(files["ca"])
    issued.private_key_pem.write_to_path(files["key"])
    for pem in issued.cert_chain_pems:
        pem.write_to_path(files["cert"], append=True)
    strategy = _cs(n_runners=2, tls_cert=files["cert"], tls_key=files["key"], tls_ca=files["ca"])
    with caplog.at_level(logging.INFO, logger="agentlightning"):
        strategy.execute(
            ScriptedAlgorithm(journal, (("enqueue_and_wait", 4),)),
            ScriptedRunner(journal, (("work",),)),
            InMemoryLightningStore(),
        )
    assert journal.has("algorithm", "completed 4/4"), journal.timeline()
    assert "cs: serving the store at https://127.0.0.1:" in caplog.text
    assert "local workers" not in caplog.text  # with TLS, local runners use TCP too (no Unix socket)
    assert "tls=True" in repr(strategy)


def test_G2_invalid_tls_settings_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"tls_key is missing"):
        ClientServerExecutionStrategy(tls_cert=str(tmp_path / "cert.pem"))
    monkeypatch.setenv("AGL_SERVER_TLS_CA", str(tmp_path / "nowhere.pem"))
    with pytest.raises(ValueError, match=r"AGL_SERVER_TLS_CA=.*nowhere\.pem"):
        ClientServerExecutionStrategy()


def test_server_host_is_honoured(journal: Journal) -> None:
    algorithm = ScriptedAlgorithm(journal, (("enqueue_and_wait", 3),))
    _cs(server_host="127.0.0.2").execute(
        algorithm, ScriptedRunner(journal, (("work",),)), InMemoryLightningStore()
    )
    assert journal.has("algorithm", "completed 3/3")


# -- G: configuration ----------------------------------------------------------------------------------


def test_G1_buildable_from_every_spec() -> None:
    path = "agentlightning.execution.client_server.ClientServerExecutionStrategy"
    specs: list[Any] = ["cs", path, ClientServerExecutionStrategy, {"type": "cs", "n_runners": 3}, _cs()]
    for spec in specs:
        strategy = build_component(spec, expected_type=ExecutionStrategy, registry=ExecutionStrategyRegistry)
        assert isinstance(strategy, ClientServerExecutionStrategy)
    assert ClientServerExecutionStrategy.alias == "cs"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"role": "server"}, "role"),
        ({"server_port": 70000}, "server_port"),
        ({"server_port": "80"}, "server_port"),
        ({"server_host": ""}, "server_host"),
        ({"n_runners": 0}, "n_runners"),
        ({"main_process": "both"}, "main_process"),
        ({"main_process": "runner", "n_runners": 2}, "main_process"),
        ({"graceful_timeout": -1}, "graceful_timeout"),
        ({"terminate_timeout": float("nan")}, "terminate_timeout"),
        ({"start_method": "thread"}, "start_method"),
        ({"role": "runner", "server_port": 0}, "server_port"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"managed_store": "yes"}, "managed_store"),
        ({"server_host": "0.0.0.0"}, "server_host='0.0.0.0'.*AGL_SERVER_TOKEN"),
        ({"host_loss_timeout": 11.0}, "host_loss_timeout=11.0 with connect_timeout=10.0"),
        ({"host_loss_timeout": -1}, "host_loss_timeout"),
        ({"on_host_loss": "ignore"}, "on_host_loss"),
    ],
)
def test_G2_invalid_parameters_are_named(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ClientServerExecutionStrategy(**kwargs)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AGL_CURRENT_ROLE", "leader"),
        ("AGL_SERVER_PORT", "http"),
        ("AGL_SERVER_PORT", "99999"),
        ("AGL_MANAGED_STORE", "maybe"),
    ],
)
def test_G2_invalid_environment_overrides_are_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=rf"{variable}={value!r}"):
        ClientServerExecutionStrategy()


def test_G2_non_loopback_host_accepted_with_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGL_SERVER_TOKEN", TOKEN)
    assert ClientServerExecutionStrategy(server_host="0.0.0.0").server_host == "0.0.0.0"


def test_G2_environment_overrides_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGL_CURRENT_ROLE", "runner")
    monkeypatch.setenv("AGL_SERVER_HOST", "10.1.2.3")
    monkeypatch.setenv("AGL_SERVER_PORT", "4747")
    monkeypatch.setenv("AGL_SERVER_TOKEN", TOKEN)
    strategy = ClientServerExecutionStrategy()
    assert (strategy.role, strategy.server_host, strategy.server_port) == ("runner", "10.1.2.3", 4747)
    assert strategy.server_url == "http://10.1.2.3:4747"
    # Parameters win over the environment.
    explicit = ClientServerExecutionStrategy(role="both", server_host="127.0.0.1", server_port=0)
    assert (explicit.role, explicit.server_host, explicit.server_port) == ("both", "127.0.0.1", 0)


def test_G3_strategy_and_runner_store_pickle(journal: Journal) -> None:
    strategy = _cs(n_runners=2, server_port=1234)
    clone = pickle.loads(pickle.dumps(strategy))
    assert repr(clone) == repr(strategy)
    # Everything a worker receives (bundles, HTTP store, event) crosses a spawn boundary.
    _cs(start_method="spawn").execute(
        ScriptedAlgorithm(journal, (("enqueue_and_wait", 2),)),
        ScriptedRunner(journal, (("work",),)),
        InMemoryLightningStore(),
    )
    assert journal.has("algorithm", "completed 2/2")


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    """Start multiprocessing's long-lived helpers first, so that leak snapshots do not count them."""
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    multiprocessing.forkserver.ensure_running()
    multiprocessing.resource_tracker.ensure_running()
    # The shared-ctypes heap (behind the stop event's flag) keeps its first arena's fds for reuse.
    multiprocessing.Value("b", 0)


@pytest.fixture(autouse=True)
def _no_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for variable in (
        "AGL_SERVER_TOKEN",
        "AGL_CURRENT_ROLE",
        "AGL_SERVER_HOST",
        "AGL_SERVER_PORT",
        "AGL_MANAGED_STORE",
        "AGL_SERVER_TLS_CERT",
        "AGL_SERVER_TLS_KEY",
        "AGL_SERVER_TLS_CA",
    ):
        monkeypatch.delenv(variable, raising=False)
    yield


def test_D_bounds_and_policy_follow_the_options() -> None:
    default = ClientServerExecutionStrategy().capabilities
    assert (default["late_store_seconds"], default["partition_seconds"]) == (10.0, 5.0)
    assert (default["host_loss_seconds"], default["host_loss_policy"]) == (17.0, "raise")
    tuned = ClientServerExecutionStrategy(connect_timeout=4.0, on_host_loss="carry-on").capabilities
    assert (tuned["host_loss_seconds"], tuned["host_loss_policy"]) == (11.0, "carry-on")
    assert ClientServerExecutionStrategy(host_loss_timeout=30.0).capabilities["host_loss_seconds"] == 32.0


def test_execute_inside_a_running_loop_is_a_clear_error_and_starts_nothing() -> None:
    # It used to hang: the main bundle's loop cannot run inside another, and each failed attempt was
    # recorded and retried for ever.
    async def algorithm(store: Any, event: Any) -> None:
        raise AssertionError("the algorithm must not run")

    async def caller() -> None:
        threads, children = threading.active_count(), psutil.Process().children()
        with pytest.raises(RuntimeError, match=r"cannot run inside an event loop.*asyncio\.to_thread"):
            _cs().execute(algorithm, algorithm, InMemoryLightningStore())  # type: ignore[arg-type]
        assert threading.active_count() == threads
        assert psutil.Process().children() == children

    asyncio.run(caller())
