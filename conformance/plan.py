"""The plan: which (contract, situation) checks run, and which are ``n/a`` or a declared limitation, and why.

Computed before anything runs, from the registered checks and the validated capabilities of what is under
test (a strategy: every section but T; a store: section T), and printed in the report header. A contract
without a check in this kit build that the capabilities exclude anyway is planned ``n/a`` all the same
(its reason is the capability, not the kit). After the run the plugin compares what ran with the plan (no
silent shrinkage).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from conformance.catalogue import CATALOGUE
from conformance.checks import CheckSpec
from conformance.profiles import Profile

Subject = Literal["strategy", "store"]

__all__ = ["PlanEntry", "compute_plan", "select_for_profile", "unimplemented_contracts"]


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
    cid: str, situation: str, caps: Mapping[str, Any], aliases: list[str] | None
) -> tuple[str, str, str]:
    """(status, capability, reason) for one (contract, situation) under the declared capabilities."""
    if cid == "T8" and not caps["durable"]:
        return "n/a", "durable", "the store declares durable: False (nothing survives its process)"
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
    checks: Iterable[CheckSpec],
    capabilities: Mapping[str, Any],
    strategy_class: type | None = None,
    *,
    subject: Subject = "strategy",
) -> list[PlanEntry]:
    """The plan for the ``checks`` of ``subject``'s sections, in catalogue order, under ``capabilities``
    (validated for that subject).

    ``strategy_class`` lets the plan see whether the registry knows an alias for it (G1's alias situation).
    A contract of the subject with no check here is planned ``n/a`` (situation ``default``) when the
    capabilities exclude it, and otherwise left to ``unimplemented_contracts``.
    """
    aliases = _registry_aliases(strategy_class) if subject == "strategy" else []
    by_contract: dict[str, list[CheckSpec]] = {}
    for spec in checks:
        by_contract.setdefault(spec.contract_id, []).append(spec)
    plan = []
    for cid, contract in CATALOGUE.items():
        if contract.subject != subject:
            continue
        specs = by_contract.get(cid)
        if not specs:
            status, capability, reason = _applicability(cid, "default", capabilities, aliases)
            if status == "n/a":
                plan.append(PlanEntry(cid, contract.name, "default", "n/a", capability, reason))
            continue
        for spec in specs:
            status, capability, reason = _applicability(cid, spec.situation, capabilities, aliases)
            plan.append(PlanEntry(cid, spec.name, spec.situation, status, capability, reason))  # type: ignore[arg-type]
    return plan


def unimplemented_contracts(
    checks: Iterable[CheckSpec], subject: Subject = "strategy", plan: Iterable[PlanEntry] = ()
) -> list[str]:
    """Catalogue IDs of ``subject``'s sections with no registered check and nothing in ``plan`` (listed in
    the header, never hidden)."""
    covered = {spec.contract_id for spec in checks} | {entry.contract_id for entry in plan}
    return [cid for cid, contract in CATALOGUE.items() if contract.subject == subject and cid not in covered]


def select_for_profile(
    plan: Iterable[PlanEntry], profile: Profile
) -> tuple[list[PlanEntry], list[PlanEntry]]:
    """``(kept, left_out)``: the plan entries ``profile`` runs, and those it leaves out (never hidden).

    A profile with ``situations="first"`` keeps one runnable situation per contract (the first planned
    to run, else the first expected limitation) and every ``n/a`` entry (they cost nothing and carry
    their reason); any other profile keeps the whole plan.
    """
    plan = list(plan)
    if profile.situations == "all":
        return plan, []
    chosen: dict[str, PlanEntry] = {}
    for status in ("run", "limitation"):
        for entry in plan:
            if entry.status == status:
                chosen.setdefault(entry.contract_id, entry)
    kept = [e for e in plan if e.status == "n/a" or chosen.get(e.contract_id) is e]
    left_out = [e for e in plan if e.status != "n/a" and chosen.get(e.contract_id) is not e]
    return kept, left_out
