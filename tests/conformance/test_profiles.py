"""Run profiles: the registry, their plan sizes on a reference strategy, and the plugin's option."""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest

from conformance.checks import load_checks
from conformance.plan import compute_plan, select_for_profile
from conformance.profiles import DEFAULT_PROFILE, PROFILES, Profile, get_profile, register_profile

HAS_SHM = importlib.util.find_spec("agentlightning.execution") is not None


def test_the_four_profiles_are_registered_and_ci_is_the_default() -> None:
    assert list(PROFILES)[:4] == ["quick", "ci", "thorough", "certify"]
    assert DEFAULT_PROFILE == "ci"
    assert get_profile("certify").flaky_fails and get_profile("certify").repeat > 1
    assert not get_profile("ci").flaky_fails and get_profile("ci").repeat == 1


def test_an_unknown_profile_names_itself_and_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown conformance profile 'fast'; known profiles: quick, ci"):
        get_profile("fast")


@pytest.mark.parametrize(
    ("field", "value"),
    [("situations", "some"), ("p1_examples", 0), ("p1_budget", 0.0), ("repeat", 0), ("perturb", "always")],
)
def test_a_bad_profile_setting_is_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"profile 'x': {field}"):
        Profile("x", "bad", **{field: value})  # type: ignore[arg-type]


def test_the_perturbation_is_p1s_in_ci_and_the_whole_catalogues_in_thorough_and_certify() -> None:
    from conformance.profiles import perturb_text

    assert get_profile("ci").perturb == "p1" and get_profile("quick").perturb == "p1"
    assert get_profile("thorough").perturb == "all" and get_profile("certify").perturb == "all"
    assert get_profile("certify").to_dict()["perturb"] == "all"
    assert "fixed catalogue runs unperturbed" in perturb_text("p1")
    assert "low-rate" in perturb_text("all") and perturb_text("off").startswith("off")


def test_register_profile_adds_a_named_settings_object() -> None:
    custom = register_profile(Profile("nightly-test-only", "deeper P1", p1_examples=2000))
    try:
        assert get_profile("nightly-test-only") is custom
        assert custom.p1_options() == {"examples": 2000}
    finally:
        del PROFILES["nightly-test-only"]


def test_p1_options_follow_the_profile() -> None:
    assert get_profile("quick").p1_options() == {"examples": 5}
    assert get_profile("ci").p1_options() == {"budget": 20.0, "max_examples": 100}
    assert get_profile("thorough").p1_options()["examples"] >= 100


@pytest.mark.skipif(not HAS_SHM, reason="agentlightning.execution is not importable")
def test_profile_plan_sizes_on_shm() -> None:
    from conformance.target import make_target, validate_target

    resolved = validate_target(make_target("shm", []))
    checks = [c for c in load_checks() if not c.contract_id.startswith("T")]
    plan = compute_plan(checks, resolved.capabilities, resolved.strategy_class)
    runnable = [e for e in plan if e.status != "n/a"]
    contracts = {e.contract_id for e in runnable}
    for name in ("ci", "thorough", "certify"):
        kept, left_out = select_for_profile(plan, get_profile(name))
        assert kept == plan and left_out == []
    kept, left_out = select_for_profile(plan, get_profile("quick"))
    per_contract = Counter(e.contract_id for e in kept if e.status != "n/a")
    assert set(per_contract) == contracts and set(per_contract.values()) == {1}
    assert len(kept) + len(left_out) == len(plan)
    assert len(left_out) == len(runnable) - len(contracts) > 20
    assert all(e.status == "n/a" for e in plan if e not in kept and e not in left_out) is True
    # every n/a stays in the plan with its reason, whatever the profile
    assert [e for e in plan if e.status == "n/a"] == [e for e in kept if e.status == "n/a"]
