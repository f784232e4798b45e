"""Checks for section G (configuration and registration): G1 buildable, G2 invalid-config, G3 picklable.

G1 and G2 construct the strategy in the pytest process: constructing a strategy must be side-effect free
(it starts nothing before ``execute()``), and the checks verify that too (no thread or child process
appears). G3 pickles the instance in the pytest process and runs a scenario under ``spawn`` in the
sandbox, which ships the bundles' wrappers to fresh interpreters.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pickle
import threading
from collections.abc import Callable, Mapping
from typing import Any

from conformance.checks import CheckContext, contract
from conformance.scenarios import Scenario, Script, Step
from conformance.target import TargetError, aliases_of, resolve_strategy_class
from conformance.verdicts import ContractFailed

__all__: list[str] = []


def _children() -> set[int]:
    import psutil

    try:
        return {child.pid for child in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def _construct(ctx: CheckContext, what: str, build: Callable[[], Any]) -> Any:
    """Call ``build``; a construction that starts a thread or a process fails the contract."""
    threads, children = set(threading.enumerate()), _children()
    instance = build()
    new_threads = [t.name for t in threading.enumerate() if t not in threads]
    new_children = sorted(_children() - children)
    if new_threads or new_children:
        ctx.fail(
            expected=f"building the strategy from {what} starts nothing (work starts in execute())",
            observed=f"new threads {new_threads}, new child processes {new_children}",
        )
    return instance


def _strategy_class(ctx: CheckContext) -> type:
    try:
        return resolve_strategy_class(ctx.target.strategy)
    except TargetError as error:  # validated up front; reaching this means the environment changed
        raise RuntimeError(f"kit error: {error}") from None


def _registry_tools(ctx: CheckContext) -> tuple[Mapping[str, Any], Callable[..., Any]]:
    # The plan already made G1 n/a where the registry does not import (the entry requires
    # ``agentlightning``); what is left is only known here: the import failing in this process, or a
    # build_component the kit cannot call.
    try:
        registry = importlib.import_module("agentlightning.trainer.registry").ExecutionStrategyRegistry
        build_component = importlib.import_module("agentlightning.trainer.init_utils").build_component
    except (ImportError, AttributeError) as error:
        ctx.not_applicable(
            "agentlightning",
            f"the registry and build_component are not importable ({error}): nothing to build through",
        )
    mismatch = _signature_mismatch(build_component)
    if mismatch:
        ctx.not_applicable(
            "agentlightning",
            f"the installed build_component takes another signature ({mismatch}): the kit cannot call it",
        )
    return registry, build_component


_BUILD_KEYWORDS = frozenset({"expected_type", "registry", "optional_kwargs", "name"})


def _signature_mismatch(build_component: Callable[..., Any]) -> str:
    """What keeps the kit from calling ``build_component(spec, <_BUILD_KEYWORDS>)``; empty when nothing."""
    try:
        parameters = inspect.signature(build_component).parameters
    except (TypeError, ValueError):
        return ""  # not introspectable: call it and let the check report what happens
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return ""
    missing = sorted(_BUILD_KEYWORDS - set(parameters))
    required = sorted(
        name
        for name, p in list(parameters.items())[1:]
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and name not in _BUILD_KEYWORDS
    )
    parts = [f"no parameter {', '.join(missing)}"] if missing else []
    parts += [f"requires {', '.join(required)}"] if required else []
    return "; ".join(parts)


@contract("G1")
def check_buildable(ctx: CheckContext) -> None:
    """G1: build_component turns the alias, a dotted path, the class, a dict and an instance into it."""
    registry, build_component = _registry_tools(ctx)
    cls = _strategy_class(ctx)
    options = dict(ctx.target.options)
    path = f"{cls.__module__}.{cls.__qualname__}"
    aliases = aliases_of(cls, registry)

    def build(spec: Any, optional: Mapping[str, Any] = options) -> Any:
        return build_component(
            spec, expected_type=cls, registry=registry, optional_kwargs=dict(optional), name="strategy"
        )

    attempts: list[tuple[str, Callable[[], Any]]]
    if ctx.situation == "alias":
        if not aliases:  # the plan runs this situation only when an alias names the class
            raise RuntimeError(f"kit error: G1 [alias] planned to run, but no registry alias names {path}")
        attempts = [(f"alias {alias!r}", functools.partial(build, alias)) for alias in aliases]
    elif ctx.situation == "dotted-path":
        colon = f"{cls.__module__}:{cls.__qualname__}"
        attempts = [
            (f"path {path!r}", functools.partial(build, path)),
            (f"path {colon!r}", functools.partial(build, colon)),
        ]
    elif ctx.situation == "class":
        attempts = [(f"class {cls.__qualname__}", functools.partial(build, cls))]
    elif ctx.situation == "dict":
        kinds: list[Any] = [*aliases, path, cls]
        attempts = [
            (f"dict {{'type': {kind!r}, **options}}", functools.partial(build, {"type": kind, **options}, {}))
            for kind in kinds
        ]
    else:
        instance = _construct(ctx, "its class", lambda: cls(**options))
        built = build(instance)
        if built is not instance:
            ctx.fail(
                expected="build_component(instance) returns that instance", observed=f"it returned {built!r}"
            )
        return
    for what, attempt in attempts:
        try:
            instance = _construct(ctx, what, attempt)
        except ContractFailed:
            raise
        except Exception as error:
            ctx.fail(
                expected=f"build_component({what}) builds {path}",
                observed=f"{type(error).__name__}: {error}",
            )
        if type(instance) is not cls:
            ctx.fail(expected=f"build_component({what}) builds {path}", observed=f"it built {instance!r}")
        if "n_runners" in options and getattr(instance, "n_runners", None) != options["n_runners"]:
            ctx.fail(
                expected=f"build_component({what}) passes n_runners={options['n_runners']}",
                observed=f"n_runners={getattr(instance, 'n_runners', None)!r}",
            )


def _numeric_parameters(cls: type) -> list[str]:
    """Constructor parameters with an int or float default (bools excluded): each must refuse -1."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and isinstance(p.default, (int, float))
        and not isinstance(p.default, bool)
    ]


@contract("G2")
def check_invalid_config(ctx: CheckContext) -> None:
    """G2: invalid parameters raise ValueError naming the parameter, at construction time.

    Tries ``n_runners`` 0, -1 and ``"x"``, and -1 for every numeric parameter the constructor declares.
    Environment overrides are not probed: the protocol names none.
    """
    cls = _strategy_class(ctx)
    base = {k: v for k, v in ctx.target.options.items()}
    cases: list[tuple[str, Any]] = [("n_runners", 0), ("n_runners", -1), ("n_runners", "x")]
    cases += [(name, -1) for name in _numeric_parameters(cls) if name != "n_runners"]
    wrong = []
    for name, value in cases:
        options = {**base, name: value}
        try:
            _construct(ctx, f"{name}={value!r}", functools.partial(cls, **options))
        except ValueError as error:
            if name not in str(error):
                wrong.append(f"{name}={value!r}: ValueError does not name {name!r}: {error}")
            continue
        except Exception as error:
            wrong.append(f"{name}={value!r}: {type(error).__name__} instead of ValueError: {error}")
            continue
        wrong.append(f"{name}={value!r}: accepted")
    if wrong:
        ctx.fail(
            expected="ValueError naming the parameter for each invalid value, at construction",
            observed="\n    ".join(["", *wrong]),
            figure=f"{len(wrong)} of {len(cases)} invalid values mishandled",
        )


@contract("G3")
def check_picklable(ctx: CheckContext) -> None:
    """G3: a process strategy's instance survives pickling, and its bundles' wrappers do under spawn."""
    cls = _strategy_class(ctx)
    instance = _construct(ctx, "its class", lambda: cls(**ctx.target.options))
    try:
        copy = pickle.loads(pickle.dumps(instance))
    except Exception as error:
        ctx.fail(expected=f"pickle round trip of {instance!r}", observed=f"{type(error).__name__}: {error}")
    if type(copy) is not cls or getattr(copy, "n_runners", None) != getattr(instance, "n_runners", None):
        ctx.fail(expected=f"the unpickled copy equals {instance!r}", observed=f"{copy!r}")
    if "spawn" not in ctx.capabilities["supports_start_methods"]:
        return  # the instance is checked; without spawn the bundles never cross a pickle boundary here
    scenario = Scenario(
        name="G3-spawn",
        n_runners=ctx.n_runners,
        algorithm=Script(
            (
                Step("store", args={"op": "enqueue", "count": 2}),
                Step("store", args={"op": "wait_all", "timeout": ctx.bound(20.0)}),
            )
        ),
        runners=(Script((Step("store", args={"op": "work"}),)),),
        hang_bound=ctx.bound(60.0),
    )
    result = ctx.run(scenario, target=dataclasses.replace(ctx.target, start_method="spawn"))
    if result.outcome != "returned":
        detail = (
            f"{result.exception.type_name}: {result.exception.message}"
            if result.exception
            else result.outcome
        )
        ctx.fail(
            expected="under spawn, the bundles and store handed to workers pickle and execute() returns",
            observed=detail,
            result=result,
        )
    started = {r.bundle for r in result.journal if r.kind == "start"}
    expected = {"algorithm", *(f"runner {i}" for i in range(ctx.n_runners))}
    if started != expected:
        ctx.fail(
            expected=f"under spawn every bundle starts: {sorted(expected)}",
            observed=f"started: {sorted(started)}",
            result=result,
        )
