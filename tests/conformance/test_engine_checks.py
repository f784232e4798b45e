"""The engine's contract checks (L, K, E, R, F) pass a good tiny strategy and fail broken ones for the
right contract, with the offender named in the message."""

from __future__ import annotations

import os
import sys

import pytest

from conformance.capabilities import validate_manifest
from conformance.checks import CheckContext, load_checks
from conformance.plan import compute_plan
from conformance.scenarios import Target
from conformance.verdicts import ContractFailed

sys.path.insert(0, os.path.dirname(__file__))  # engine_strategies must import in the sandbox too

import engine_strategies

_CHECKS = {(spec.contract_id, spec.situation): spec.function for spec in load_checks()}


def _run(contract_id: str, situation: str, strategy: str, scale: float = 1.0, **caps: object) -> None:
    """Run one registered check; ``scale`` < 1 only where the strategy fails anyway (hang bounds shrink)."""
    cls = getattr(engine_strategies, strategy)
    manifest = {**cls.capability_manifest, **caps}
    ctx = CheckContext(
        contract_id,
        situation,
        Target(
            f"engine_strategies:{strategy}",
            store_factory="agentlightning.store.memory:InMemoryLightningStore",
        ),
        validate_manifest(manifest),
        timeout_scale=scale,
    )
    _CHECKS[(contract_id, situation)](ctx)


@pytest.mark.parametrize(
    ("contract_id", "situation"),
    [
        ("L1", "several-runners"),
        ("L2", "one-runner"),
        ("L3", "several-runners"),
        ("L4", "set-by-runner"),
        ("L5", "default"),
        ("K1", "several-runners"),
        ("K3", "while-running"),
        ("K3", "before-start"),
        ("E1", "several-runners"),
        ("E5", "runner"),
        ("E6", "algorithm"),
        ("R1", "after-return"),
        ("R7", "after-keyboard-interrupt"),
    ],
)
def test_good_loop_strategy_passes(contract_id, situation):
    _run(contract_id, situation, "LoopStrategy")


def test_thread_leak_fails_r1_naming_the_thread():
    with pytest.raises(ContractFailed) as failed:
        _run("R1", "after-return", "LeakyThreadStrategy")
    assert failed.value.contract_id == "R1"
    assert "'leaky-thread'" in failed.value.render()


def test_zombie_fails_r2_naming_the_pid():
    with pytest.raises(ContractFailed) as failed:
        _run("R2", "after-return", "ZombieStrategy")
    assert failed.value.render().count("zombie") >= 1 and "pid " in failed.value.render()


def test_changed_signal_handler_fails_r7():
    with pytest.raises(ContractFailed) as failed:
        _run("R7", "after-return", "StateChangingStrategy")
    assert "SIGTERM handler" in failed.value.render()


def test_caller_connection_closed_by_execute_fails_r7():
    with pytest.raises(ContractFailed) as failed:
        _run("R7", "after-return", "ConnectionClosingStrategy")
    assert "caller's cluster connection: was connected to fake-cluster:6379, now not connected" in (
        failed.value.render()
    )


def test_caller_connection_kept_passes_r7():
    _run("R7", "after-return", "CallerConnectedStrategy")


def test_hang_fails_l2_with_stacks_in_the_message():
    with pytest.raises(ContractFailed) as failed:
        _run(
            "L2",
            "one-runner",
            "HangingStrategy",
            0.1,
            grace_seconds=0.1,
            terminate_seconds=0.1,
            join_seconds=0.1,
        )
    text = failed.value.render()
    assert "hung" in text and "_park_forever" in text


def test_orphaned_workers_fail_f4():
    with pytest.raises(ContractFailed) as failed:
        _run(
            "F4",
            "default",
            "ProcessStrategy",
            0.1,
            grace_seconds=0.1,
            terminate_seconds=0.1,
            join_seconds=0.1,
        )
    assert "still alive" in failed.value.render()


def test_f_contracts_are_not_applicable_without_processes():
    # Decided by the plan from the catalogue entry, before any check runs: F checks never see a thread
    # strategy.
    manifest = validate_manifest(engine_strategies.LoopStrategy.capability_manifest)
    planned = {(e.contract_id, e.status, e.capability) for e in compute_plan(load_checks(), manifest)}
    assert {(f"F{i}", "n/a", "uses_processes") for i in range(1, 5)} <= planned
    assert not any(cid.startswith("F") and status != "n/a" for cid, status, _ in planned)
