"""``host_test_options``: the constructor options a strategy declares for section D's test hosts.

Validated with the manifest (a bad one is an error naming it); merged under the user's options (the
user's win); the bounds section D checks are those the strategy built with the merge declares; the
header says which options section D ran with and why; ``certify`` runs section D at the defaults; the
plugin hands the merged target and its capabilities to the D checks only.
"""

from __future__ import annotations

import types
from typing import Any

import pytest

from agentlightning.execution.client_server import ClientServerExecutionStrategy
from conformance.capabilities import CapabilityError, read_capabilities, validate_manifest
from conformance.checks import load_checks
from conformance.host_options import HostOptions, resolve_host_options
from conformance.plugin import ConformanceSession, UnderTest
from conformance.profiles import get_profile
from conformance.target import TargetError, make_target
from conformance.waivers import Waivers

_SIDES: dict[str, Any] = {
    "algorithm": {"options": {"role": "algorithm", "port": "{port}"}},
    "runner": {"options": {"role": "runner", "port": "{port}"}},
}


class _Timed:
    """A multi-host strategy whose bounds follow from ``wait`` (as ``cs``'s from ``connect_timeout``)."""

    capability_manifest: dict[str, Any] = {"host_sides": _SIDES, "host_test_options": {"wait": 2.0}}

    def __init__(self, n_runners: int = 1, wait: float = 10.0, loss: float = 20.0) -> None:
        if wait <= 0:
            raise ValueError(f"wait must be > 0 seconds; got {wait!r}")
        if loss <= wait:
            raise ValueError(f"loss must exceed wait; got loss={loss!r} with wait={wait!r}")
        self.n_runners, self.wait, self.loss = n_runners, wait, loss

    @property
    def capabilities(self) -> dict[str, Any]:
        return {
            **self.capability_manifest,
            "late_store_seconds": self.wait,
            "partition_seconds": self.wait / 2,
            "host_loss_seconds": self.loss,
        }

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        raise NotImplementedError("only built, never executed")


def _resolve(cls: type, options: dict[str, Any] | None = None, *, at_defaults: bool = False) -> HostOptions:
    target = make_target(f"{__name__}.{cls.__qualname__}", options or {})
    return resolve_host_options(
        cls, target, read_capabilities(cls(**target.options)), at_defaults=at_defaults
    )


def _with_options(declared: dict[str, Any], name: str = "Declaring") -> type:
    cls = type(
        name, (_Timed,), {"capability_manifest": {"host_sides": _SIDES, "host_test_options": declared}}
    )
    globals()[name] = cls  # resolvable by its dotted path, as the kit resolves a SPEC
    return cls


# -- the manifest -------------------------------------------------------------------------------------


def test_undeclared_host_test_options_are_none_and_a_declaration_is_kept() -> None:
    assert validate_manifest({})["host_test_options"] is None
    declared = validate_manifest({"host_test_options": {"connect_timeout": 2, "mode": ["a"]}})
    assert declared["host_test_options"] == {"connect_timeout": 2, "mode": ["a"]}


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([("connect_timeout", 2)], "host_test_options must be a mapping of constructor parameters"),
        ({"connect-timeout": 2}, "'connect-timeout' is not a parameter name"),
        ({"n_runners": 2}, "'n_runners' cannot be set here: the kit sets it per side"),
        ({"server_host": "{address}"}, "host_test_options.server_host: '{address}' uses a placeholder"),
        ({"connect_timeout": object()}, "host_test_options.connect_timeout must be JSON-like"),
    ],
)
def test_an_invalid_declaration_is_an_error_naming_the_option(value: Any, fragment: str) -> None:
    with pytest.raises(CapabilityError, match="Mine: host_test_options") as error:
        validate_manifest({"host_test_options": value}, owner="Mine")
    assert fragment in str(error.value)


def test_an_option_host_sides_already_places_is_an_error_naming_it() -> None:
    with pytest.raises(CapabilityError, match=r"host_test_options' sets 'role', which 'host_sides' already"):
        validate_manifest({"host_sides": _SIDES, "host_test_options": {"role": "runner"}})


def test_test_options_on_a_single_machine_strategy_are_an_error() -> None:
    with pytest.raises(CapabilityError, match=r"'runs_on_many_hosts' is False \(section D is n/a\)"):
        validate_manifest({"runs_on_many_hosts": False, "host_test_options": {"wait": 1.0}})


# -- merging and the bounds section D checks --------------------------------------------------------------


def test_declared_options_go_under_the_users_and_the_bounds_are_the_built_strategys() -> None:
    cls = _with_options({"wait": 2.0, "loss": 5.0})
    host = _resolve(cls)
    assert host.target.options == {"wait": 2.0, "loss": 5.0}
    assert (host.applied, host.overridden) == ({"wait": 2.0, "loss": 5.0}, {})
    assert (host.capabilities["late_store_seconds"], host.capabilities["host_loss_seconds"]) == (2.0, 5.0)
    user = _resolve(cls, {"wait": 3.0, "n_runners": 2})
    assert user.target.options == {"loss": 5.0, "wait": 3.0, "n_runners": 2}  # the user's value wins
    assert (user.applied, user.overridden) == ({"loss": 5.0}, {"wait": 3.0})
    assert (user.capabilities["late_store_seconds"], user.capabilities["partition_seconds"]) == (3.0, 1.5)


def test_at_defaults_or_without_a_declaration_section_d_runs_with_the_users_options_alone() -> None:
    cls = _with_options({"wait": 2.0, "loss": 5.0})
    defaults = _resolve(cls, {"n_runners": 2}, at_defaults=True)
    assert defaults.target.options == {"n_runners": 2}
    assert defaults.capabilities["late_store_seconds"] == 10.0
    plain = _resolve(_with_options({}, "Plain"))
    assert (plain.declared, plain.target.options, plain.capabilities["late_store_seconds"]) == ({}, {}, 10.0)


def test_cs_declares_realistic_test_options_that_shorten_its_bounds() -> None:
    host = _resolve(ClientServerExecutionStrategy)
    assert host.applied == {"connect_timeout": 4.0, "host_loss_timeout": 7.0}
    bounds = {
        k: host.capabilities[k] for k in ("late_store_seconds", "partition_seconds", "host_loss_seconds")
    }
    assert bounds == {"late_store_seconds": 4.0, "partition_seconds": 2.0, "host_loss_seconds": 9.0}
    defaults = read_capabilities(ClientServerExecutionStrategy())
    assert (defaults["late_store_seconds"], defaults["host_loss_seconds"]) == (10.0, 17.0)


# -- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "user", "expected"),
    [
        pytest.param(  # an option the constructor does not take
            {"wiat": 2.0},
            {},
            ["declares host_test_options wiat=2.0", "takes no parameter 'wiat'; did you mean 'wait'?"],
            id="unknown",
        ),
        pytest.param(  # an option the strategy refuses, with its reason
            {"wait": -1.0, "loss": 5.0},
            {},
            [
                "declares host_test_options wait=-1.0 that it refuses to be built with",
                "ValueError: wait must be > 0 seconds; got -1.0",
            ],
            id="refused",
        ),
        pytest.param(  # a user option that contradicts the remaining test options: says what to set
            {"wait": 2.0, "loss": 5.0},
            {"wait": 8.0},
            [
                "host_test_options loss=5.0",
                "(with the options wait=8.0)",
                "your --strategy-option wait=8.0 replaced the declared value(s): set loss as well",
            ],
            id="contradicted",
        ),
    ],
)
def test_a_bad_test_option_is_an_error_naming_it(
    declared: dict[str, Any], user: dict[str, Any], expected: list[str]
) -> None:
    cls = _with_options(declared, "Bad")
    with pytest.raises(TargetError) as error:
        _resolve(cls, user)
    message = str(error.value)
    for fragment in expected:
        assert fragment in message


def test_test_options_that_change_what_the_plan_reads_are_an_error() -> None:
    class Shrinking(_Timed):
        capability_manifest = {"host_sides": _SIDES, "host_test_options": {"wait": 2.0}}

        @property
        def capabilities(self) -> dict[str, Any]:
            sides = _SIDES if self.wait > 5 else {**_SIDES, "runner": {"options": {"role": "fast"}}}
            return {**super().capabilities, "host_sides": sides}

    globals()["Shrinking"] = Shrinking
    with pytest.raises(
        TargetError, match="change the capability 'host_sides', which the plan and the placement read"
    ):
        _resolve(Shrinking)


# -- the header and the plugin ------------------------------------------------------------------------


def test_the_header_says_which_options_section_d_runs_with_and_why() -> None:
    cls = _with_options({"wait": 2.0, "loss": 5.0})
    assert _resolve(cls).header("ci") == (
        "conformance section D: the strategy's host_test_options wait=2.0, loss=5.0 (declared so the D "
        "checks wait out short detection bounds, not its defaults) under the options above; bounds "
        "late_store_seconds=2, host_loss_seconds=5, partition_seconds=1"
    )
    assert (
        _resolve(cls, {"wait": 3.0})
        .header("ci")
        .endswith(
            "bounds late_store_seconds=3, host_loss_seconds=5, partition_seconds=1.5; your --strategy-option "
            "values win: wait=3.0 (declared 2.0)"
        )
    )
    assert _resolve(cls, at_defaults=True).header("certify") == (
        "conformance section D: the options above, at the strategy's defaults: profile certify certifies "
        "the default detection bounds, so the strategy's host_test_options (wait=2.0, loss=5.0) are not "
        "applied; bounds late_store_seconds=10, host_loss_seconds=20, partition_seconds=5"
    )
    assert "it declares no host_test_options" in _resolve(_with_options({}, "Plain")).header("ci")


def _session(profile: str) -> ConformanceSession:
    config = types.SimpleNamespace()
    under_test = UnderTest.resolve(make_target("cs"))
    return ConformanceSession(
        config,  # type: ignore[arg-type]
        under_test,
        load_checks(),
        Waivers(),
        None,
        seed=1,
        timeout_scale=1.0,
        profile=get_profile(profile),
    )


@pytest.mark.parametrize(("profile", "late_store"), [("ci", 4.0), ("certify", 10.0)])
def test_the_plugin_gives_the_D_checks_alone_the_test_options(profile: str, late_store: float) -> None:
    session = _session(profile)
    try:
        specs = {spec.contract_id: spec for spec in session.checks}
        d4, l2 = session.context_for(specs["D4"]), session.context_for(specs["L2"])
        assert d4.capabilities["late_store_seconds"] == late_store
        assert d4.target.options == (
            {"connect_timeout": 4.0, "host_loss_timeout": 7.0} if profile == "ci" else {}
        )
        assert (l2.target.options, l2.capabilities["late_store_seconds"]) == ({}, 10.0)
        session.kit_options = {"perturb": "off"}
        header = session.pytest_report_header(session.config)
        section_d = [line for line in header if line.startswith("conformance section D:")]
        assert len(section_d) == 1 and f"late_store_seconds={late_store:g}" in section_d[0]
    finally:
        session.pytest_unconfigure(session.config)


def test_certify_runs_section_d_at_the_defaults_and_the_other_profiles_with_test_options() -> None:
    assert get_profile("certify").section_d == "defaults"
    assert {get_profile(name).section_d for name in ("quick", "ci", "thorough")} == {"test-options"}
