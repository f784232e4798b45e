"""Section D's checks (``conformance/contracts/distributed.py``) against ``cs`` on real test hosts, and
how they end where hosts cannot be made or a strategy does not say how to place its sides."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from conformance import host_runs
from conformance.capabilities import validate_manifest
from conformance.checks import CheckContext, load_checks
from conformance.contracts._engine import POLL
from conformance.host_options import resolve_host_options
from conformance.hosts import Availability, probe_namespaces
from conformance.target import make_target, validate_target
from conformance.verdicts import Blocked, NotApplicable, SetupError


def _context(
    contract_id: str, situation: str = "default", capabilities: Any = None, strategy: str = "cs"
) -> CheckContext:
    """A D check's context for ``strategy`` as the kit builds it: with its declared ``host_test_options``."""
    resolved = validate_target(make_target(strategy))
    host = resolve_host_options(resolved.strategy_class, resolved.target, resolved.capabilities)
    return CheckContext(
        contract_id, situation, host.target, host.capabilities if capabilities is None else capabilities
    )


def _check(contract_id: str, situation: str = "default") -> Any:
    return next(s.function for s in load_checks() if (s.contract_id, s.situation) == (contract_id, situation))


def _require_namespaces() -> None:
    availability = probe_namespaces()
    if not availability.available:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to make network namespaces: {availability.reason}")
        pytest.skip(availability.reason)


@pytest.mark.parametrize("contract_id", ["D1", "D4", "D5"])
def test_without_namespaces_a_D_check_is_na_naming_the_reason(
    contract_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = "this process lacks CAP_SYS_ADMIN and CAP_NET_ADMIN (euid 1000)"
    monkeypatch.setattr(host_runs, "probe_namespaces", lambda: Availability(False, reason))
    monkeypatch.setattr(host_runs, "_made_hosts", False)  # as in a process that has made no test hosts yet
    situation = "after-return" if contract_id == "D1" else "default"
    with pytest.raises(NotApplicable) as excluded:
        _check(contract_id, situation)(_context(contract_id, situation))
    assert reason in str(excluded.value)


def test_a_strategy_on_many_hosts_without_host_sides_is_a_setup_error_saying_what_to_declare() -> None:
    ctx = _context("D4", capabilities=validate_manifest({}))
    with pytest.raises(SetupError, match=r"cannot place the strategy on test hosts: .*no host_sides"):
        _check("D4")(ctx)


@pytest.mark.slow  # a side waits cs's test connect_timeout for a store that never comes
def test_D4_cs_runner_side_fails_naming_the_absent_store_within_its_bound() -> None:
    _require_namespaces()
    ctx = _context("D4")
    _check("D4")(ctx)
    assert ctx.figures and "from execute() to the last process on host 1 against" in ctx.figures[0]


@pytest.mark.slow  # three hosts, two cs sides and a side refused for want of a credential
def test_D5_cs_refuses_strangers_and_never_shows_its_token() -> None:
    _require_namespaces()
    ctx = _context("D5")
    _check("D5")(ctx)
    assert "401 Unauthorized, HTTP/1.1 401 Unauthorized" in ctx.figures[0]


@pytest.mark.slow  # a runner host vanishes (cut, then killed) and cs waits out host_loss_timeout
def test_D2_cs_gives_up_a_vanished_host_and_raises_naming_it() -> None:
    _require_namespaces()
    ctx = _context("D2", "silent")
    _check("D2", "silent")(ctx)
    assert "from the loss of host 1 to" in ctx.figures[0]


@pytest.mark.slow  # a runner host cut off for good waits out connect_timeout before failing
def test_D3_cs_runner_side_cut_off_for_good_fails_naming_the_store() -> None:
    _require_namespaces()
    ctx = _context("D3", "long")
    _check("D3", "long")(ctx)
    assert "the cut-off runner side ended" in ctx.figures[0]


@pytest.mark.slow  # three hosts, two cs runner sides stopped by a Ctrl+C to the algorithm side
def test_D1_ctrl_c_reaches_the_algorithm_side_even_when_the_kit_was_started_ignoring_sigint() -> None:
    """A kit started as a background job of a non-interactive shell (``cmd &``) has SIGINT ignored, and
    every process it starts inherits that: the sides restore a terminal program's signal state first."""
    _require_namespaces()
    ctx = _context("D1", "after-keyboard-interrupt")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `cmd &` hands it to the kit
    try:
        _check("D1", "after-keyboard-interrupt")(ctx)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert ctx.figures and "from the SIGINT to the algorithm side" in ctx.figures[0]


def test_a_side_started_ahead_is_built_but_calls_execute_only_once_released() -> None:
    """Runner sides start beside the algorithm side (their imports overlap its start-up) but call
    ``execute()`` only when the check releases them: what D measures still starts at ``side execute``."""
    _require_namespaces()
    ctx = _context("D4")
    sides = host_runs.require_hosts(ctx)
    hang = 60.0
    with host_runs.HostRun(ctx, sides, 2, algorithm=POLL, runner=POLL) as run:
        run.start(1, "runner", ahead=True)
        ready = run.wait_record(lambda r: r.bundle == "h1 side" and r.kind == "ready", hang, "ready")
        assert ready is not None, run.logs()
        # Built and waiting: it has not called execute() (a runner side would try the absent store).
        assert [r.kind for r in run.journal()] == ["ready"]
        assert run.processes[1].poll() is None
        run.release(1)
        executed = run.wait_record(lambda r: r.bundle == "h1 side" and r.kind == "execute", hang, "execute")
        assert executed is not None and executed.t >= ready.t, run.logs()
        # No store listens: the released side fails as D4 expects, so it ends on its own.
        assert run.wait_side(1, hang) is not None, run.logs()


def test_a_scenario_whose_runner_sides_miss_the_stop_is_blocked_by_D1_not_waited_out() -> None:
    """D5's scenario ends with the algorithm side's return; runner sides that never hear the stop (the
    D1 specimen) would keep it waiting: past D1's bound it is reported blocked by D1, naming the host."""
    _require_namespaces()
    deaf = "strategies.broken.d1_runner_side_misses_remote_stop.RunnerSideMissesRemoteStopStrategy"
    with pytest.raises(Blocked, match=r"blocked by D1 \(remote-stop\): the runner side on host 1 still ran"):
        _check("D5")(_context("D5", strategy=deaf))


def test_a_cut_off_runner_whose_attempt_is_never_given_up_blocks_D3_on_D2_not_the_hang_bound() -> None:
    """D3's long partition ends with the algorithm side giving up the cut-off runner's attempt (D2's
    contract): a strategy that never does (the D2 specimen) is reported blocked by D2 once D2's bound
    has passed, instead of waiting out the algorithm's 60 s hang bound."""
    _require_namespaces()
    forgetful = "strategies.broken.d2_host_loss_loses_rollout.HostLossLosesRolloutStrategy"
    with pytest.raises(
        Blocked, match=r"blocked by D2 \(host-loss\): the runner side cut off for good exited"
    ):
        _check("D3", "long")(_context("D3", "long", strategy=forgetful))
