"""Placement: how the kit builds a multi-host strategy's sides on its test hosts (section D).

A strategy whose runners can live on other hosts declares, in its capability manifest, ``host_sides``:
the constructor options and environment variables that make it its *algorithm side* (host 0: serves
the store, runs the algorithm) and a *runner side* (every other host: runs the runners against it).
What only the kit knows at run time is written as a placeholder (``{port}``, ``{token}``, ...), filled
in by ``resolve_side``. It may also declare ``host_test_options``: constructor options that every side
of section D is built with, under the user's ``--strategy-option`` values (``conformance.host_options``
applies them), so that the D checks wait out short, realistic detection bounds rather than production
defaults. docs/multi-host-strategies.md is the authors' guide.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "PLACEHOLDERS",
    "SIDES",
    "PlacementValues",
    "SideLaunch",
    "require_host_sides",
    "resolve_side",
    "validate_host_sides",
    "validate_host_test_options",
]

Side = Literal["algorithm", "runner"]
SIDES: tuple[Side, ...] = ("algorithm", "runner")

PLACEHOLDERS: Mapping[str, str] = {
    "address": "the address of the host this side runs on",
    "algorithm_address": "the address of the host the algorithm side runs on (host 0)",
    "port": "a TCP port free on the algorithm host, for the algorithm side to listen on (an int)",
    "token": "a credential made for this run, the same on every side (never printed by the kit)",
}
"""Every placeholder a ``host_sides`` value may use, with what the kit puts there."""

_SIDE_KEYS = frozenset({"options", "env"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class PlacementValues:
    """What the kit fills in for one side: see ``PLACEHOLDERS``."""

    address: str
    algorithm_address: str
    port: int
    token: str


@dataclass(frozen=True)
class SideLaunch:
    """One side, resolved: constructor options (over the user's ``--strategy-option``s) and environment."""

    options: dict[str, Any]
    env: dict[str, str]


def _placeholders_in(text: str, where: str) -> list[str]:
    """The placeholder names ``text`` uses; only bare ``{name}`` fields of ``PLACEHOLDERS`` are allowed."""
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError as error:
        raise ValueError(
            f"{where}: {text!r} is not a valid template ({error}); write a literal brace as {{{{"
        ) from None
    names = []
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(
                f"{where}: unknown placeholder {shown!r} in {text!r}; known: "
                + ", ".join("{" + known + "}" for known in PLACEHOLDERS)
            )
        names.append(name)
    return names


def _check_value(value: Any, where: str) -> None:
    """A JSON-like option value whose strings are valid templates."""
    if isinstance(value, str):
        _placeholders_in(value, where)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_value(item, f"{where}[{index}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings, got {key!r}")
            _check_value(item, f"{where}.{key}")
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise ValueError(
            f"{where} must be JSON-like (str, number, bool, None, list, mapping), got {value!r} "
            f"({type(value).__name__})"
        )


def validate_host_sides(value: Any, *, where: str = "host_sides") -> dict[str, dict[str, dict[str, Any]]]:
    """``value`` checked and normalised to ``{side: {"options": {...}, "env": {...}}}`` for both sides.

    A ``ValueError`` names the offending path (``host_sides.runner.env.AGL_TOKEN``) and value.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping with the sides {list(SIDES)}, got {value!r}")
    unknown = [key for key in value if key not in SIDES]
    if unknown:
        raise ValueError(f"{where}: unknown side {unknown[0]!r}; the sides are {', '.join(SIDES)}")
    missing = [side for side in SIDES if side not in value]
    if missing:
        raise ValueError(f"{where}: side {missing[0]!r} is missing; declare both {' and '.join(SIDES)}")
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for side in SIDES:
        spec, at = value[side], f"{where}.{side}"
        if not isinstance(spec, Mapping):
            raise ValueError(f"{at} must be a mapping with 'options' and/or 'env', got {spec!r}")
        extra = [key for key in spec if key not in _SIDE_KEYS]
        if extra:
            raise ValueError(f"{at}: unknown key {extra[0]!r}; a side has 'options' and 'env'")
        options, env = spec.get("options", {}), spec.get("env", {})
        if not isinstance(options, Mapping):
            raise ValueError(f"{at}.options must be a mapping of constructor parameters, got {options!r}")
        if not isinstance(env, Mapping):
            raise ValueError(f"{at}.env must be a mapping of environment variables, got {env!r}")
        for name, option in options.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"{at}.options: {name!r} is not a parameter name")
            _check_value(option, f"{at}.options.{name}")
        for name, text in env.items():
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise ValueError(f"{at}.env: {name!r} is not an environment variable name")
            if not isinstance(text, str):
                raise ValueError(f"{at}.env.{name} must be a string, got {text!r} ({type(text).__name__})")
            _placeholders_in(text, f"{at}.env.{name}")
        result[side] = {"options": dict(options), "env": dict(env)}
    return result


_KIT_SET_OPTIONS: Mapping[str, str] = {
    "n_runners": "the kit sets it per side (runners per host)",
}
"""Constructor options ``host_test_options`` must not set, with why."""


def validate_host_test_options(value: Any, *, where: str = "host_test_options") -> dict[str, Any]:
    """``value`` checked as constructor options for section D: a mapping of parameter names to JSON-like
    values without placeholders (they are the same on every side). A ``ValueError`` names the offending
    option. Whether the strategy accepts them is known only by building it (``conformance.host_options``).
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping of constructor parameters to values, got {value!r}")
    for name, option in value.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{where}: {name!r} is not a parameter name")
        if name in _KIT_SET_OPTIONS:
            raise ValueError(f"{where}: {name!r} cannot be set here: {_KIT_SET_OPTIONS[name]}")
        _check_value(option, f"{where}.{name}")
        if _placeholder_names(option):
            raise ValueError(
                f"{where}.{name}: {option!r} uses a placeholder; placeholders belong in host_sides (the "
                f"test options are the same on every side)"
            )
    return dict(value)


def _placeholder_names(value: Any) -> set[str]:
    """Every placeholder a (JSON-like, valid) option value uses, at any depth."""
    if isinstance(value, str):
        return set(_placeholders_in(value, "value"))
    items = (
        value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
    )
    return {name for item in items for name in _placeholder_names(item)}


def require_host_sides(capabilities: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The validated ``host_sides`` of a strategy that runs on many hosts; ``ValueError`` saying what
    to declare when it runs on many hosts (declared, or by default) but did not say how to place it."""
    if not capabilities.get("runs_on_many_hosts", True):
        raise ValueError("the strategy declares runs_on_many_hosts=False: it has no sides to place")
    sides = capabilities.get("host_sides")
    if sides is None:
        raise ValueError(
            "the strategy runs on many hosts (runs_on_many_hosts is True, declared or by default) but "
            "declares no host_sides, so the kit cannot place its algorithm and runner sides; declare "
            "host_sides (docs/multi-host-strategies.md), or runs_on_many_hosts=False if it runs on one "
            "machine"
        )
    return validate_host_sides(sides)


def _fill(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        names = _placeholders_in(value, "value")
        if len(names) == 1 and value == "{" + names[0] + "}":
            return values[names[0]]  # a bare placeholder keeps its type: "{port}" is an int
        return value.format_map({name: str(values[name]) for name in names})
    if isinstance(value, (list, tuple)):
        return [_fill(item, values) for item in value]
    if isinstance(value, Mapping):
        return {key: _fill(item, values) for key, item in value.items()}
    return value


def _mentions_token(value: Any) -> bool:
    return "token" in _placeholder_names(value)


def resolve_side(
    host_sides: Mapping[str, Any], side: Side, values: PlacementValues, *, credentials: bool = True
) -> SideLaunch:
    """The options and environment of ``side`` with every placeholder filled in from ``values``.

    ``credentials=False`` leaves out every option and variable that mentions ``{token}``: the side as
    started by someone without the credential (D5 checks what the strategy then refuses).
    """
    sides = validate_host_sides(host_sides)
    if side not in sides:
        raise ValueError(f"unknown side {side!r}; the sides are {', '.join(SIDES)}")
    filled = {
        "address": values.address,
        "algorithm_address": values.algorithm_address,
        "port": values.port,
        "token": values.token,
    }
    spec = sides[side]
    options = {
        name: _fill(option, filled)
        for name, option in spec["options"].items()
        if credentials or not _mentions_token(option)
    }
    env = {
        name: str(_fill(text, filled))
        for name, text in spec["env"].items()
        if credentials or not _mentions_token(text)
    }
    return SideLaunch(options, env)
