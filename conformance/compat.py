"""Values the kit hands to a target's store, built from the installed agentlightning's own types.

The kit drives a target through the protocol only, and calls the store's methods as the installed
``agentlightning`` defines them. Where a scripted step must build a value the store validates (a span),
the value is built from the installed type by introspection: the fields the kit means (ids, name,
attributes) are set when the type has them, and every other required field gets the smallest value its
annotation admits (``None`` for optional fields, ``""``, ``0``, an empty container, the first member of an
enum or ``Literal``, a nested model built the same way). So one script drives our runtime's ``Span`` and
upstream's (0.2.x/0.3.x: eighteen required fields, nested OpenTelemetry-shaped models).

When the value cannot be built, or the store lacks a method a step needs, ``KitIncompatible`` names the
type, field or method: an error of set-up (the kit cannot drive this target), never a contract verdict.
"""

from __future__ import annotations

import enum
import importlib
import types
import typing
from collections.abc import Mapping
from typing import Any

from conformance.verdicts import SetupError

__all__ = [
    "KitIncompatible",
    "build_model",
    "build_resources",
    "build_span",
    "require_method",
    "span_type",
]


class KitIncompatible(SetupError):
    """The installed agentlightning's types or store methods are not what a kit step needs."""


_SPAN_TYPE = ("agentlightning.types", "Span")
_NAMED_RESOURCES = ("agentlightning.types", "NamedResources")
_ZERO_TRACE_ID = "0" * 32  # OpenTelemetry's textual width of a trace id


def span_type() -> type | None:
    """The installed ``agentlightning.types.Span``; ``None`` when no agentlightning is importable."""
    module_name, name = _SPAN_TYPE
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    found = getattr(module, name, None)
    if not isinstance(found, type):
        raise KitIncompatible(f"the installed {module_name} has no class {name} to build spans from")
    return found


def require_method(store: Any, name: str) -> Any:
    """``store.<name>``, or ``KitIncompatible`` naming the store type and the missing method."""
    method = getattr(store, name, None)
    if not callable(method):
        kind = type(store)
        raise KitIncompatible(
            f"the store {kind.__module__}.{kind.__qualname__} has no method {name!r}, "
            "which the kit's step needs"
        )
    return method


def build_span(
    rollout_id: str,
    attempt_id: str,
    span_id: str,
    name: str,
    *,
    sequence_id: int = 0,
    attributes: Mapping[str, Any] | None = None,
) -> Any:
    """A span for ``store.add_span``: the installed ``Span`` type's, or a plain mapping without one."""
    known: dict[str, Any] = {
        "rollout_id": rollout_id,
        "attempt_id": attempt_id,
        "span_id": span_id,
        "name": name,
        "sequence_id": sequence_id,
        "trace_id": _ZERO_TRACE_ID,
        "attributes": dict(attributes or {}),
    }
    cls = span_type()
    if cls is None:  # a foreign store without agentlightning: hand it the fields as a mapping
        return known
    return build_model(cls, known)


def build_resources(key: str, value: str) -> dict[str, Any]:
    """A resources value for ``store.add_resources``: one entry ``key``, shaped by the installed
    ``agentlightning.types.NamedResources``.

    Where its values are free (``Any``) the entry is the string ``value``; where they are typed (upstream
    0.2.x/0.3.x: a discriminated union of resource models) the entry is the smallest valid value of the
    value type, so the installed store accepts it. Without agentlightning the entry is ``value``.
    """
    module_name, name = _NAMED_RESOURCES
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return {key: value}
    alias = getattr(module, name, None)
    args = typing.get_args(alias)
    if alias is None or typing.get_origin(alias) not in (dict, Mapping) or len(args) != 2:
        raise KitIncompatible(
            f"the installed {module_name}.{name} is {alias!r}, "
            "not a mapping type the kit can build resources for"
        )
    value_type = args[1]
    if value_type is Any:
        return {key: value}
    return {key: _smallest(value_type, f"{module_name}.{name}[{key!r}]")}


def build_model(cls: type, known: Mapping[str, Any]) -> Any:
    """An instance of the pydantic model ``cls``: ``known`` values for the fields it declares, the
    smallest valid value for its other required fields. ``KitIncompatible`` names what does not fit."""
    fields = getattr(cls, "model_fields", None)
    if not isinstance(fields, Mapping):
        raise KitIncompatible(f"{_name(cls)} is not a pydantic model; the kit cannot introspect its fields")
    values: dict[str, Any] = {}
    for field_name, info in fields.items():
        if field_name in known:
            values[field_name] = known[field_name]
        elif info.is_required():
            values[field_name] = _smallest(info.annotation, f"{_name(cls)}.{field_name}")
    try:
        return cls(**values)
    except Exception as error:  # pydantic's ValidationError, or a model's own validator
        raise KitIncompatible(
            f"cannot build {_name(cls)} from the installed agentlightning with fields {sorted(values)}: "
            f"{' '.join(str(error).split())}"
        ) from None


def _smallest(annotation: Any, where: str) -> Any:
    """The smallest value of ``annotation`` (see the module docstring), or ``KitIncompatible``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any or annotation is None or annotation is type(None):
        return None
    if origin is typing.Annotated:
        return _smallest(args[0], where)
    if origin is typing.Union or origin is types.UnionType:
        if type(None) in args:
            return None
        for arm in args:
            try:
                return _smallest(arm, where)
            except KitIncompatible:
                continue
        raise KitIncompatible(f"no arm of {annotation!r} of {where} has a value the kit can build")
    if origin is typing.Literal:
        return args[0]
    value = getattr(annotation, "__value__", None)  # a `type X = ...` alias (Python 3.12+)
    if value is not None and origin is None and not isinstance(annotation, type):
        return _smallest(value, where)
    target = origin if origin is not None else annotation
    if isinstance(target, type):
        if issubclass(target, enum.Enum):
            return next(iter(target))
        if issubclass(target, bool):
            return False
        if issubclass(target, (str, int, float, bytes)):
            return target()
        if issubclass(target, (list, tuple, set, frozenset, dict)):
            return target()
        if target.__module__ == "collections.abc":  # Sequence, Mapping, ...
            return {} if issubclass(target, Mapping) else []
        if isinstance(getattr(target, "model_fields", None), Mapping):
            return build_model(target, {})
    raise KitIncompatible(f"the kit cannot build a value of {annotation!r} for the required field {where}")


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
