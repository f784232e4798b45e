"""Build components (strategies, stores, ...) from the many shapes a configuration may take.

``build_component`` accepts ``None`` (the default), an alias, a dotted path, a class, an instance, or a
dict ``{"type": alias_or_path, **kwargs}``, and always returns an instance of the expected type or raises
an error that names what was given and what would have been accepted.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["build_component", "load_class"]

T = TypeVar("T")


def load_class(path: str) -> type[Any]:
    """Import ``pkg.module.Class`` or ``pkg.module:Class`` and return the class."""
    if not isinstance(path, str) or not path.strip():
        raise TypeError(f"class path must be a non-empty string, got {path!r}")
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"invalid class path {path!r}: expected 'pkg.module.Class' or 'pkg.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ImportError(f"cannot import {path!r}: no module named {exc.name!r}") from exc
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"cannot import {path!r}: module {module_name!r} has no {attr!r}") from None
    if not inspect.isclass(obj):
        raise TypeError(f"{path!r} is {type(obj).__name__} {obj!r}, not a class")
    return obj


def _resolve(spec: str, registry: Mapping[str, str], expected_type: type[T], name: str) -> type[T]:
    if spec in registry:
        cls = load_class(registry[spec])
    elif "." in spec or ":" in spec:
        cls = load_class(spec)
    else:
        known = ", ".join(sorted(registry)) or "none"
        hint = difflib.get_close_matches(spec, list(registry), n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"unknown {name} {spec!r}{did_you_mean}; known aliases: {known}")
    if not issubclass(cls, expected_type):
        raise TypeError(f"{name} {spec!r} resolves to {cls.__qualname__}, not a {expected_type.__name__}")
    return cls


def _instantiate(cls: type[T], kwargs: Mapping[str, Any], optional_kwargs: Mapping[str, Any], name: str) -> T:
    signature = inspect.signature(cls)
    params = signature.parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not accepts_any:
        for key in kwargs:
            if key not in accepted:
                hint = difflib.get_close_matches(key, sorted(accepted), n=1)
                did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise TypeError(
                    f"{name} {cls.__qualname__} has no parameter {key!r}{did_you_mean}; "
                    f"parameters: {', '.join(sorted(accepted)) or 'none'}"
                )
    merged = dict(kwargs)
    for key, value in optional_kwargs.items():
        if key not in merged and (accepts_any or key in accepted):
            merged[key] = value
    return cls(**merged)


def build_component(
    spec: Any,
    *,
    expected_type: type[T],
    registry: Mapping[str, str] | None = None,
    default: Callable[[], T] | str | None = None,
    optional_kwargs: Mapping[str, Any] | None = None,
    name: str = "component",
) -> T:
    """Turn ``spec`` into an instance of ``expected_type``.

    - ``None``: ``default`` (an alias/path, or a factory); an error when there is none.
    - ``str``: an alias from ``registry``, else a dotted path ``pkg.mod.Class`` or ``pkg.mod:Class``.
    - a class: instantiated. An instance: returned as is.
    - ``dict``: ``{"type": alias_or_path_or_class, **kwargs}``; the kwargs go to the constructor.

    ``optional_kwargs`` (e.g. ``n_runners`` from the Trainer) are passed only to constructors that accept
    them and only when the spec does not set them. Unknown keywords raise ``TypeError`` naming them.
    """
    registry = registry or {}
    optional = optional_kwargs or {}
    if spec is None:
        if default is None:
            raise ValueError(f"no {name} given and no default configured")
        if isinstance(default, str):
            spec = default
        else:
            instance = default()
            if not isinstance(instance, expected_type):
                raise TypeError(
                    f"default {name} factory returned {instance!r}, not a {expected_type.__name__}"
                )
            return instance
    if isinstance(spec, expected_type):
        return spec
    if isinstance(spec, str):
        return _instantiate(_resolve(spec, registry, expected_type, name), {}, optional, name)
    if inspect.isclass(spec):
        if not issubclass(spec, expected_type):
            raise TypeError(f"{name} class {spec.__qualname__} is not a subclass of {expected_type.__name__}")
        return _instantiate(spec, {}, optional, name)
    if isinstance(spec, Mapping):
        if "type" not in spec:
            raise ValueError(f"{name} config {dict(spec)!r} has no 'type' key naming an alias or class path")
        kind = spec["type"]
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        if not all(isinstance(k, str) for k in kwargs):
            raise TypeError(f"{name} config keys must be strings, got {list(kwargs)!r}")
        if isinstance(kind, str):
            cls = _resolve(kind, registry, expected_type, name)
        elif inspect.isclass(kind) and issubclass(kind, expected_type):
            cls = kind
        else:
            raise TypeError(f"{name} config 'type' must be an alias, a class path or a class, got {kind!r}")
        return _instantiate(cls, kwargs, optional, name)
    raise TypeError(
        f"cannot build a {name} from {type(spec).__name__} {spec!r}: expected None, an alias, a class path, "
        f"a class, an instance of {expected_type.__name__}, or a dict with 'type'"
    )
