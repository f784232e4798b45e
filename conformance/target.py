"""What is under test: resolve a strategy SPEC, its options and the store factory, and build them.

SPEC is an alias of the registry (``shm``; read from ``agentlightning.trainer.registry`` when that is
importable), a dotted path (``my_pkg.MyStrategy``) or ``module:Class``. ``--strategy-option key=value``
and ``--store-option key=value`` values are JSON when they parse as JSON, else strings. Every bad value is
a ``TargetError`` naming it, which the plugin turns into a usage error; ``build_strategy``/``build_store``
run in scenario processes. A store alone (section T) is resolved by ``validate_store_target``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import socket
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from conformance.capabilities import CapabilityError, read_capabilities, read_store_capabilities
from conformance.scenarios import Target

__all__ = [
    "DEFAULT_STORE_FACTORY",
    "ResolvedStore",
    "ResolvedTarget",
    "TargetError",
    "aliases_of",
    "build_store",
    "build_strategy",
    "known_aliases",
    "make_target",
    "module_version",
    "parse_options",
    "parse_strategy_options",
    "resolve_object",
    "resolve_store_factory",
    "resolve_strategy_class",
    "validate_store_target",
    "validate_target",
]

DEFAULT_STORE_FACTORY = "agentlightning.store.memory:InMemoryLightningStore"
_REGISTRY_MODULE = "agentlightning.trainer.registry"


class TargetError(ValueError):
    """A SPEC, option or factory that cannot be used; the message names the offending value."""


@dataclass(frozen=True)
class ResolvedTarget:
    """A target checked up front: its class, version and validated capabilities."""

    target: Target
    strategy_class: type
    class_path: str  # "module.Class"
    version: str  # the strategy's package version, or "unknown"
    capabilities: dict[str, Any]


def aliases_of(cls: type, registry: Mapping[str, Any]) -> list[str]:
    """The aliases of ``registry`` (alias -> dotted path, ``module:Class`` or class) that name ``cls``."""
    path = f"{cls.__module__}.{cls.__qualname__}"
    return sorted(
        alias
        for alias, target in registry.items()
        if target is cls or (isinstance(target, str) and target.replace(":", ".") == path)
    )


def known_aliases() -> dict[str, Any]:
    """Alias -> dotted path (or class) from the registry; empty when agentlightning is not importable."""
    try:
        module = importlib.import_module(_REGISTRY_MODULE)
    except ImportError:
        return {}
    registry = getattr(module, "ExecutionStrategyRegistry", None)
    return dict(registry) if isinstance(registry, Mapping) else {}


@dataclass(frozen=True)
class ResolvedStore:
    """A store target (section T) checked up front: its class, version and validated capabilities."""

    target: Target
    class_path: str  # "module.Class" of what the factory returns
    version: str  # the store's package version, or "unknown"
    capabilities: dict[str, Any]


def parse_options(pairs: Iterable[str], option: str = "--strategy-option") -> dict[str, Any]:
    """``["n_runners=2", "name=x"]`` -> ``{"n_runners": 2, "name": "x"}``; errors name ``option``.

    A value is JSON when it parses (``2``, ``true``, ``[1, 2]``, ``"2"``), else the string as given.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TargetError(f"{option} {pair!r} must be key=value")
        if not key.isidentifier():
            raise TargetError(f"{option} {pair!r}: {key!r} is not a valid parameter name")
        if key in options:
            raise TargetError(f"{option} {key!r} given twice")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    return options


def parse_strategy_options(pairs: Iterable[str]) -> dict[str, Any]:
    """``--strategy-option`` values as constructor keywords (see ``parse_options``)."""
    return parse_options(pairs, "--strategy-option")


def _import_attribute(module_name: str, attribute: str, spec: str, what: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise TargetError(f"cannot import {what} {spec!r}: {error}") from None
    except Exception as error:  # an import-time crash of user code is still a bad SPEC, not a traceback
        raise TargetError(
            f"importing module {module_name!r} for {what} {spec!r} failed: {type(error).__name__}: {error}"
        ) from None
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise TargetError(f"cannot resolve {what} {spec!r}: {value.__name__!r} has no attribute {part!r}")
        value = getattr(value, part)
    return value


def resolve_object(spec: str, *, what: str = "object") -> Any:
    """The object a ``module:attr`` or ``pkg.mod.attr`` path names (the longest importable module wins;
    a path that is a module in full names that module)."""
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise TargetError(f"{what} {spec!r} must be module:attribute")
        return _import_attribute(module_name, attribute, spec, what)
    parts = spec.split(".")
    if not all(part.isidentifier() for part in parts):
        raise TargetError(f"{what} {spec!r} is not a dotted path (pkg.module.Name) or module:Name")
    longest_missing: str | None = None  # "No module named 'pkg.mod'" for the longest prefix tried
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # Only "this prefix is not a module" moves on to a shorter prefix; a missing dependency
            # inside an existing module is reported as such.
            if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
                if split < len(parts):  # the whole path being a module was only one reading of it
                    longest_missing = longest_missing or str(error)
                continue
            raise TargetError(f"cannot import {what} {spec!r}: {error}") from None
        except Exception as error:
            raise TargetError(
                f"importing module {module_name!r} for {what} {spec!r} failed: "
                f"{type(error).__name__}: {error}"
            ) from None
        if split == len(parts):
            return sys.modules[module_name]
        try:
            return _import_attribute(module_name, ".".join(parts[split:]), spec, what)
        except TargetError:
            if longest_missing is None:
                raise
            raise TargetError(f"cannot import {what} {spec!r}: {longest_missing}") from None
    raise TargetError(
        f"cannot import {what} {spec!r}: no module named {parts[0]!r} "
        "(is its directory on sys.path? run from the project root or set PYTHONPATH)"
    )


def resolve_strategy_class(spec: str) -> type:
    """The strategy class SPEC names (alias, dotted path or ``module:Class``)."""
    spec = spec.strip()
    if not spec:
        raise TargetError("empty strategy SPEC; give an alias, pkg.module.Class or module:Class")
    aliases = known_aliases()
    if spec in aliases:
        resolved = aliases[spec]
        cls = resolved if isinstance(resolved, type) else resolve_object(str(resolved), what="strategy")
    elif ":" in spec or "." in spec:
        cls = resolve_object(spec, what="strategy")
        if isinstance(cls, types.ModuleType):
            cls = _the_strategy_of(cls, spec)
    else:
        if aliases:
            close = difflib.get_close_matches(spec, list(aliases), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TargetError(f"unknown strategy {spec!r}; {hint}known aliases: {', '.join(sorted(aliases))}")
        raise TargetError(
            f"unknown strategy {spec!r}: no alias registry is importable ({_REGISTRY_MODULE}); "
            "give a dotted path (pkg.module.Class) or module:Class"
        )
    if not isinstance(cls, type):
        raise TargetError(f"strategy {spec!r} resolves to {cls!r}, which is not a class")
    if not callable(getattr(cls, "execute", None)):
        raise TargetError(
            f"strategy {spec!r} resolves to {cls.__module__}.{cls.__qualname__}, which has no execute()"
        )
    return cls


def _the_strategy_of(module: types.ModuleType, spec: str) -> type:
    """The one strategy class ``module`` defines (a class of its own with an ``execute()``)."""
    found = [
        value
        for name, value in vars(module).items()
        if isinstance(value, type)
        and value.__module__ == module.__name__
        and not name.startswith("_")
        and callable(getattr(value, "execute", None))
    ]
    if len(found) == 1:
        return found[0]
    if not found:
        raise TargetError(f"strategy {spec!r} is a module defining no strategy class (none has execute())")
    names = ", ".join(sorted(f"{spec}.{cls.__name__}" for cls in found))
    raise TargetError(f"strategy {spec!r} is a module defining several strategy classes; name one: {names}")


def resolve_store_factory(spec: str) -> Callable[[], Any]:
    """The callable ``--store FACTORY`` names (a class or a function returning a store)."""
    factory = resolve_object(spec.strip(), what="store factory")
    if not callable(factory):
        raise TargetError(f"store factory {spec!r} resolves to {factory!r}, which is not callable")
    return factory  # type: ignore[no-any-return]


def build_strategy(target: Target) -> Any:
    """A fresh strategy instance for ``target`` (used in each scenario process).

    A strategy whose constructor takes a listen port (``port`` or ``*_port``) that the options do not
    set, and that resolves it to one fixed port of its own (upstream's ``ClientServerExecutionStrategy``:
    4747), would make concurrent scenarios (``-n 2``, other users of the machine) collide on that port
    and fail for the kit's reason, not the target's: such a strategy is rebuilt with a free port.
    """
    cls = resolve_strategy_class(target.strategy)
    strategy = cls(**target.options)
    port_param = _fixed_port_parameter(cls, target.options, strategy)
    if port_param is None:
        return strategy
    return cls(**{**target.options, port_param: _free_port()})


def _fixed_port_parameter(cls: type, options: Mapping[str, Any], strategy: Any) -> str | None:
    """The constructor's listen-port parameter when the options leave it unset and the built strategy
    holds a fixed non-zero port for it (an attribute of the same name); else ``None``."""
    try:
        names = list(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return None
    port = next((n for n in names if n == "port" or n.endswith("_port")), None)
    if port is None or port in options:
        return None
    resolved = getattr(strategy, port, None)
    if isinstance(resolved, bool) or not isinstance(resolved, int) or resolved == 0:
        return None
    return port


def _free_port() -> int:
    """A TCP port free on the loopback interface now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def build_store(target: Target) -> Any:
    """A fresh store from ``target.store_factory`` and its ``store_options`` (in each sandbox process)."""
    return resolve_store_factory(target.store_factory)(**target.store_options)


def make_target(
    strategy: str,
    options: Iterable[str] | Mapping[str, Any] = (),
    store_factory: str | None = None,
    start_method: str | None = None,
    store_options: Iterable[str] | Mapping[str, Any] = (),
) -> Target:
    """A ``Target`` from command-line values (options as ``key=value`` strings or a mapping).

    ``strategy`` is ``""`` when a store alone is under test (section T).
    """
    parsed = dict(options) if isinstance(options, Mapping) else parse_strategy_options(options)
    store_parsed = (
        dict(store_options)
        if isinstance(store_options, Mapping)
        else parse_options(store_options, "--store-option")
    )
    return Target(
        strategy=strategy.strip(),
        options=parsed,
        store_factory=(store_factory or DEFAULT_STORE_FACTORY).strip(),
        start_method=start_method,
        store_options=store_parsed,
    )


def module_version(cls: type) -> str:
    """The version of the package that defines ``cls``: its ``__version__``, else its distribution's."""
    top = cls.__module__.split(".")[0]
    version = getattr(sys.modules.get(top), "__version__", None)
    if isinstance(version, str):
        return version
    try:
        from importlib import metadata

        for distribution in metadata.packages_distributions().get(top, []):
            return metadata.version(distribution)
    except Exception:  # metadata lookups must never turn into a usage error
        pass
    return "unknown"


def validate_target(target: Target) -> ResolvedTarget:
    """Check ``target`` in the calling process: resolve it, construct it once, read its capabilities.

    Construction must be side-effect free for a strategy (it starts nothing before ``execute()``); the
    instance is dropped at once. Bad options (unknown parameter, invalid value) are ``TargetError``.
    """
    cls = resolve_strategy_class(target.strategy)
    class_path = f"{cls.__module__}.{cls.__qualname__}"
    try:
        instance = cls(**target.options)
    except (TypeError, ValueError) as error:
        shown = ", ".join(f"{key}={value!r}" for key, value in target.options.items()) or "no options"
        raise TargetError(
            f"cannot construct strategy {class_path} with {shown}: {type(error).__name__}: {error}"
        ) from None
    except Exception as error:
        raise TargetError(
            f"constructing strategy {class_path} failed: {type(error).__name__}: {error}"
        ) from None
    try:
        capabilities = read_capabilities(instance)
    except CapabilityError as error:
        raise TargetError(f"strategy {class_path} has an invalid capability manifest: {error}") from None
    resolve_store_factory(target.store_factory)
    if target.start_method is not None:
        import multiprocessing

        methods = multiprocessing.get_all_start_methods()
        if target.start_method not in methods:
            raise TargetError(
                f"start method {target.start_method!r} is not available; known: {', '.join(methods)}"
            )
    return ResolvedTarget(target, cls, class_path, module_version(cls), capabilities)


def validate_store_target(target: Target) -> ResolvedStore:
    """Check a store target in the calling process: resolve the factory, build one store, read its
    capabilities, close it.

    The factory is called once here so that bad ``--store-option`` values are a ``TargetError`` naming
    them before anything runs; each check then builds its own store in its sandbox.
    """
    import asyncio

    factory = resolve_store_factory(target.store_factory)
    shown = ", ".join(f"{key}={value!r}" for key, value in target.store_options.items()) or "no options"
    try:
        store = factory(**target.store_options)
    except (TypeError, ValueError) as error:
        raise TargetError(
            f"cannot build store {target.store_factory!r} with {shown}: {type(error).__name__}: {error}"
        ) from None
    except Exception as error:
        raise TargetError(
            f"building store {target.store_factory!r} failed: {type(error).__name__}: {error}"
        ) from None
    cls = type(store)
    class_path = f"{cls.__module__}.{cls.__qualname__}"
    missing = [name for name in _STORE_METHODS if not callable(getattr(store, name, None))]
    if missing:
        raise TargetError(
            f"store factory {target.store_factory!r} returned {class_path}, which is not a LightningStore "
            f"(no {', '.join(missing)})"
        )
    try:
        capabilities = read_store_capabilities(store)
    except CapabilityError as error:
        raise TargetError(f"store {class_path} has an invalid capability manifest: {error}") from None
    try:
        asyncio.run(store.close())
    except Exception as error:
        raise TargetError(f"closing store {class_path} failed: {type(error).__name__}: {error}") from None
    return ResolvedStore(target, class_path, module_version(cls), capabilities)


_STORE_METHODS = (
    "close",
    "enqueue_rollout",
    "dequeue_rollout",
    "start_rollout",
    "start_attempt",
    "update_rollout",
    "update_attempt",
    "query_rollouts",
    "get_rollout_by_id",
    "wait_for_rollouts",
    "query_attempts",
    "get_latest_attempt",
    "add_span",
    "query_spans",
    "add_resources",
    "get_latest_resources",
    "get_resources_by_id",
)
"""The ``LightningStore`` interface a store under test must provide (duck-typed: no base class needed)."""
