"""Aliases of the execution strategies the runtime knows, and runtime registration of new ones.

``ExecutionStrategyRegistry`` maps an alias to the dotted path of its class. It is a plain dict, so code
written for the original framework (``ExecutionStrategyRegistry["mine"] = "pkg.mod.Mine"``) keeps
working; ``register_strategy`` does the same with validation.
"""

from __future__ import annotations

import re

__all__ = ["ExecutionStrategyRegistry", "register_strategy", "unregister_strategy"]

ExecutionStrategyRegistry: dict[str, str] = {
    "shm": "agentlightning.execution.shared_memory.SharedMemoryExecutionStrategy",
    "cs": "agentlightning.execution.client_server.ClientServerExecutionStrategy",
    "ipc": "agentlightning.execution.inter_process.InterProcessExecutionStrategy",
    # Needs the optional extra (pip install 'agentlightning-execution[ray]'); imported only when asked for.
    "ray": "agentlightning.execution.ray_actors.RayExecutionStrategy",
}

_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*([.:][A-Za-z_][A-Za-z0-9_]*)$")


def register_strategy(alias: str, path: str, *, replace: bool = False) -> None:
    """Register ``alias`` for the strategy class at ``path`` (``pkg.mod.Class`` or ``pkg.mod:Class``).

    Re-registering an alias to a different path needs ``replace=True``, so two packages cannot silently
    take each other's alias.
    """
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise ValueError(f"invalid strategy alias {alias!r}: use letters, digits, '_' or '-'")
    if not isinstance(path, str) or not _PATH.match(path):
        raise ValueError(f"invalid class path {path!r} for alias {alias!r}: expected 'pkg.module.Class'")
    current = ExecutionStrategyRegistry.get(alias)
    if current is not None and current != path and not replace:
        raise ValueError(
            f"strategy alias {alias!r} is already registered to {current!r}; pass replace=True to change it"
        )
    ExecutionStrategyRegistry[alias] = path


def unregister_strategy(alias: str) -> None:
    """Remove a registered alias; ``KeyError`` naming it when unknown."""
    try:
        del ExecutionStrategyRegistry[alias]
    except KeyError:
        raise KeyError(f"unknown strategy alias {alias!r}") from None
