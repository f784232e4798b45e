"""Environment overrides: parsed in one place, invalid values named with their variable."""

from __future__ import annotations

from pathlib import Path

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
    assert env.AGL_SERVER_TOKEN.is_set({"AGL_SERVER_TOKEN": "s3cret-shared-token"})
    assert not env.AGL_SERVER_TOKEN.is_set({})


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGL_MANAGED_STORE", "false")
    assert env.managed_store_default() is False


def test_a_secret_is_never_repeated_in_its_error() -> None:
    with pytest.raises(
        ValueError, match=r"AGL_SERVER_TOKEN \(value hidden, 9 characters\).*at least 16"
    ) as bad:
        env.AGL_SERVER_TOKEN.get(None, {"AGL_SERVER_TOKEN": "s3cret-42"})
    assert "s3cret-42" not in str(bad.value)
    token = "a-long-enough-shared-token"
    assert env.AGL_SERVER_TOKEN.get(None, {"AGL_SERVER_TOKEN": f" {token}\n"}) == token


@pytest.mark.parametrize(
    "token", ["", "x" * 15, "with a space-0123456", "tab\there-0123456789", 12345678901234567]
)
def test_check_token_names_the_parameter(token: object) -> None:
    with pytest.raises(ValueError, match=r"^server_token must"):
        env.check_token(token, "server_token")


def test_tls_files_must_exist(tmp_path: Path) -> None:
    missing = f"{tmp_path}/nowhere.pem"
    for var in (env.AGL_SERVER_TLS_CERT, env.AGL_SERVER_TLS_KEY, env.AGL_SERVER_TLS_CA):
        with pytest.raises(ValueError, match=rf"{var.name}=.*nowhere\.pem.*existing file"):
            var.get(None, {var.name: missing})
    assert env.AGL_SERVER_TLS_CA.get(None, {"AGL_SERVER_TLS_CA": __file__}) == __file__
