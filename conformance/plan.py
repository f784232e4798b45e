"""The plan: which (contract, situation) checks run, and which are ``n/a`` or a declared limitation, and why.

Computed before anything runs, from the registered checks and the strategy's validated capabilities, and
printed in the report header. After the run the plugin compares what ran with it (no silent shrinkage).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from conformance.catalogue import CATALOGUE
from conformance.checks import CheckSpec

__all__ = ["PlanEntry", "compute_plan", "unimplemented_contracts"]


@dataclass(frozen=True)
class PlanEntry:
    """One planned item: ``status`` is ``run``, ``n/a`` or ``limitation`` (runs, expected to be declared)."""

    contract_id: str
    name: str
    situation: str
    status: Literal["run", "n/a", "limitation"]
    capability: str = ""
    reason: str = ""

    @property
    def item_name(self) -> str:
        return f"{self.contract_id}-{self.name}[{self.situation}]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.contract_id,
            "name": self.name,
            "situation": self.situation,
            "item": self.item_name,
            "status": self.status,
            "capability": self.capability,
            "reason": self.reason,
        }


def _registry_aliases(strategy_class: type | None) -> list[str] | None:
    """Aliases naming ``strategy_class`` in the registry; ``None`` when the registry is not importable."""
    try:
        from agentlightning.trainer import init_utils, registry  # noqa: F401 - G1 builds through both
    except ImportError:
        return None
    if strategy_class is None:
        return []
    path = f"{strategy_class.__module__}.{strategy_class.__qualname__}"
    entries: Mapping[str, Any] = registry.ExecutionStrategyRegistry  # values: dotted paths (or classes)
    return sorted(
        alias
        for alias, target in entries.items()
        if target is strategy_class or (isinstance(target, str) and target.replace(":", ".") == path)
    )


def _applicability(
    spec: CheckSpec, caps: Mapping[str, Any], aliases: list[str] | None
) -> tuple[str, str, str]:
    """(status, capability, reason) for one check under the declared capabilities."""
    cid, situation = spec.contract_id, spec.situation
    if cid == "G1" and aliases is None:
        return "n/a", "agentlightning", "agentlightning's registry and build_component are not importable"
    if cid == "G1" and situation == "alias" and not aliases:
        return "n/a", "registered_alias", "no alias of ExecutionStrategyRegistry names the strategy class"
    if cid.startswith("F") and not caps["uses_processes"]:
        return "n/a", "uses_processes", "the strategy declares uses_processes=False (no worker processes)"
    if cid == "F3":
        if situation not in caps["supports_start_methods"]:
            return (
                "n/a",
                "supports_start_methods",
                f"start method {situation!r} is not in the declared {list(caps['supports_start_methods'])}",
            )
        if situation not in multiprocessing.get_all_start_methods():
            return (
                "n/a",
                "supports_start_methods",
                f"start method {situation!r} is not available on this platform",
            )
    if cid.startswith("D") and not caps["runs_on_many_hosts"]:
        return (
            "n/a",
            "runs_on_many_hosts",
            "the strategy declares runs_on_many_hosts=False (its runners run on one machine)",
        )
    if cid == "G3" and not caps["uses_processes"]:
        return "n/a", "uses_processes", "the strategy declares uses_processes=False: nothing is pickled"
    if cid == "S3" and not caps["shares_caller_store"]:
        return "n/a", "shares_caller_store", "the strategy declares shares_caller_store=False"
    if cid == "S6" and not caps["supports_unmanaged_store"]:
        return "n/a", "supports_unmanaged_store", "the strategy declares supports_unmanaged_store=False"
    if cid == "L7" and not caps["can_cancel_blocking_code"]:
        return (
            "limitation",
            "can_cancel_blocking_code",
            "the strategy declares can_cancel_blocking_code=False: a blocked bundle is left as a straggler",
        )
    return "run", "", ""


def compute_plan(
    checks: Iterable[CheckSpec], capabilities: Mapping[str, Any], strategy_class: type | None = None
) -> list[PlanEntry]:
    """The plan for ``checks`` (in their deterministic order) under ``capabilities`` (validated).

    ``strategy_class`` lets the plan see whether the registry knows an alias for it (G1's alias situation).
    """
    aliases = _registry_aliases(strategy_class)
    plan = []
    for spec in checks:
        status, capability, reason = _applicability(spec, capabilities, aliases)
        plan.append(PlanEntry(spec.contract_id, spec.name, spec.situation, status, capability, reason))  # type: ignore[arg-type]
    return plan


def unimplemented_contracts(checks: Iterable[CheckSpec]) -> list[str]:
    """Catalogue IDs with no registered check in this kit build (listed in the header, never hidden)."""
    implemented = {spec.contract_id for spec in checks}
    return [cid for cid in CATALOGUE if cid not in implemented]
