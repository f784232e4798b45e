"""Read and validate a capability manifest; fill what it leaves out with the strictest reading.

A strategy declares what it is (``uses_processes``, ``shares_caller_store``, ...) as data: the instance's
``capabilities`` property or the class's ``capability_manifest``; a store does the same with its own keys
(``durable``, ``thread_safe``). An unknown or misspelled key is an error naming it (with the closest known
key), never a silent default; so is a value of the wrong type. ``host_sides`` (how the kit places a
multi-host strategy's sides) and ``host_test_options`` (the options it places them with) are checked by
``placement.py``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from typing import Any

from conformance.placement import validate_host_sides, validate_host_test_options

__all__ = [
    "CAPABILITY_DEFAULTS",
    "HOST_LOSS_POLICIES",
    "START_METHODS",
    "STORE_CAPABILITY_DEFAULTS",
    "CapabilityError",
    "read_capabilities",
    "read_store_capabilities",
    "satisfies",
    "validate_manifest",
]

START_METHODS: tuple[str, ...] = ("fork", "spawn", "forkserver")

CAPABILITY_DEFAULTS: Mapping[str, Any] = {
    "uses_processes": True,
    "shares_caller_store": True,
    "can_cancel_blocking_code": True,
    "supports_start_methods": START_METHODS,
    "supports_unmanaged_store": True,
    "grace_seconds": 2.0,
    "terminate_seconds": 2.0,
    "join_seconds": 5.0,
    # Seconds one execute() may spend starting its bundles (placement on a cluster) beyond a local
    # strategy's: added to each run's hang bound only, never to a contract's own bound.
    "start_seconds": 0.0,
    # D1-D5 apply unless the strategy says it runs on one machine; a forgotten declaration must not
    # turn the distributed contracts into n/a.
    "runs_on_many_hosts": True,
    "host_sides": None,  # no default placement: the D checks fail asking for it (placement.py)
    # Constructor options section D builds the sides with (under the user's --strategy-option values),
    # so that it waits out short but realistic detection bounds; none: the user's options alone.
    "host_test_options": None,
    # D2: how soon a lost runner host's attempts are given up, and what execute() then does.
    "host_loss_seconds": 10.0,
    "host_loss_policy": "raise",
    # D3: a partition shorter than this is survived; D4: how long runners wait for a store that is not up.
    "partition_seconds": 2.0,
    "late_store_seconds": 10.0,
}
"""Every known key with its strictest reading: an undeclared capability commits to the most checks."""

STORE_CAPABILITY_DEFAULTS: Mapping[str, Any] = {
    "durable": False,
    "thread_safe": True,
}
"""Every key a store may declare. ``thread_safe: True`` (safe to call from several threads, each with its
own event loop) is the strict reading: the kit then calls it from many threads at once. ``durable`` says
whether the store survives its process (T8 applies only then): nothing is assumed to persist unless
declared."""

_BOOLEANS = frozenset(
    {
        "uses_processes",
        "shares_caller_store",
        "can_cancel_blocking_code",
        "supports_unmanaged_store",
        "runs_on_many_hosts",
        "durable",
        "thread_safe",
    }
)
_SECONDS = frozenset(
    {
        "grace_seconds",
        "terminate_seconds",
        "join_seconds",
        "start_seconds",
        "host_loss_seconds",
        "partition_seconds",
        "late_store_seconds",
    }
)
HOST_LOSS_POLICIES: tuple[str, ...] = ("raise", "carry-on")
_PLACEMENT_VALIDATORS: Mapping[str, Callable[..., Any]] = {
    "host_sides": validate_host_sides,
    "host_test_options": validate_host_test_options,
}
"""Section D's placement keys (``None``: not declared), each checked by ``placement.py``."""


class CapabilityError(ValueError):
    """The manifest has an unknown key or a value of the wrong type; the message names it."""


def _suggest(key: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_value(key: str, value: Any, owner: str) -> Any:
    where = f"{owner}: capability {key!r}"
    if key in _BOOLEANS:
        if not isinstance(value, bool):
            raise CapabilityError(f"{where} must be a bool, got {value!r} ({type(value).__name__})")
        return value
    if key in _SECONDS:
        # bool is an int subclass; True seconds is a typo, not a bound.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CapabilityError(
                f"{where} must be a number of seconds, got {value!r} ({type(value).__name__})"
            )
        if not math.isfinite(value) or value < 0:
            raise CapabilityError(f"{where} must be finite and >= 0, got {value!r}")
        return float(value)
    if key == "host_loss_policy":
        if value not in HOST_LOSS_POLICIES:
            raise CapabilityError(f"{where} must be one of {', '.join(HOST_LOSS_POLICIES)}, got {value!r}")
        return value
    placement = _PLACEMENT_VALIDATORS.get(key)
    if placement is not None:
        if value is None:
            return None
        try:
            return placement(value, where=f"{owner}: {key}")
        except ValueError as error:
            raise CapabilityError(str(error)) from None
    # supports_start_methods
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise CapabilityError(
            f"{where} must be a list of start methods (subset of {list(START_METHODS)}), got {value!r}"
        )
    methods = list(value)
    for method in methods:
        if method not in START_METHODS:
            raise CapabilityError(
                f"{where}: unknown start method {method!r}; known: {', '.join(START_METHODS)}"
            )
    # Keep the canonical order so reports and plans are stable whatever container was declared.
    return tuple(method for method in START_METHODS if method in methods)


def satisfies(declared: Any, required: Any) -> bool:
    """Whether a declared capability value meets what a contract requires: equal, or, for a list-valued
    capability (``supports_start_methods``) and a single required value, one of its items."""
    if isinstance(declared, (list, tuple, set, frozenset)) and not isinstance(required, (list, tuple)):
        return required in declared
    return bool(declared == required)


def validate_manifest(
    manifest: Any, *, owner: str = "strategy", defaults: Mapping[str, Any] = CAPABILITY_DEFAULTS
) -> dict[str, Any]:
    """The manifest checked key by key, with every undeclared key set to its default in ``defaults``
    (``CAPABILITY_DEFAULTS`` for a strategy, ``STORE_CAPABILITY_DEFAULTS`` for a store).

    ``owner`` names where the manifest came from (e.g. ``MyStrategy.capabilities``) in error messages.
    """
    if manifest is None:
        manifest = {}
    if not isinstance(manifest, Mapping):
        raise CapabilityError(f"{owner} must be a mapping of capability names to values, got {manifest!r}")
    result = dict(defaults)
    for key, value in manifest.items():
        if not isinstance(key, str) or key not in defaults:
            hint = _suggest(key, defaults) if isinstance(key, str) else ""
            raise CapabilityError(
                f"{owner}: unknown capability {key!r}{hint} (known: {', '.join(sorted(defaults))})"
            )
        result[key] = _check_value(key, value, owner)
    if result.get("host_sides") is not None and not result.get("runs_on_many_hosts"):
        raise CapabilityError(
            f"{owner}: capability 'host_sides' places sides on other hosts, but 'runs_on_many_hosts' is "
            f"False; declare one or the other"
        )
    if result.get("host_test_options") and not result.get("runs_on_many_hosts"):
        raise CapabilityError(
            f"{owner}: capability 'host_test_options' sets the options of section D's test hosts, but "
            f"'runs_on_many_hosts' is False (section D is n/a); remove it"
        )
    placed = {name for side in (result.get("host_sides") or {}).values() for name in side.get("options", {})}
    clash = sorted(placed & set(result.get("host_test_options") or {}))
    if clash:
        raise CapabilityError(
            f"{owner}: capability 'host_test_options' sets {clash[0]!r}, which 'host_sides' already sets "
            f"for each side; set it in one place"
        )
    return result


def read_capabilities(strategy: Any) -> dict[str, Any]:
    """The validated manifest of a strategy instance (or class).

    The instance's ``capabilities`` property wins (it may refine bounds from constructor options), then
    the class's ``capability_manifest``; a strategy that declares neither gets every strictest default.
    """
    cls = strategy if isinstance(strategy, type) else type(strategy)
    if not isinstance(strategy, type) and hasattr(strategy, "capabilities"):
        return validate_manifest(strategy.capabilities, owner=f"{cls.__qualname__}.capabilities")
    return validate_manifest(
        getattr(cls, "capability_manifest", None), owner=f"{cls.__qualname__}.capability_manifest"
    )


def read_store_capabilities(store: Any) -> dict[str, Any]:
    """The validated manifest of a store instance, read like a strategy's (``capabilities``, then
    ``capability_manifest``).

    An undeclared ``thread_safe`` takes the store's own ``thread_safe`` attribute when it has one (the
    flag ``ThreadedLightningStore`` and the reference strategies already read), else ``True``.
    """
    cls = type(store)
    defaults = dict(STORE_CAPABILITY_DEFAULTS)
    flag = getattr(store, "thread_safe", None)
    if isinstance(flag, bool):
        defaults["thread_safe"] = flag
    if hasattr(store, "capabilities"):
        manifest, owner = store.capabilities, f"{cls.__qualname__}.capabilities"
    else:
        manifest, owner = getattr(cls, "capability_manifest", None), f"{cls.__qualname__}.capability_manifest"
    return validate_manifest(manifest, owner=owner, defaults=defaults)
