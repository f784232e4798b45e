"""The options section D builds a strategy with: its declared ``host_test_options`` under the user's.

A strategy's detection bounds (``late_store_seconds``, ``host_loss_seconds``, ``partition_seconds``)
follow from constructor options whose production defaults are long (``cs``: ``connect_timeout=10``), and
D2-D4 wait them out. A strategy may declare, in its capability manifest, ``host_test_options``:
constructor options that are valid and realistic for the kit's test hosts (one machine, a switch with
no latency) and give shorter bounds. Section D then builds every side with
``{**host_test_options, **user_options}`` (the user's ``--strategy-option`` values win) and checks the
bounds the strategy built with those options declares. The header of the run says which options section
D ran with and why (``HostOptions.header``). A profile may run section D at the strategy's defaults
instead (``certify``): then the test options are left out, and the header says so.
"""

from __future__ import annotations

import difflib
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from conformance.capabilities import CapabilityError, read_capabilities
from conformance.scenarios import Target
from conformance.target import TargetError

__all__ = ["DETECTION_BOUNDS", "HostOptions", "resolve_host_options"]

DETECTION_BOUNDS: tuple[str, ...] = ("late_store_seconds", "host_loss_seconds", "partition_seconds")
"""The declared bounds section D waits out: the header shows them as section D checks them."""

_SAME_BOTH_WAYS: tuple[str, ...] = ("runs_on_many_hosts", "host_sides")
"""Capabilities the test options must not change: the plan (and placement) read them at the defaults."""


@dataclass(frozen=True)
class HostOptions:
    """What section D builds the strategy with, and what that strategy declares.

    ``declared``: the strategy's ``host_test_options`` (empty: it declares none). ``applied``: those in
    effect (the declared ones the user's options do not set). ``overridden``: the declared options the
    user's ``--strategy-option`` values replaced, with the user's value. ``at_defaults``: the profile runs
    section D without the test options. ``target``: the target section D places its sides from (its
    options are the merge). ``capabilities``: read from the strategy built with ``target``'s options.
    """

    declared: dict[str, Any]
    applied: dict[str, Any]
    overridden: dict[str, Any]
    at_defaults: bool
    target: Target
    capabilities: dict[str, Any]

    def header(self, profile: str) -> str:
        """One line for the run's header: the options section D runs with, why, and its bounds there."""
        bounds = ", ".join(f"{key}={self.capabilities[key]:g}" for key in DETECTION_BOUNDS)
        if not self.declared:
            return (
                f"conformance section D: the strategy's options above (it declares no host_test_options); "
                f"bounds {bounds}"
            )
        declared = _options_text(self.declared)
        if self.at_defaults:
            return (
                f"conformance section D: the options above, at the strategy's defaults: profile {profile} "
                f"certifies the default detection bounds, so the strategy's host_test_options ({declared}) "
                f"are not applied; bounds {bounds}"
            )
        applied = _options_text(self.applied) or "none"
        text = (
            f"conformance section D: the strategy's host_test_options {applied} "
            f"(declared so the D checks wait out short detection bounds, not its defaults) under the "
            f"options above; bounds {bounds}"
        )
        if self.overridden:
            replaced = ", ".join(
                f"{key}={json.dumps(value)} (declared {json.dumps(self.declared[key])})"
                for key, value in self.overridden.items()
            )
            text += f"; your --strategy-option values win: {replaced}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "declared": dict(self.declared),
            "applied": dict(self.applied),
            "overridden": dict(self.overridden),
            "at_defaults": self.at_defaults,
            "options": dict(self.target.options),
            "bounds": {key: self.capabilities[key] for key in DETECTION_BOUNDS},
        }


def _options_text(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in options.items())


def _unknown_parameters(cls: type, names: list[str]) -> list[tuple[str, str]]:
    """``(name, hint)`` for every name the constructor of ``cls`` does not take (none when it takes
    ``**kwargs`` or its signature cannot be read)."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return []
    unknown = []
    for name in names:
        if name not in parameters:
            close = difflib.get_close_matches(name, list(parameters), n=1)
            unknown.append((name, f"; did you mean {close[0]!r}?" if close else ""))
    return unknown


def _build_error(cls: type, options: Mapping[str, Any]) -> str | None:
    """Why ``cls(**options)`` fails (``None``: it builds)."""
    try:
        cls(**options)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def resolve_host_options(
    strategy_class: type, target: Target, capabilities: Mapping[str, Any], *, at_defaults: bool = False
) -> HostOptions:
    """The options and capabilities section D runs with, for ``strategy_class`` whose validated
    ``capabilities`` (built with ``target``'s options) may declare ``host_test_options``.

    A test option the constructor does not take, or one it refuses, is a ``TargetError`` naming it.
    """
    owner = f"{strategy_class.__module__}.{strategy_class.__qualname__}"
    declared = dict(capabilities.get("host_test_options") or {})
    user = dict(target.options)
    overridden = {key: user[key] for key in declared if key in user}
    applied = {key: value for key, value in declared.items() if key not in user}
    if at_defaults or not applied:
        return HostOptions(declared, applied, overridden, at_defaults, target, dict(capabilities))
    unknown = _unknown_parameters(strategy_class, list(applied))
    if unknown:
        name, hint = unknown[0]
        raise TargetError(
            f"strategy {owner} declares host_test_options {name}={applied[name]!r}, but its constructor "
            f"takes no parameter {name!r}{hint}"
        )
    merged = {**applied, **user}
    failure = _build_error(strategy_class, merged)
    if failure is not None:
        # Name the option that is refused on its own, else the whole set (they are refused together).
        culprits = [key for key in applied if _build_error(strategy_class, {**user, key: applied[key]})]
        named = _options_text({key: applied[key] for key in (culprits[:1] or applied)})
        hint = (
            f"; your --strategy-option {_options_text(overridden)} replaced the declared value(s): set "
            f"{', '.join(applied)} as well, for section D"
            if overridden
            else ""
        )
        raise TargetError(
            f"strategy {owner} declares host_test_options {named} that it refuses to be built with "
            f"(with the options {_options_text(user) or 'none'}): {failure}{hint}"
        )
    try:
        built = read_capabilities(strategy_class(**merged))
    except CapabilityError as error:
        raise TargetError(
            f"strategy {owner} built with its host_test_options {_options_text(applied)} has an invalid "
            f"capability manifest: {error}"
        ) from None
    changed = [key for key in _SAME_BOTH_WAYS if built[key] != capabilities[key]]
    if changed:
        raise TargetError(
            f"strategy {owner}: its host_test_options {_options_text(applied)} change the capability "
            f"{changed[0]!r}, which the plan and the placement read at the options given; test options may "
            f"change bounds only"
        )
    return HostOptions(declared, applied, overridden, False, replace(target, options=merged), built)
