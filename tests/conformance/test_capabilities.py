"""The capability manifest: unknown keys and wrong types are errors naming them; defaults are strictest."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from conformance.capabilities import (
    CAPABILITY_DEFAULTS,
    STORE_CAPABILITY_DEFAULTS,
    CapabilityError,
    read_capabilities,
    read_store_capabilities,
    validate_manifest,
)


def test_undeclared_capabilities_take_the_strictest_reading() -> None:
    assert validate_manifest({}) == {
        "uses_processes": True,
        "shares_caller_store": True,
        "can_cancel_blocking_code": True,
        "supports_start_methods": ("fork", "spawn", "forkserver"),
        "supports_unmanaged_store": True,
        "grace_seconds": 2.0,
        "terminate_seconds": 2.0,
        "join_seconds": 5.0,
        "start_seconds": 0.0,
        "runs_on_many_hosts": True,
        "host_sides": None,
        "host_test_options": None,
        "host_loss_seconds": 10.0,
        "host_loss_policy": "raise",
        "partition_seconds": 2.0,
        "late_store_seconds": 10.0,
    }
    assert validate_manifest(None) == dict(CAPABILITY_DEFAULTS)


def test_declared_values_are_kept_and_normalised() -> None:
    manifest = validate_manifest(
        {"uses_processes": False, "supports_start_methods": ["spawn", "fork"], "grace_seconds": 1}
    )
    assert manifest["uses_processes"] is False
    assert manifest["supports_start_methods"] == ("fork", "spawn")  # canonical order
    assert manifest["grace_seconds"] == 1.0
    assert isinstance(manifest["grace_seconds"], float)


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("uses_process", "uses_processes"),
        ("share_caller_store", "shares_caller_store"),
        ("grace_second", "grace_seconds"),
        ("supports_start_method", "supports_start_methods"),
    ],
)
def test_misspelled_key_names_it_and_suggests_the_close_match(key: str, suggestion: str) -> None:
    with pytest.raises(CapabilityError) as error:
        validate_manifest({key: True}, owner="Mine.capabilities")
    message = str(error.value)
    assert message.startswith("Mine.capabilities: unknown capability")
    assert repr(key) in message
    assert f"did you mean {suggestion!r}?" in message


def test_unrelated_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(
        CapabilityError, match=r"unknown capability 'colour' \(known: can_cancel_blocking_code"
    ):
        validate_manifest({"colour": "blue"})


@pytest.mark.parametrize(
    ("manifest", "named"),
    [
        ({"uses_processes": "yes"}, "'uses_processes' must be a bool, got 'yes'"),
        ({"shares_caller_store": 1}, "'shares_caller_store' must be a bool"),
        ({"grace_seconds": True}, "'grace_seconds' must be a number of seconds"),
        ({"join_seconds": "5"}, "'join_seconds' must be a number of seconds"),
        ({"terminate_seconds": -1}, "'terminate_seconds' must be finite and >= 0"),
        ({"grace_seconds": float("inf")}, "'grace_seconds' must be finite"),
        ({"supports_start_methods": "fork"}, "'supports_start_methods' must be a list"),
        ({"supports_start_methods": ["fork", "thread"]}, "unknown start method 'thread'"),
    ],
)
def test_wrong_value_types_are_errors_naming_the_key(manifest: dict[str, Any], named: str) -> None:
    with pytest.raises(CapabilityError) as error:
        validate_manifest(manifest)
    assert named in str(error.value)


def test_a_manifest_must_be_a_mapping() -> None:
    with pytest.raises(CapabilityError, match="must be a mapping"):
        validate_manifest(["uses_processes"])


def test_instance_property_wins_over_the_class_manifest() -> None:
    class Declared:
        capability_manifest = {"uses_processes": False}

        @property
        def capabilities(self) -> dict[str, Any]:
            return {**self.capability_manifest, "grace_seconds": 0.25}

    class ClassOnly:
        capability_manifest = {"shares_caller_store": False}

    class Silent:
        pass

    assert read_capabilities(Declared())["grace_seconds"] == 0.25
    assert read_capabilities(ClassOnly())["shares_caller_store"] is False
    assert read_capabilities(ClassOnly)["shares_caller_store"] is False
    assert read_capabilities(Silent()) == dict(CAPABILITY_DEFAULTS)


def test_the_error_names_where_the_manifest_came_from() -> None:
    class Typo:
        capability_manifest = {"uses_proceses": True}

    with pytest.raises(
        CapabilityError, match=r"Typo\.capability_manifest: unknown capability 'uses_proceses'"
    ):
        read_capabilities(Typo())


@pytest.mark.skipif(
    importlib.util.find_spec("agentlightning.execution.base") is None,
    reason="agentlightning is not importable",
)
def test_known_keys_match_the_runtime_declaration() -> None:
    from agentlightning.execution.base import CAPABILITY_NAMES

    assert set(CAPABILITY_DEFAULTS) == set(CAPABILITY_NAMES)


def test_a_store_manifest_has_its_own_keys_and_defaults() -> None:
    assert validate_manifest({}, defaults=STORE_CAPABILITY_DEFAULTS) == {
        "durable": False,
        "thread_safe": True,
    }
    with pytest.raises(CapabilityError, match=r"unknown capability 'durabel'; did you mean 'durable'\?"):
        validate_manifest(
            {"durabel": True}, owner="Db.capability_manifest", defaults=STORE_CAPABILITY_DEFAULTS
        )
    with pytest.raises(CapabilityError, match="'thread_safe' must be a bool, got 'yes'"):
        validate_manifest({"thread_safe": "yes"}, defaults=STORE_CAPABILITY_DEFAULTS)
    with pytest.raises(CapabilityError, match="unknown capability 'uses_processes'"):
        validate_manifest({"uses_processes": True}, defaults=STORE_CAPABILITY_DEFAULTS)


def test_a_stores_thread_safe_attribute_stands_in_for_an_undeclared_key() -> None:
    class Confined:
        thread_safe = False

    class Declared(Confined):
        capability_manifest = {"thread_safe": True, "durable": True}

    class Plain:
        pass

    assert read_store_capabilities(Confined()) == {"durable": False, "thread_safe": False}
    assert read_store_capabilities(Declared()) == {"durable": True, "thread_safe": True}
    assert read_store_capabilities(Plain()) == {"durable": False, "thread_safe": True}


def test_start_seconds_lengthens_each_runs_hang_bound_and_nothing_else() -> None:
    """A cluster strategy's start-up (``start_seconds``) is allowed once per run before a run counts as
    hung: R6's twenty runs get it twenty times; a contract's own bound never sees it."""
    from conformance.checks import CheckContext
    from conformance.contracts import resources
    from conformance.contracts._engine import hang_bound
    from conformance.scenarios import Scenario
    from conformance.target import make_target

    target = make_target("shm", {})

    def context(start: float, scale: float = 1.0) -> CheckContext:
        caps = validate_manifest({"start_seconds": start})
        return CheckContext("R6", "", target, caps, timeout_scale=scale)

    assert hang_bound(context(5.0)) == hang_bound(context(0.0)) + 5.0
    assert hang_bound(context(5.0, scale=2.0)) == hang_bound(context(0.0, scale=2.0)) + 2.5
    assert context(5.0).bound(3.0) == context(0.0).bound(3.0)

    seen: list[Scenario] = []

    class _Seen(Exception):
        pass

    def r6_bound(ctx: CheckContext) -> float:
        def run(scenario: Scenario, **_: Any) -> Any:
            seen.append(scenario)
            raise _Seen

        object.__setattr__(ctx, "run", run)
        with pytest.raises(_Seen):
            resources.check_repeat_stable(ctx)
        return seen[-1].hang_bound

    assert r6_bound(context(5.0)) == pytest.approx(r6_bound(context(0.0)) + 5.0 * 20)
    with pytest.raises(CapabilityError, match="start_seconds"):
        validate_manifest({"start_seconds": -1.0})
