"""Registry, ``load_class`` and ``build_component`` (contract G1's building blocks), with bad input."""

from __future__ import annotations

from typing import Any

import pytest

from agentlightning.execution.base import ExecutionStrategy
from agentlightning.trainer.init_utils import build_component, load_class
from agentlightning.trainer.registry import (
    ExecutionStrategyRegistry,
    register_strategy,
    unregister_strategy,
)


class _Dummy(ExecutionStrategy):
    alias = "dummy"

    def __init__(self, n_runners: int = 1, flavour: str = "plain") -> None:
        self.n_runners = n_runners
        self.flavour = flavour

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        return None


class _TakesAnything(ExecutionStrategy):
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        return None


class _NotAStrategy:
    pass


PATH = f"{__name__}._Dummy"


@pytest.fixture
def registered() -> Any:
    register_strategy("dummy", PATH)
    yield
    unregister_strategy("dummy")


def build(spec: Any, **optional: Any) -> ExecutionStrategy:
    return build_component(
        spec,
        expected_type=ExecutionStrategy,
        registry=ExecutionStrategyRegistry,
        optional_kwargs=optional,
        name="strategy",
    )


def test_reference_aliases_are_registered() -> None:
    assert set(ExecutionStrategyRegistry) >= {"shm", "cs", "ipc"}


@pytest.mark.usefixtures("registered")
@pytest.mark.parametrize(
    "spec",
    ["dummy", PATH, f"{__name__}:_Dummy", _Dummy, {"type": "dummy"}, {"type": PATH}, {"type": _Dummy}],
)
def test_G1_build_from_every_shape(spec: Any) -> None:
    strategy = build(spec)
    assert isinstance(strategy, _Dummy)


def test_G1_instance_is_returned_as_is() -> None:
    instance = _Dummy(n_runners=3)
    assert build(instance, n_runners=1) is instance


@pytest.mark.usefixtures("registered")
def test_dict_kwargs_reach_the_constructor_and_win_over_optional() -> None:
    strategy = build({"type": "dummy", "n_runners": 4, "flavour": "spicy"}, n_runners=2)
    assert isinstance(strategy, _Dummy)
    assert (strategy.n_runners, strategy.flavour) == (4, "spicy")


@pytest.mark.usefixtures("registered")
def test_optional_kwargs_only_when_accepted() -> None:
    assert build("dummy", n_runners=2).n_runners == 2
    anything = build(_TakesAnything, n_runners=5)
    assert isinstance(anything, _TakesAnything)
    assert anything.kwargs == {"n_runners": 5}


def test_unknown_alias_lists_known_aliases() -> None:
    known = r"known aliases: cs, ipc, ray, shm"
    with pytest.raises(ValueError, match=r"unknown strategy 'shmm' \(did you mean 'shm'\?\); " + known):
        build("shmm")


@pytest.mark.usefixtures("registered")
def test_unknown_keyword_is_named() -> None:
    with pytest.raises(TypeError, match=r"no parameter 'n_runner' \(did you mean 'n_runners'\?\)"):
        build({"type": "dummy", "n_runner": 2})


@pytest.mark.parametrize("spec", [42, 3.5, ["shm"], object()])
def test_wrong_type_is_named(spec: Any) -> None:
    with pytest.raises(TypeError, match="cannot build a strategy from"):
        build(spec)


def test_class_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="not a subclass of ExecutionStrategy"):
        build(_NotAStrategy)
    with pytest.raises(TypeError, match="resolves to _NotAStrategy, not a ExecutionStrategy"):
        build(f"{__name__}._NotAStrategy")


def test_dict_without_type() -> None:
    with pytest.raises(ValueError, match="has no 'type' key"):
        build({"n_runners": 2})


def test_none_without_default() -> None:
    with pytest.raises(ValueError, match="no strategy given"):
        build(None)


def test_none_with_default_alias_and_factory() -> None:
    made = build_component(None, expected_type=ExecutionStrategy, default=lambda: _Dummy(n_runners=7))
    assert isinstance(made, _Dummy) and made.n_runners == 7
    made = build_component(None, expected_type=ExecutionStrategy, default=PATH)
    assert isinstance(made, _Dummy)
    with pytest.raises(TypeError, match="default component factory returned"):
        build_component(None, expected_type=ExecutionStrategy, default=object)  # type: ignore[arg-type,return-value]


def test_load_class_errors_name_the_path() -> None:
    with pytest.raises(ImportError, match="no module named 'no_such_pkg'"):
        load_class("no_such_pkg.Thing")
    with pytest.raises(ImportError, match=r"has no 'Missing'"):
        load_class(f"{__name__}.Missing")
    with pytest.raises(TypeError, match="not a class"):
        load_class(f"{__name__}.build")
    with pytest.raises(ValueError, match="invalid class path"):
        load_class("nodots")
    with pytest.raises(TypeError, match="non-empty string"):
        load_class("")


def test_register_validates_and_refuses_silent_takeover() -> None:
    with pytest.raises(ValueError, match="invalid strategy alias"):
        register_strategy("has space", PATH)
    with pytest.raises(ValueError, match="invalid class path"):
        register_strategy("ok", "not a path")
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("shm", PATH)
    register_strategy("dummy2", PATH)
    try:
        register_strategy("dummy2", PATH)  # same path again is fine
        register_strategy("dummy2", f"{__name__}._TakesAnything", replace=True)
        assert ExecutionStrategyRegistry["dummy2"].endswith("_TakesAnything")
    finally:
        unregister_strategy("dummy2")
    with pytest.raises(KeyError, match="unknown strategy alias 'dummy2'"):
        unregister_strategy("dummy2")


def test_dynamic_registration_by_plain_dict_assignment() -> None:
    ExecutionStrategyRegistry["plain"] = PATH
    try:
        assert isinstance(build({"type": "plain", "flavour": "x"}), _Dummy)
    finally:
        del ExecutionStrategyRegistry["plain"]
