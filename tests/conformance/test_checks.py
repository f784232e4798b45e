"""The check registry, ``CheckContext`` and the plan computed from capabilities."""

from __future__ import annotations

from typing import Any

import pytest

from conformance import checks as checks_module
from conformance.capabilities import validate_manifest
from conformance.catalogue import CATALOGUE
from conformance.checks import CheckContext, CheckSpec, contract, load_checks, runners_for_situation
from conformance.plan import compute_plan, unimplemented_contracts
from conformance.scenarios import JournalRecord, Scenario, ScenarioResult, Target
from conformance.verdicts import ContractFailed, DeclaredLimitation, NotApplicable


@pytest.fixture
def empty_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks_module, "_REGISTRY", {})


def _context(situation: str = "default", seed: int = 5, **caps: Any) -> CheckContext:
    return CheckContext(
        "L2", situation, Target("pkg.Strategy"), validate_manifest(caps), timeout_scale=2.0, seed=seed
    )


@pytest.mark.usefixtures("empty_registry")
def test_contract_registers_one_spec_per_situation_in_catalogue_order() -> None:
    @contract("S1", situations=("several-runners",))
    def check_s1(ctx: CheckContext) -> None: ...

    @contract("L2", situations=("one-runner", "several-runners"))
    def check_l2(ctx: CheckContext) -> None: ...

    names = [spec.item_name for spec in checks_module.registered_checks()]
    assert names == [
        "L2-normal-completion[one-runner]",
        "L2-normal-completion[several-runners]",
        "S1-exactly-once[several-runners]",
    ]
    contract("L2", situations=("one-runner",))(check_l2)  # the same function again: harmless


@pytest.mark.usefixtures("empty_registry")
def test_a_check_takes_its_situations_from_the_catalogue() -> None:
    @contract("K3")
    def check_k3(ctx: CheckContext) -> None: ...

    assert [spec.situation for spec in checks_module.registered_checks()] == list(CATALOGUE["K3"].situations)


@pytest.mark.usefixtures("empty_registry")
@pytest.mark.parametrize(
    ("contract_id", "situations", "named"),
    [
        ("Z9", ("default",), "unknown contract ID 'Z9'"),
        ("L2", (), "situations must not be empty"),
        ("L2", ("Bad Name",), "situation 'Bad Name' must be a lowercase slug"),
        ("L2", ("a", "a"), "duplicate situations"),
        (
            "L2",
            ("default",),
            r"situation 'default' is not in its catalogue entry \['one-runner', 'several-runners'\]",
        ),
    ],
)
def test_bad_registrations_are_refused(contract_id: str, situations: tuple[str, ...], named: str) -> None:
    with pytest.raises((ValueError, KeyError), match=named):
        contract(contract_id, situations=situations)


@pytest.mark.usefixtures("empty_registry")
def test_a_second_check_for_the_same_item_is_refused() -> None:
    @contract("L3", situations=("several-runners",))
    def first(ctx: CheckContext) -> None: ...

    def second(ctx: CheckContext) -> None: ...

    with pytest.raises(ValueError, match=r"L3 \[several-runners\] is already checked by .*first"):
        contract("L3", situations=("several-runners",))(second)


@pytest.mark.parametrize(
    ("situation", "runners"),
    [("one-runner", 1), ("several-runners", 3), ("2-runners", 2), ("while-running", 2), ("default", 2)],
)
def test_runner_count_follows_the_situation(situation: str, runners: int) -> None:
    assert runners_for_situation(situation) == runners


def test_context_bounds_randomness_and_names() -> None:
    ctx = _context("one-runner")
    assert (ctx.name, ctx.title, ctx.n_runners) == ("normal-completion", "L2 normal-completion", 1)
    assert ctx.bound(1.5) == 3.0
    replay = _context("one-runner")
    assert [ctx.random.random() for _ in range(3)] == [replay.random.random() for _ in range(3)]
    assert _context("one-runner", seed=6).random.random() != _context("one-runner").random.random()
    assert _context("several-runners").random.random() != _context("one-runner").random.random()


def test_require_not_applicable_and_limitation() -> None:
    ctx = _context(uses_processes=False, supports_start_methods=["fork"])
    ctx.require("shares_caller_store", True, "unused")
    ctx.require("supports_start_methods", "fork", "unused")
    with pytest.raises(NotApplicable, match=r"n/a \(uses_processes\): no processes"):
        ctx.require("uses_processes", True, "no processes")
    with pytest.raises(NotApplicable, match="supports_start_methods"):
        ctx.require("supports_start_methods", "spawn", "spawn not declared")
    with pytest.raises(DeclaredLimitation, match=r"limitation \(declared: can_cancel_blocking_code\): stuck"):
        ctx.limitation("can_cancel_blocking_code", "stuck")


def test_the_declared_limitation_is_the_catalogue_entrys() -> None:
    def l7(**caps: Any) -> CheckContext:
        return CheckContext("L7", "default", Target("pkg.Strategy"), validate_manifest(caps))

    assert l7(can_cancel_blocking_code=False).limited and not l7().limited
    assert not _context(can_cancel_blocking_code=False).limited  # L2 declares no limitation
    with pytest.raises(DeclaredLimitation) as limited:
        l7(can_cancel_blocking_code=False).declare_limitation("left a thread behind")
    assert (limited.value.capability, limited.value.reason) == (
        "can_cancel_blocking_code",
        "left a thread behind",
    )
    with pytest.raises(ValueError, match="L2 declares no limitation_unless capability"):
        _context().declare_limitation("anything")


def test_fail_renders_expected_observed_figure_and_timeline() -> None:
    journal = (
        JournalRecord(10.0, 11, "MainThread", "algorithm", "start"),
        JournalRecord(10.5, 11, "MainThread", "algorithm", "end", "returned"),
    )
    result = ScenarioResult(
        Scenario("L2"), "hang", 30.0, journal=journal, stacks="Thread 0x1 (most recent call first)"
    )
    with pytest.raises(ContractFailed) as error:
        _context().fail(
            expected="returns within 1 s", observed="hung", figure="30.0 s > 1.0 s", result=result
        )
    text = error.value.render()
    lines = text.splitlines()
    assert lines[:4] == [
        "L2 normal-completion",
        "  expected: returns within 1 s",
        "  observed: hung",
        "  measured: 30.0 s > 1.0 s",
    ]
    assert "Thread 0x1 (most recent call first)" in text
    assert "algorithm" in text and "end returned" in text


def test_plan_marks_not_applicable_and_limitations_from_capabilities() -> None:
    def noop(ctx: CheckContext) -> None: ...

    specs = [
        CheckSpec("F1", "several-runners", noop),
        CheckSpec("F3", "spawn", noop),
        CheckSpec("L7", "default", noop),
        CheckSpec("S3", "one-runner", noop),
        CheckSpec("S6", "default", noop),
        CheckSpec("G3", "default", noop),
        CheckSpec("L2", "one-runner", noop),
    ]
    threads = compute_plan(
        specs,
        validate_manifest(
            {
                "uses_processes": False,
                "can_cancel_blocking_code": False,
                "shares_caller_store": False,
                "supports_unmanaged_store": False,
            }
        ),
    )
    # Catalogue order; F2 and F4 have no check here but the capabilities exclude them: planned n/a too.
    assert [(e.item_name, e.status, e.capability) for e in threads] == [
        ("L2-normal-completion[one-runner]", "run", ""),
        ("L7-blocking-bundle[default]", "limitation", "can_cancel_blocking_code"),
        ("S3-caller-store-updated[one-runner]", "n/a", "shares_caller_store"),
        ("S6-unmanaged-store[default]", "n/a", "supports_unmanaged_store"),
        ("F1-worker-killed[several-runners]", "n/a", "uses_processes"),
        ("F2-port-in-use[default]", "n/a", "uses_processes"),
        ("F3-start-methods[spawn]", "n/a", "uses_processes"),
        ("F4-parent-death[default]", "n/a", "uses_processes"),
        ("G3-picklable[default]", "n/a", "uses_processes"),
    ]
    processes = compute_plan(specs, validate_manifest({"supports_start_methods": ["fork"]}))
    assert {e.item_name: e.status for e in processes}["F3-start-methods[spawn]"] == "n/a"
    assert all(e.status == "run" for e in processes if e.contract_id != "F3")


def test_every_section_but_p_has_checks_registered() -> None:
    unimplemented = unimplemented_contracts(load_checks())
    assert unimplemented in ([], ["P1"])  # section D included: its checks run on namespace test hosts
