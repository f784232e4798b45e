"""One store check in its sandbox: a finding, a store error and a hang each come back as a T verdict."""

from __future__ import annotations

import os
import sys

import pytest

from conformance.capabilities import STORE_CAPABILITY_DEFAULTS
from conformance.checks import CheckContext
from conformance.scenarios import Target
from conformance.store_job import run_store_check
from conformance.verdicts import ContractFailed

sys.path.insert(0, os.path.dirname(__file__))  # store_probes must import in the sandbox too

from store_probes import clients_from_a_thread, fails_with_a_finding, hangs_in_a_client, store_raises

_TARGET = Target("", store_factory="agentlightning.store.memory:InMemoryLightningStore")


def _ctx(situation: str, scale: float = 1.0) -> CheckContext:
    return CheckContext("T1", situation, _TARGET, dict(STORE_CAPABILITY_DEFAULTS), timeout_scale=scale)


def test_a_finding_of_the_body_fails_the_check_with_its_figure() -> None:
    with pytest.raises(ContractFailed) as failed:
        run_store_check(_ctx("http"), fails_with_a_finding)
    assert (failed.value.expected, failed.value.observed, failed.value.figure) == (
        "the probe to fail",
        "it failed",
        "1 of 1",
    )
    assert failed.value.render().startswith("T1 state-machine\n  expected: the probe to fail")


def test_an_unexpected_store_error_fails_the_check_naming_what_it_was_doing() -> None:
    with pytest.raises(ContractFailed) as failed:
        run_store_check(_ctx("ipc"), store_raises)
    assert failed.value.observed.startswith(
        "while asking for an unknown rollout's attempt: builtins.ValueError: unknown rollout id"
    )
    assert "store_raises" in failed.value.details


def test_a_hung_store_check_is_killed_and_reported_with_every_stack() -> None:
    # 60 s hang bound x 0.05: the sandbox gives up after 3 s.
    with pytest.raises(ContractFailed) as failed:
        run_store_check(_ctx("in-process", scale=0.05), hangs_in_a_client, process_clients=0)
    assert failed.value.observed == (
        "it hung while running a client that never returns on the in-process path and was killed with "
        "its process group"
    )
    assert "in _thread_client" in failed.value.details  # the client thread's stack
    assert "in run_store_job" in failed.value.details  # the body's thread


def test_synchronous_code_in_a_thread_can_run_clients_through_the_path() -> None:
    with pytest.raises(ContractFailed) as reported:  # the probe reports what it saw as its "finding"
        run_store_check(_ctx("http"), clients_from_a_thread, process_clients=2)
    assert reported.value.observed == "['process', 'process', 'thread'] True"


def test_t9_explores_through_a_path_shrinks_and_names_the_replay_command() -> None:
    from conformance.contracts.store_history import PROCESS_CLIENTS, _history

    broken = Target(
        "", store_factory="strategies.broken_stores.t4_wait_returns_unfinished:WaitReturnsUnfinishedStore"
    )
    ctx = CheckContext("T9", "ipc", broken, dict(STORE_CAPABILITY_DEFAULTS), seed=3)
    with pytest.raises(ContractFailed) as failed:
        run_store_check(ctx, _history, process_clients=PROCESS_CLIENTS)
    assert failed.value.observed.startswith("the minimal workload's history breaks T4: T4 wait:")
    assert "workload(s) of the conformance-ci profile, shrunk in" in failed.value.figure
    details = failed.value.details
    assert "minimal workload:" in details and "its history (! = named above)" in details
    command = details.split("replay:\n", 1)[1].strip()
    replay = f"pytest --store={broken.store_factory} --conformance-only --conformance-replay b64:"
    assert command.startswith(replay)
    assert command.endswith("-k 'T9 and ipc'")
