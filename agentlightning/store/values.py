"""The one rule for every value that enters a store: JSON-representable, valid Unicode, bounded.

A rollout's input and metadata, an attempt's metadata, a span's attributes and names, and published
resources cross HTTP (JSON) and ipc (msgpack) and are stored by stores we do not write. A value that one
path accepts and another cannot carry poisons the store: the write is half-done, and every later read that
includes it fails. So every access path applies this same rule before anything is stored: the in-memory
store at its entry points, the HTTP and ipc servers before they call whatever store they serve, and their
clients before sending. A refused value raises ``InvalidValueError`` (a ``ValueError``) naming the field
path, and changes nothing; an accepted one reads back equal on every path.

The rule (``ValueLimits`` holds the bounds; the defaults are ``DEFAULT_LIMITS``):

- ``None``, ``bool``, ``str``, ``int`` and ``float``; ``dict`` with ``str`` keys; ``list`` (a ``tuple`` is
  accepted and stored as a list, which is what every wire makes of it). Nothing else: not ``bytes``, sets,
  dates or arbitrary objects.
- Strings (and keys) are valid Unicode: no lone surrogate (half of a UTF-16 pair), which UTF-8 cannot carry.
- Floats are finite: JSON has no NaN or infinity. Integers fit in 64 bits (signed), what msgpack carries.
- Nesting at most ``max_depth`` containers deep; at most ``max_items`` values in all (containers and atoms
  alike); at most ``max_text_bytes`` of string and key text (UTF-8). These bound what a parser has to build
  for one value, whatever the wire, and keep an accepted value within the HTTP body limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from agentlightning.types import Span

__all__ = ["DEFAULT_LIMITS", "InvalidValueError", "ValueLimits", "check_json", "check_span", "check_text"]

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1
_DEPTH_CEILING: Final = 512  # far below the interpreter's recursion limit, which the walk relies on


@dataclass(frozen=True)
class ValueLimits:
    """Bounds on one value entering a store; every access path of one store applies the same ones."""

    max_depth: int = 64
    """Containers nested inside one another (a flat dict has depth 1)."""
    max_items: int = 1_000_000
    """Values in all, containers and atoms alike (``[1, 2]`` holds 3)."""
    max_text_bytes: int = 16 * 1024 * 1024
    """UTF-8 bytes of every string and key in the value, together."""

    def __post_init__(self) -> None:
        for name, ceiling in (("max_depth", _DEPTH_CEILING), ("max_items", None), ("max_text_bytes", None)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ValueLimits.{name} must be a positive int, got {value!r}")
            if ceiling is not None and value > ceiling:
                raise ValueError(f"ValueLimits.{name} must be at most {ceiling}, got {value!r}")


DEFAULT_LIMITS: Final = ValueLimits()


class InvalidValueError(ValueError):
    """A value refused by the store's value rule; ``field`` is the path to it, e.g. ``metadata['a'][2]``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # keep both fields across pickling (process boundaries)
        return (type(self), (self.field, self.reason))


class _Refused(Exception):
    """Raised deep in the walk; each container on the way up prepends its key to ``path``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


def _text_bytes(text: str) -> int:
    """UTF-8 length of ``text``; ``_Refused`` when it holds a lone surrogate."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise _Refused(
            f"string holds a lone surrogate {text[exc.start]!r} at index {exc.start}, which is not "
            f"valid Unicode (half of a UTF-16 pair?)"
        ) from None


def _atom_reason(value: Any) -> str | None:
    """Why an atom is refused, or ``None`` when it is accepted. Strings are checked elsewhere."""
    kind = type(value)
    if kind is int:
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return f"integer {value} does not fit in 64 bits (signed)"
    if kind is float:
        if math.isfinite(value):
            return None
        return f"{value!r} is not JSON-representable (JSON has no NaN or infinity)"
    if value is None or kind is bool:
        return None
    return (
        f"{kind.__name__} is not JSON-representable (allowed: None, bool, int, float, str, list, "
        f"dict with str keys), got {_short_repr(value)}"
    )


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Walk:
    """One walk over a container value: checks it and returns a fresh copy, counting against the limits."""

    __slots__ = ("items", "limits", "text")

    def __init__(self, limits: ValueLimits) -> None:
        self.limits = limits
        self.items = 1  # the root container; each container counts its children as it enters
        self.text = 0

    def _count(self, items: int, text: int) -> None:
        self.items += items
        self.text += text
        limits = self.limits
        if self.items > limits.max_items:
            raise _Refused(f"holds more than {limits.max_items} values (ValueLimits.max_items)")
        if self.text > limits.max_text_bytes:
            raise _Refused(
                f"holds more than {limits.max_text_bytes} bytes of text (ValueLimits.max_text_bytes)"
            )

    def copy(self, value: dict[Any, Any] | list[Any] | tuple[Any, ...], depth: int) -> Any:
        """A checked copy of the container ``value``, found at ``depth`` (the root is at 0)."""
        if isinstance(value, dict):  # the callers have checked the exact type already
            return self._dict(value, depth + 1)
        return self._list(value, depth + 1)

    def _enter(self, depth: int, size: int) -> None:
        if depth > self.limits.max_depth:
            raise _Refused(f"nested deeper than {self.limits.max_depth} containers (ValueLimits.max_depth)")
        self._count(size, 0)

    def _item(self, item: Any, depth: int) -> tuple[Any, int]:
        """A checked copy of one member and the text bytes it adds (containers count their own)."""
        kind = type(item)
        if kind is str:
            return item, _text_bytes(item)
        if kind is dict or kind is list or kind is tuple:
            return self.copy(item, depth), 0
        reason = _atom_reason(item)
        if reason is not None:
            raise _Refused(reason)
        return item, 0

    def _dict(self, value: dict[Any, Any], depth: int) -> dict[str, Any]:
        self._enter(depth, len(value))
        out: dict[str, Any] = {}
        text = 0
        for key, item in value.items():
            try:
                if type(key) is not str:
                    raise _Refused(f"key {_short_repr(key)} is a {type(key).__name__}; keys must be str")
                checked, size = self._item(item, depth)
                text += _text_bytes(key) + size
            except _Refused as refusal:
                refusal.path.append(f"[{key!r}]")
                raise
            out[key] = checked
        self._count(0, text)
        return out

    def _list(self, value: list[Any] | tuple[Any, ...], depth: int) -> list[Any]:
        self._enter(depth, len(value))
        out: list[Any] = []
        text = 0
        for index, item in enumerate(value):
            try:
                checked, size = self._item(item, depth)
            except _Refused as refusal:
                refusal.path.append(f"[{index}]")
                raise
            text += size
            out.append(checked)
        self._count(0, text)
        return out


def _flat_copy(value: dict[Any, Any], limits: ValueLimits) -> dict[str, Any] | None:
    """A copy of a dict of ASCII keys and plain atoms (the common metadata), or ``None`` for the full walk.

    Only accepts what the walk would accept, so the two never disagree; anything else, including every
    refusal, goes to the walk, which words the error.
    """
    text = 0
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            return None
        text += len(key)
        kind = type(item)
        if kind is str:
            if not item.isascii():
                return None
            text += len(item)
        elif kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                return None
        elif kind is float:
            if not math.isfinite(item):
                return None
        elif item is not None and kind is not bool:
            return None
    if text > limits.max_text_bytes or len(value) + 1 > limits.max_items:
        return None
    return value.copy()


def check_json(field: str, value: Any, limits: ValueLimits = DEFAULT_LIMITS) -> Any:
    """``value`` checked against the rule, as a fresh copy the caller may keep (tuples become lists).

    Raises ``InvalidValueError`` naming ``field`` and the path inside it (``metadata['a'][2]``).
    """
    kind = type(value)
    try:
        if kind is str:
            if not value.isascii():
                text = _text_bytes(value)
                if text > limits.max_text_bytes:
                    raise _Refused(
                        f"holds more than {limits.max_text_bytes} bytes of text (ValueLimits.max_text_bytes)"
                    )
            elif len(value) > limits.max_text_bytes:
                raise _Refused(
                    f"holds more than {limits.max_text_bytes} bytes of text (ValueLimits.max_text_bytes)"
                )
            return value
        if kind is dict:
            flat = _flat_copy(value, limits)
            return _Walk(limits).copy(value, 0) if flat is None else flat
        if kind is list or kind is tuple:
            return _Walk(limits).copy(value, 0)
        reason = _atom_reason(value)
        if reason is not None:
            raise _Refused(reason)
        return value
    except _Refused as refusal:
        raise InvalidValueError(field + "".join(reversed(refusal.path)), refusal.reason) from None


def check_text(field: str, value: str) -> str:
    """``value`` when it is valid Unicode (no lone surrogate); else ``InvalidValueError`` naming ``field``.

    For the store's own string fields (ids, names, worker ids), whose type the caller has already checked.
    """
    if value.isascii():
        return value
    try:
        _text_bytes(value)
    except _Refused as refusal:
        raise InvalidValueError(field, refusal.reason) from None
    return value


_SPAN_TEXT: Final = ("rollout_id", "attempt_id", "trace_id", "span_id", "parent_id", "name")
_SPAN_TIMES: Final = ("start_time", "end_time")


def check_span(span: Span, limits: ValueLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The fields of ``span`` checked against the rule, with ``attributes`` a fresh copy.

    The model has already checked the types; this adds what JSON and msgpack need of them (a span built
    with ``model_construct`` skips the model's checks, so the times are checked here as well).
    """
    values = span.__dict__.copy()
    for name in _SPAN_TEXT:
        text = values[name]
        if type(text) is str and not text.isascii():
            check_text(f"span.{name}", text)
    for name in _SPAN_TIMES:
        moment = values[name]
        if moment is not None:
            check_json(f"span.{name}", moment, limits)
    attributes = values["attributes"]
    values["attributes"] = check_json("span.attributes", attributes, limits) if attributes else {}
    return values
