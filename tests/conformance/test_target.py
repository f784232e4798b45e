"""SPEC, option and store resolution: every bad value is a ``TargetError`` naming it."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

from conformance import target as target_module
from conformance.scenarios import Target
from conformance.target import (
    DEFAULT_STORE_FACTORY,
    TargetError,
    build_strategy,
    make_target,
    parse_strategy_options,
    resolve_store_factory,
    resolve_strategy_class,
    validate_store_target,
    validate_target,
)

HAS_REGISTRY = importlib.util.find_spec("agentlightning.trainer.registry") is not None


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package ``userpkg`` on sys.path: strategies, a broken module, a module missing a dependency."""
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("__version__ = '7.1'\n")
    (package / "strategies.py").write_text(
        textwrap.dedent(
            """
            class Mine:
                capability_manifest = {"uses_processes": False}

                def __init__(self, n_runners=1, port=0):
                    if n_runners < 1:
                        raise ValueError(f"n_runners must be >= 1, got {n_runners!r}")
                    self.n_runners = n_runners
                    self.port = port

                def execute(self, algorithm, runner, store):
                    return None

            class Typo(Mine):
                capability_manifest = {"shares_caller_stor": True}

            class NoExecute:
                pass

            def factory():
                return {"store": True}

            NOT_CALLABLE = 3
            """
        )
    )
    (package / "single.py").write_text(
        "from userpkg.strategies import Mine as _Base\n\nclass Only(_Base):\n    pass\n\nHELPER = _Base\n"
    )
    (package / "nothing.py").write_text("VALUE = 1\n")
    (package / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    (package / "needs_dep.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "userpkg"


def test_options_parse_as_json_when_they_can() -> None:
    options = parse_strategy_options(
        ["n_runners=3", "name=fast", "flag=true", "ratio=0.5", 'quoted="3"', "items=[1, 2]", "empty="]
    )
    assert options == {
        "n_runners": 3,
        "name": "fast",
        "flag": True,
        "ratio": 0.5,
        "quoted": "3",
        "items": [1, 2],
        "empty": "",
    }


@pytest.mark.parametrize(
    ("pairs", "named"),
    [
        (["n_runners"], "'n_runners'"),
        (["=3"], "'=3'"),
        (["a-b=1"], "'a-b'"),
        (["x=1", "x=2"], "'x' given twice"),
    ],
)
def test_bad_options_name_the_pair(pairs: list[str], named: str) -> None:
    with pytest.raises(TargetError, match=named):
        parse_strategy_options(pairs)


@pytest.mark.skipif(not HAS_REGISTRY, reason="agentlightning's registry is not importable")
def test_unknown_alias_names_it_and_lists_the_known_ones() -> None:
    with pytest.raises(TargetError) as error:
        resolve_strategy_class("shmm")
    message = str(error.value)
    assert "unknown strategy 'shmm'" in message
    assert "did you mean 'shm'?" in message
    assert "known aliases: cs, ipc, ray, shm" in message


@pytest.mark.skipif(not HAS_REGISTRY, reason="agentlightning's registry is not importable")
def test_alias_resolves_through_the_registry() -> None:
    from agentlightning.trainer.registry import ExecutionStrategyRegistry

    cls = resolve_strategy_class("shm")
    assert f"{cls.__module__}.{cls.__qualname__}" == ExecutionStrategyRegistry["shm"].replace(":", ".")


def test_without_a_registry_a_bare_name_asks_for_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target_module, "_REGISTRY_MODULE", "no_such_registry_module_for_the_kit")
    with pytest.raises(TargetError, match="unknown strategy 'shm': no alias registry is importable"):
        resolve_strategy_class("shm")


def test_dotted_path_and_module_colon_class(user_package: str) -> None:
    dotted = resolve_strategy_class(f"{user_package}.strategies.Mine")
    colon = resolve_strategy_class(f"{user_package}.strategies:Mine")
    assert dotted is colon
    assert dotted.__name__ == "Mine"


def test_a_module_with_one_strategy_class_names_that_class(user_package: str) -> None:
    assert resolve_strategy_class(f"{user_package}.single").__name__ == "Only"


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("userpkg.strategies", "several strategy classes; name one: userpkg.strategies.Mine"),
        ("userpkg.nothing", "defining no strategy class"),
        ("userpkg.strategies.Missing", "has no attribute 'Missing'"),
        ("userpkg.nowhere.Mine", "No module named 'userpkg.nowhere'"),
        ("nopkg_at_all.Mine", "no module named 'nopkg_at_all'"),
        ("userpkg.broken.Mine", "RuntimeError: boom at import"),
        ("userpkg.needs_dep.Mine", "a_dependency_that_is_not_installed"),
        ("userpkg.strategies.factory", "not a class"),
        ("userpkg.strategies.NoExecute", "has no execute()"),
        ("userpkg.strategies:", "must be module:attribute"),
        ("", "empty strategy SPEC"),
    ],
)
def test_bad_spec_is_an_error_naming_it(user_package: str, spec: str, named: str) -> None:
    with pytest.raises(TargetError) as error:
        resolve_strategy_class(spec)
    assert named in str(error.value)
    assert error.value.__traceback__ is not None  # a TargetError, turned into a usage error by the plugin


def test_store_factory_resolution(user_package: str) -> None:
    assert resolve_store_factory(f"{user_package}.strategies:factory")() == {"store": True}
    with pytest.raises(TargetError, match=r"store factory 'userpkg\.strategies:NOT_CALLABLE'.*not callable"):
        resolve_store_factory(f"{user_package}.strategies:NOT_CALLABLE")
    with pytest.raises(TargetError, match=r"store factory 'nostore\.Factory'"):
        resolve_store_factory("nostore.Factory")


def test_make_target_defaults_to_the_in_memory_store() -> None:
    target = make_target(" shm ", ["n_runners=2"])
    assert target == Target("shm", {"n_runners": 2}, DEFAULT_STORE_FACTORY, None)


def test_validate_target_constructs_once_and_reads_capabilities(user_package: str) -> None:
    resolved = validate_target(make_target(f"{user_package}.strategies.Mine", ["port=8080"]))
    assert resolved.class_path == "userpkg.strategies.Mine"
    assert resolved.version == "7.1"
    assert resolved.capabilities["uses_processes"] is False
    assert resolved.capabilities["shares_caller_store"] is True  # undeclared: strictest reading


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["n_runners=0"], "n_runners=0: ValueError: n_runners must be >= 1"),
        (["colour=red"], "colour='red'"),
    ],
)
def test_validate_target_names_a_bad_option(user_package: str, options: list[str], named: str) -> None:
    with pytest.raises(TargetError) as error:
        validate_target(make_target(f"{user_package}.strategies.Mine", options))
    assert named in str(error.value)
    assert "userpkg.strategies.Mine" in str(error.value)


def test_validate_target_rejects_a_misspelled_capability(user_package: str) -> None:
    with pytest.raises(
        TargetError, match="unknown capability 'shares_caller_stor'; did you mean 'shares_caller_store'"
    ):
        validate_target(make_target(f"{user_package}.strategies.Typo"))


def test_validate_target_checks_the_store_factory_and_start_method(user_package: str) -> None:
    with pytest.raises(TargetError, match="store factory 'nostore:Factory'"):
        validate_target(make_target(f"{user_package}.strategies.Mine", store_factory="nostore:Factory"))
    bad_method = Target(f"{user_package}.strategies.Mine", start_method="teleport")
    with pytest.raises(TargetError, match="start method 'teleport'"):
        validate_target(bad_method)


def test_build_strategy_passes_the_options(user_package: str) -> None:
    strategy = build_strategy(Target(f"{user_package}.strategies.Mine", {"n_runners": 3, "port": 1}))
    assert (strategy.n_runners, strategy.port) == (3, 1)


@pytest.fixture
def store_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``store_probes`` (stores for the kit's tests, next to this file) importable."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


@pytest.mark.usefixtures("store_probes")
def test_validate_store_target_builds_the_store_with_its_options() -> None:
    resolved = validate_store_target(
        make_target("", store_factory="store_probes:OptionStore", store_options=["label=x"])
    )
    assert resolved.class_path == "store_probes.OptionStore"
    assert resolved.capabilities == {"durable": False, "thread_safe": True}
    assert resolved.target.store_options == {"label": "x"}
    confined = validate_store_target(make_target("", store_factory="store_probes.NotThreadSafeStore"))
    assert confined.capabilities["thread_safe"] is False


@pytest.mark.parametrize(
    ("factory", "options", "named"),
    [
        (
            "store_probes:OptionStore",
            [],
            "cannot build store 'store_probes:OptionStore' with no options: TypeError",
        ),
        (
            "store_probes:OptionStore",
            ["label="],
            "with label='': ValueError: label must be a non-empty string",
        ),
        (
            "store_probes:not_a_store",
            [],
            "returned builtins.object, which is not a LightningStore (no close,",
        ),
        ("store_probes:MisspelledManifestStore", [], "unknown capability 'durabel'; did you mean 'durable'?"),
        ("store_probes:OptionStore", ["label"], "--store-option 'label' must be key=value"),
    ],
)
@pytest.mark.usefixtures("store_probes")
def test_validate_store_target_names_what_is_wrong(factory: str, options: list[str], named: str) -> None:
    with pytest.raises(TargetError) as error:
        validate_store_target(make_target("", store_factory=factory, store_options=options))
    assert named in str(error.value)


class _FixedPortStrategy:
    """Resolves its listen port to one fixed number when none is given (as upstream's cs does)."""

    def __init__(self, server_port: int | None = None) -> None:
        self.server_port = 4747 if server_port is None else server_port


class _EphemeralPortStrategy:
    def __init__(self, server_port: int = 0) -> None:
        self.server_port = server_port


def test_a_strategy_with_a_fixed_default_port_gets_a_free_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target_module, "resolve_strategy_class", lambda spec: _FixedPortStrategy)
    built = target_module.build_strategy(Target(strategy="fixed", options={}))
    assert built.server_port not in (0, 4747)
    given = target_module.build_strategy(Target(strategy="fixed", options={"server_port": 5000}))
    assert given.server_port == 5000


def test_a_strategy_picking_its_port_at_run_time_is_built_as_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target_module, "resolve_strategy_class", lambda spec: _EphemeralPortStrategy)
    assert target_module.build_strategy(Target(strategy="ephemeral", options={})).server_port == 0
