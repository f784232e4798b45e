"""The plan: which (contract, situation) checks run, and which are ``n/a`` or a declared limitation, and why.

Computed before anything runs, from the registered checks and the validated capabilities of what is under
test (a strategy: every section but T; a store: section T), and printed in the report header. Whether a
contract applies is read from its catalogue entry (``requires``, ``situation_requires``,
``limitation_unless``), the way pytest reads skip marks: nothing here names a contract, and a planned
``n/a`` never reaches its check. A contract without a check in this kit build that the capabilities exclude
anyway is planned ``n/a`` all the same (its reason is the capability, not the kit). After the run the plugin
compares what ran with the plan (no silent shrinkage).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from conformance.capabilities import satisfies
from conformance.catalogue import CATALOGUE, Contract
from conformance.checks import CheckSpec
from conformance.profiles import Profile
from conformance.target import aliases_of

Subject = Literal["strategy", "store"]
Status = Literal["run", "n/a", "limitation"]

__all__ = [
    "CAPABILITY_MEANINGS",
    "PlanEntry",
    "compute_plan",
    "select_for_profile",
    "unimplemented_contracts",
]


@dataclass(frozen=True)
class PlanEntry:
    """One planned item: ``status`` is ``run``, ``n/a`` or ``limitation`` (runs, expected to be declared)."""

    contract_id: str
    name: str
    situation: str
    status: Status
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


CAPABILITY_MEANINGS: Mapping[str, str] = {
    "uses_processes": "no worker processes",
    "runs_on_many_hosts": "its runners run on one machine",
    "durable": "nothing survives its process",
    "shares_caller_store": "the store passed to execute() does not receive its bundles' writes",
    "supports_unmanaged_store": "it always hands its bundles a store it manages",
    "can_cancel_blocking_code": "a blocked bundle is left as a straggler",
}
"""What declaring a capability the other way round means, in a few words: the tail of the n/a (or
limitation) reason of every contract that requires it (``Contract.why`` may say more for one contract)."""

_FACTS_MISSING: Mapping[str, str] = {
    "agentlightning": "agentlightning's registry and build_component are not importable",
    "registered_alias": "no alias of ExecutionStrategyRegistry names the strategy class",
}
"""Requirements that are no capability but what the kit finds before the run, and the reason when not."""

_PLATFORM_OFFERS: Mapping[str, Callable[[], Iterable[Any]]] = {
    "supports_start_methods": multiprocessing.get_all_start_methods,
}
"""List-valued capabilities the platform bounds: an item declared but not offered here is n/a too."""


def _registry_aliases(strategy_class: type | None) -> list[str] | None:
    """Aliases naming ``strategy_class`` in the registry; ``None`` when the registry is not importable."""
    try:
        from agentlightning.trainer import init_utils, registry  # noqa: F401 - G1 builds through both
    except ImportError:
        return None
    if strategy_class is None:
        return []
    return aliases_of(strategy_class, registry.ExecutionStrategyRegistry)


def _facts(strategy_class: type | None, subject: Subject) -> dict[str, bool]:
    """What the kit finds before the run that a contract may require (see ``_FACTS_MISSING``)."""
    if subject != "strategy":
        return {}
    aliases = _registry_aliases(strategy_class)
    return {"agentlightning": aliases is not None, "registered_alias": bool(aliases)}


def _declares(contract: Contract, subject: Subject, name: str, declared: Any, required: Any) -> str:
    """Why ``declared`` excludes ``contract``: the declaration as the subject writes it (a strategy's
    ``uses_processes=False``, a store's ``durable: False``), then what it means."""
    listed = isinstance(declared, (list, tuple, set, frozenset))
    shown = list(declared) if listed else declared
    declaration = f"{name}={shown!r}" if subject == "strategy" else f"{name}: {shown!r}"
    if listed:
        return f"{required!r} is not in the declared {declaration}"
    why = contract.why.get(name) or CAPABILITY_MEANINGS.get(name, "")
    return f"the {subject} declares {declaration}" + (f" ({why})" if why else "")


def _applicability(
    contract: Contract,
    situation: str,
    caps: Mapping[str, Any],
    facts: Mapping[str, bool],
    subject: Subject = "strategy",
) -> tuple[Status, str, str]:
    """(status, capability, reason) for one (contract, situation) under the declared capabilities and
    the facts found before the run, read from the catalogue entry: the first unmet requirement plans
    ``n/a``; then ``limitation_unless`` declared ``False`` plans a limitation."""
    for name, required in contract.requirements(situation).items():
        if name in _FACTS_MISSING:
            if facts.get(name) != required:
                return "n/a", name, _FACTS_MISSING[name]
            continue
        if not satisfies(caps[name], required):
            return "n/a", name, _declares(contract, subject, name, caps[name], required)
        offers = _PLATFORM_OFFERS.get(name)
        if offers is not None and required not in list(offers()):
            return "n/a", name, f"{name} item {required!r} is declared but not available on this platform"
    limited_by = contract.limitation_unless
    if limited_by and not caps[limited_by]:
        return "limitation", limited_by, _declares(contract, subject, limited_by, False, True)
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
    facts = _facts(strategy_class, subject)
    by_contract: dict[str, list[CheckSpec]] = {}
    for spec in checks:
        by_contract.setdefault(spec.contract_id, []).append(spec)
    plan = []
    for cid, contract in CATALOGUE.items():
        if contract.subject != subject:
            continue
        specs = by_contract.get(cid)
        if not specs:
            status, capability, reason = _applicability(contract, "default", capabilities, facts, subject)
            if status == "n/a":
                plan.append(PlanEntry(cid, contract.name, "default", "n/a", capability, reason))
            continue
        for spec in specs:
            status, capability, reason = _applicability(
                contract, spec.situation, capabilities, facts, subject
            )
            plan.append(PlanEntry(cid, spec.name, spec.situation, status, capability, reason))
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
