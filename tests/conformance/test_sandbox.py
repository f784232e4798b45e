"""The sandbox engine against tiny strategies: outcomes, faults at gates, hangs, leaks, crash, hygiene."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading

import psutil
import pytest

from conformance.sandbox import SandboxError, run_call, run_scenario, shutdown_sandboxes
from conformance.scenarios import Fault, Scenario, Script, Step, Target

sys.path.insert(0, os.path.dirname(__file__))  # engine_strategies must import in the sandbox too

from engine_strategies import raise_value_error, return_a_lock, sandbox_facts

STORE = "engine_strategies:NullStore"
LOOP = Target("engine_strategies:LoopStrategy", store_factory=STORE)
POLL = Script((Step("poll", 20.0),))


def _target(name: str) -> Target:
    return Target(f"engine_strategies:{name}", store_factory=STORE)


def _records(result, bundle=None, kind=None):
    return [
        record
        for record in result.journal
        if (bundle is None or record.bundle == bundle) and (kind is None or record.kind == kind)
    ]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_normal_completion_is_observed_without_leaks():
    scenario = Scenario("returns", n_runners=2, algorithm=Script((Step("sleep", 0.01),)), runners=(POLL,))
    result = run_scenario(LOOP, scenario)
    assert result.outcome == "returned", result
    assert result.exception is None
    assert result.leaks.empty(), result.leaks
    assert {r.bundle for r in _records(result, kind="start")} == {"algorithm", "runner 0", "runner 1"}
    assert len(_records(result, kind="saw-stop")) == 2
    assert result.measurements["strategy_class"] == "engine_strategies.LoopStrategy"
    (pid,) = {r.pid for r in _records(result, kind="start")}
    assert pid != os.getpid()


def test_exception_crosses_the_sandbox_with_type_message_and_traceback():
    raise_step = Step("raise", args={"type": "ValueError", "message": "boom 42"})
    scenario = Scenario("raises", algorithm=Script((raise_step,)), runners=(POLL,))
    result = run_scenario(LOOP, scenario)
    assert result.outcome == "raised"
    assert result.exception.type_name == "builtins.ValueError"
    assert result.exception.message == "boom 42"
    assert "_raise_scripted" in result.exception.traceback


def test_repeat_runs_execute_in_one_process():
    scenario = Scenario("repeat", algorithm=Script((Step("return"),)), runners=(POLL,), repeat=3)
    result = run_scenario(LOOP, scenario)
    assert result.outcome == "returned"
    assert len(result.durations) == 3
    assert len(result.measurements["repeat_counts"]) == 3
    assert len(_records(result, "kit", "execute-start")) == 3
    assert len({r.pid for r in _records(result, kind="start")}) == 1


def test_thread_leak_names_the_thread():
    scenario = Scenario("leak", algorithm=Script((Step("return"),)), runners=(POLL,), settle=0.3)
    result = run_scenario(_target("LeakyThreadStrategy"), scenario)
    assert result.outcome == "returned"
    assert any("'leaky-thread'" in entry and "daemon" in entry for entry in result.leaks.threads), (
        result.leaks
    )


def test_remote_resource_reported_by_the_strategy_is_a_leaked_process():
    scenario = Scenario("remote", algorithm=Script((Step("return"),)), runners=(POLL,), settle=0.3)
    result = run_scenario(_target("RemoteLeakStrategy"), scenario)
    assert result.outcome == "returned"
    assert result.leaks.processes == ("remote: cluster worker 'runner-0' on node n1 still running",)


def test_remote_resource_gone_within_the_settle_window_is_no_leak():
    scenario = Scenario("remote-settles", algorithm=Script((Step("return"),)), runners=(POLL,), settle=5.0)
    result = run_scenario(_target("RemoteSettlingStrategy"), scenario)
    assert result.outcome == "returned"
    assert result.leaks.processes == ()


def test_remote_probe_that_fails_is_reported():
    scenario = Scenario("remote-fails", algorithm=Script((Step("return"),)), runners=(POLL,), settle=0.3)
    result = run_scenario(_target("RemoteProbeFailsStrategy"), scenario)
    assert any("cluster unreachable" in entry for entry in result.leaks.processes), result.leaks


def test_zombie_names_its_pid():
    scenario = Scenario("zombie", algorithm=Script((Step("return"),)), runners=(POLL,), settle=0.3)
    result = run_scenario(_target("ZombieStrategy"), scenario)
    assert result.outcome == "returned"
    assert len(result.leaks.zombies) == 1, result.leaks
    assert result.leaks.zombies[0].startswith("pid ") and result.leaks.zombies[0].endswith("zombie")


def test_caller_state_change_is_named():
    scenario = Scenario("state", algorithm=Script((Step("return"),)), runners=(POLL,), settle=0.1)
    result = run_scenario(_target("StateChangingStrategy"), scenario)
    assert any(
        entry.startswith("SIGTERM handler") and "_on_term" in entry for entry in result.leaks.caller_state
    )


def test_caller_connection_left_as_it_was_is_no_change():
    scenario = Scenario("connected", algorithm=Script((Step("return"),)), runners=(POLL,), settle=0.1)
    result = run_scenario(_target("CallerConnectedStrategy"), scenario)
    assert result.outcome == "returned"
    assert result.leaks.caller_state == ()


def test_caller_connection_closed_by_execute_is_named():
    scenario = Scenario("disconnects", algorithm=Script((Step("return"),)), runners=(POLL,), settle=0.1)
    result = run_scenario(_target("ConnectionClosingStrategy"), scenario)
    assert result.leaks.caller_state == (
        "caller's cluster connection: was connected to fake-cluster:6379, now not connected",
    )


def test_caller_connection_that_cannot_describe_itself_is_reported():
    scenario = Scenario("describe-fails", algorithm=Script((Step("return"),)), runners=(POLL,), settle=0.1)
    result = run_scenario(_target("ConnectionFailsToDescribeStrategy"), scenario)
    assert len(result.leaks.caller_state) == 1, result.leaks
    assert "describe() failed" in result.leaks.caller_state[0]
    assert "cluster unreachable" in result.leaks.caller_state[0]


def test_sigint_at_a_gate_lands_in_execute():
    scenario = Scenario(
        "sigint", n_runners=2, algorithm=POLL, runners=(POLL,), faults=(Fault("sigint-main", "all started"),)
    )
    result = run_scenario(LOOP, scenario)
    assert result.outcome == "raised"
    assert result.exception.type_name == "builtins.KeyboardInterrupt"
    (fault,) = _records(result, "kit", "fault")
    assert fault.data["signal"] == "SIGINT"
    starts = _records(result, kind="start")
    assert len(starts) == 3 and all(start.t < fault.t for start in starts)
    (end,) = _records(result, "kit", "execute-end")
    assert end.t > fault.t


def test_before_start_holds_every_bundle_until_the_fault_is_delivered():
    scenario = Scenario(
        "early", n_runners=2, algorithm=POLL, runners=(POLL,), faults=(Fault("sigint-main", "before start"),)
    )
    result = run_scenario(LOOP, scenario)
    assert result.exception is not None and result.exception.type_name == "builtins.KeyboardInterrupt"
    (fault,) = _records(result, "kit", "fault")
    assert all(start.t > fault.t for start in _records(result, kind="start"))


def test_hang_is_killed_with_stacks_of_every_process():
    scenario = Scenario(
        "hang", n_runners=1, algorithm=POLL, runners=(Script((Step("block", 60.0),)),), hang_bound=1.5
    )
    result = run_scenario(_target("ProcessStrategy"), scenario)
    assert result.outcome == "hang"
    pids = {r.pid for r in result.journal if r.bundle != "kit"}
    assert len(pids) == 2
    for pid in pids:
        assert f"--- process {pid} " in result.stacks
        assert not _alive(pid)
    assert "_step" in result.stacks or "step" in result.stacks  # the runner's frame is in its dump
    assert "time.sleep" in result.stacks or "block" in result.stacks or "File" in result.stacks


def test_hang_in_sync_code_of_the_scenario_process():
    scenario = Scenario("hang-main", algorithm=POLL, runners=(POLL,), hang_bound=1.0)
    result = run_scenario(_target("HangingStrategy"), scenario)
    assert result.outcome == "hang"
    assert "_park_forever" in result.stacks


def test_sigkill_worker_hits_the_journaled_pid():
    scenario = Scenario(
        "kill-worker",
        n_runners=2,
        algorithm=Script((Step("sleep", 0.2),)),
        runners=(POLL,),
        faults=(Fault("sigkill-worker", "all started", worker=1),),
    )
    result = run_scenario(_target("ProcessStrategy"), scenario)
    (fault,) = _records(result, "kit", "fault")
    (start,) = _records(result, "runner 1", "start")
    assert fault.data["pid"] == start.pid
    assert result.outcome == "raised"
    assert "exited with -9" in result.exception.message


def test_parent_death_is_reported_as_crash_and_orphans_are_watched_then_killed():
    scenario = Scenario(
        "kill-parent",
        n_runners=2,
        algorithm=POLL,
        runners=(POLL,),
        faults=(Fault("sigkill-parent", "all started"),),
    )
    result = run_scenario(_target("ProcessStrategy"), scenario)
    assert result.outcome == "crashed"
    assert result.exit_status == -9
    workers = {r.pid for r in _records(result, kind="start") if r.bundle.startswith("runner")}
    assert set(map(int, result.measurements["orphans"])) >= workers
    for pid in workers:
        assert not _alive(pid)


def test_bad_target_is_a_sandbox_error_naming_it():
    with pytest.raises(SandboxError, match="no_such_module"):
        run_scenario(Target("no_such_module:Strategy"), Scenario("bad"))


def test_bad_gate_and_scale_are_rejected_up_front():
    with pytest.raises(ValueError, match="'runner 5 started'"):
        run_scenario(LOOP, Scenario("gate", faults=(Fault("sigint-main", "runner 5 started"),)))
    with pytest.raises(ValueError, match="timeout_scale"):
        run_scenario(LOOP, Scenario("scale"), timeout_scale=0)


def _zygotes() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if "_zygote_main" in " ".join(child.cmdline()):
                found.append(child)
    return found


def test_nothing_leaks_into_the_pytest_process():
    threads = set(threading.enumerate())
    me = psutil.Process()
    run_scenario(LOOP, Scenario("hygiene", algorithm=Script((Step("return"),)), runners=(POLL,)))
    assert set(threading.enumerate()) == threads
    assert not [c for c in me.children(recursive=True) if c.status() == psutil.STATUS_ZOMBIE]
    zygotes = _zygotes()
    assert len(zygotes) == 1  # this process's one zygote; every scenario process is gone
    assert not zygotes[0].children()
    shutdown_sandboxes()
    _, alive = psutil.wait_procs(zygotes, timeout=10)
    assert not alive
    assert not _zygotes()
    assert not [c for c in me.children(recursive=True) if c.status() == psutil.STATUS_ZOMBIE]


def test_an_interrupted_observer_kills_the_scenario_and_stays_usable():
    """What pytest-timeout (signal method) does: an exception lands in run_scenario mid-run."""
    import signal

    class _Timeout(Exception):
        pass

    def _expire(*_):
        raise _Timeout

    scenario = Scenario("interrupted", algorithm=POLL, runners=(POLL,), hang_bound=60)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    previous = signal.signal(signal.SIGALRM, _expire)
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        with pytest.raises(_Timeout):
            run_scenario(_target("HangingStrategy"), scenario)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    after = {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}
    assert after <= before | {p.pid for p in psutil.Process().children()}  # only the zygote remains
    assert len(psutil.Process().children(recursive=True)) == len(psutil.Process().children())
    result = run_scenario(LOOP, Scenario("after", algorithm=Script((Step("return"),)), runners=(POLL,)))
    assert result.outcome == "returned"


def test_sigint_to_the_group_reaches_every_worker_process():
    scenario = Scenario(
        "group",
        n_runners=2,
        algorithm=POLL,
        runners=(Script((Step("ignore_event", 30.0),)),),
        faults=(Fault("sigint-group", "all started"),),
    )
    result = run_scenario(_target("ProcessStrategy"), scenario)
    # The runners ignore the event: only the SIGINT delivered to their own process stops them. From 3.11
    # asyncio.run turns it into a cancellation of the main task; on 3.10 the KeyboardInterrupt lands
    # wherever the runner is (in the task: it raises; in the loop's select: asyncio.run then cancels it).
    for worker in ("runner 0", "runner 1"):
        ends = [record.detail for record in _records(result, worker, "end")]
        assert ends and (ends[0] == "cancelled" or "KeyboardInterrupt" in ends[0]), (worker, ends)
    assert _records(result, "kit", "fault")[0].data["group"] is True
    assert result.exception is not None and result.exception.type_name == "builtins.KeyboardInterrupt"


def test_run_call_returns_the_value_from_a_process_of_its_own_session():
    result = run_call(sandbox_facts, ("hello",), target=LOOP, hang_bound=30.0)
    assert result.outcome == "returned", result
    facts = result.value
    assert facts["tag"] == "hello" and facts["pid"] != os.getpid()
    assert facts["sid"] == facts["pid"]  # a session leader: signals to its group never reach pytest
    assert facts["tmp"] != tempfile.gettempdir()  # a private TMPDIR
    assert not result.survivors


def test_run_call_reports_an_exception_or_a_value_that_cannot_cross():
    raised = run_call(raise_value_error, ("boom 7",), target=LOOP, hang_bound=30.0)
    assert raised.outcome == "raised"
    assert (raised.exception.type_name, raised.exception.message) == ("builtins.ValueError", "boom 7")
    assert "raise_value_error" in raised.exception.traceback
    locked = run_call(return_a_lock, target=LOOP, hang_bound=30.0)
    assert locked.outcome == "raised" and "pickle" in locked.exception.message
