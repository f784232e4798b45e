"""Environment overrides: parsed in one place, invalid values named with their variable."""

from __future__ import annotations

import pytest

from agentlightning import env


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("TRUE", True), (" yes ", True), ("0", False), ("off", False)]
)
def test_managed_store_parses_booleans(raw: str, expected: bool) -> None:
    assert env.managed_store_default({"AGL_MANAGED_STORE": raw}) is expected


def test_unset_or_empty_means_default() -> None:
    assert env.managed_store_default({}) is True
    assert env.managed_store_default({"AGL_MANAGED_STORE": "  "}) is True
    assert env.AGL_SERVER_PORT.get(4747, {}) == 4747


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        (env.AGL_MANAGED_STORE, "maybe"),
        (env.AGL_SERVER_PORT, "http"),
        (env.AGL_SERVER_PORT, "70000"),
        (env.AGL_SERVER_PORT, "-1"),
        (env.AGL_CURRENT_ROLE, "driver"),
    ],
)
def test_invalid_values_name_variable_and_value(var: env.EnvVar[object], raw: str) -> None:
    with pytest.raises(ValueError, match=rf"invalid environment variable {var.name}={raw!r}"):
        var.get(None, {var.name: raw})


def test_valid_values() -> None:
    assert env.AGL_SERVER_PORT.get(0, {"AGL_SERVER_PORT": " 8080 "}) == 8080
    assert env.AGL_CURRENT_ROLE.get("both", {"AGL_CURRENT_ROLE": "Runner"}) == "runner"
    assert env.AGL_SERVER_HOST.get("127.0.0.1", {"AGL_SERVER_HOST": "0.0.0.0"}) == "0.0.0.0"
    assert env.AGL_SERVER_TOKEN.is_set({"AGL_SERVER_TOKEN": "s3cret"})
    assert not env.AGL_SERVER_TOKEN.is_set({})


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGL_MANAGED_STORE", "false")
    assert env.managed_store_default() is False
