"""The check registry and the context a contract check runs with.

A check is a function ``check(ctx: CheckContext) -> None`` registered with ``@contract("L2")``, once per
situation of its catalogue entry. It returns normally for ``pass`` and otherwise ends through ``ctx.fail``
(a ``ContractFailed``), ``ctx.limitation`` / ``ctx.declare_limitation`` (``DeclaredLimitation``) or, for
a reason only known at run time, ``ctx.not_applicable`` / ``ctx.require`` (``NotApplicable``). Whether
the contract applies under the declared capabilities is the catalogue entry's to say (``requires``,
``limitation_unless``): the plan decides it before anything runs, so a check never restates it. The
plugin turns every registered (contract, situation) into one pytest item.
"""

from __future__ import annotations

import dataclasses
import importlib
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from conformance.capabilities import satisfies
from conformance.catalogue import CATALOGUE, get_contract
from conformance.perturbation import catalogue_perturbation
from conformance.scenarios import JournalRecord, Scenario, ScenarioResult, Target
from conformance.verdicts import Blocked, ContractFailed, DeclaredLimitation, NotApplicable

__all__ = [
    "CheckContext",
    "CheckFunction",
    "CheckSpec",
    "contract",
    "load_checks",
    "registered_checks",
    "runners_for_situation",
]

CheckFunction = Callable[["CheckContext"], None]

_SITUATION_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_COUNTED_RUNNERS_RE = re.compile(r"(?:^|-)(\d+)-runners?(?:-|$)")


@dataclass(frozen=True)
class CheckSpec:
    """One registered (contract, situation) pair and the function that checks it."""

    contract_id: str
    situation: str
    function: CheckFunction = field(compare=False)

    @property
    def name(self) -> str:
        return CATALOGUE[self.contract_id].name

    @property
    def item_name(self) -> str:
        """The pytest item name, e.g. ``K3-sigint-main[while-running]`` (``-k K3`` selects it)."""
        return f"{self.contract_id}-{self.name}[{self.situation}]"

    @property
    def origin(self) -> str:
        return f"{self.function.__module__}.{self.function.__qualname__}"


# contract ID -> situation -> spec; insertion order per contract is the order situations were declared.
_REGISTRY: dict[str, dict[str, CheckSpec]] = {}


def contract(
    contract_id: str, *, situations: Iterable[str] | None = None
) -> Callable[[CheckFunction], CheckFunction]:
    """Register ``function`` as the check of ``contract_id`` in each of its catalogue entry's situations.

    ``situations`` narrows that to some of them, for a contract checked by more than one function; a
    situation the entry does not declare is an error naming it (situations are declared once, in the
    catalogue). Registering a different function for a (contract, situation) that already has one is an
    error; re-registering the same function (a module imported twice) is harmless.
    """
    entry = get_contract(contract_id)
    situations = entry.situations if situations is None else tuple(situations)
    if not situations:
        raise ValueError(f"contract {contract_id}: situations must not be empty")
    if len(set(situations)) != len(situations):
        raise ValueError(f"contract {contract_id}: duplicate situations in {situations!r}")
    for situation in situations:
        if not _SITUATION_RE.match(situation):
            raise ValueError(
                f"contract {contract_id}: situation {situation!r} must be a lowercase slug (a-z, 0-9, '-')"
            )
        if situation not in entry.situations:
            raise ValueError(
                f"contract {contract_id}: situation {situation!r} is not in its catalogue entry "
                f"{list(entry.situations)}; declare it there first"
            )

    def register(function: CheckFunction) -> CheckFunction:
        slots = _REGISTRY.setdefault(entry.id, {})
        for situation in situations:
            spec = CheckSpec(entry.id, situation, function)
            existing = slots.get(situation)
            if existing is not None and existing.origin != spec.origin:
                raise ValueError(
                    f"contract {contract_id} [{situation}] is already checked by {existing.origin}; "
                    f"refusing a second check {spec.origin}"
                )
            slots[situation] = spec
        return function

    return register


def registered_checks() -> list[CheckSpec]:
    """Every registered check in catalogue order, then in declared situation order (deterministic)."""
    return [spec for contract_id in CATALOGUE for spec in _REGISTRY.get(contract_id, {}).values()]


def load_checks() -> list[CheckSpec]:
    """Import every contracts module (which registers its checks) and return ``registered_checks()``."""
    importlib.import_module("conformance.contracts")
    return registered_checks()


def runners_for_situation(situation: str) -> int:
    """How many runners a situation implies.

    ``one-runner`` -> 1, ``several-runners`` -> 3 (enough for distinct ids and a real race), a
    situation naming a count (``2-runners``) -> that count, any other -> 2: a contract that does not say
    is exercised with concurrency, the stricter reading.
    """
    if situation == "one-runner" or situation.endswith("-one-runner"):
        return 1
    if "several-runners" in situation:
        return 3
    counted = _COUNTED_RUNNERS_RE.search(situation)
    if counted:
        return max(1, int(counted.group(1)))
    return 2


def _fallback_timeline(records: Iterable[JournalRecord]) -> str:
    records = list(records)
    if not records:
        return ""
    t0 = records[0].t
    return "\n".join(
        f"+{record.t - t0:8.3f}s pid={record.pid} {record.thread:<12} {record.bundle:<10} "
        f"{record.kind}{(' ' + record.detail) if record.detail else ''}"
        for record in records
    )


def _render_timeline(records: tuple[JournalRecord, ...]) -> str:
    try:
        from conformance.journal import render_timeline
    except ImportError:  # the journal module is optional for rendering; never hide a failure behind it
        return _fallback_timeline(records)
    return render_timeline(list(records))


@dataclass
class CheckContext:
    """What a check knows and can do: the target, its capabilities, bounds, randomness, the sandbox.

    ``capabilities`` is the validated manifest with defaults filled in (strictest reading).
    ``n_runners`` follows from the situation (see ``runners_for_situation``). ``random`` is seeded from
    the seed, the contract and the situation, so every item is reproducible on its own and under xdist.
    ``results`` keeps every scenario result this check produced (the plugin reports their durations).
    """

    contract_id: str
    situation: str
    target: Target
    capabilities: Mapping[str, Any]
    timeout_scale: float = 1.0
    seed: int = 0
    # Kit-wide run options a check may read (P1: ``examples`` from --conformance-examples, ``replay``
    # from --conformance-replay); empty when not given.
    kit_options: Mapping[str, Any] = field(default_factory=dict)
    # Why a scenario must not run (it stands on a prerequisite that failed the way it would wait on), or
    # None: ``run`` raises ``Blocked`` with that reason (see ``conformance.prerequisites``).
    blocker: Callable[[str, Scenario], str | None] | None = field(default=None, repr=False)
    name: str = field(init=False)
    # Set by a check whose subject outlived its bound without ending (a runner side that never gave
    # up): with a scenario that hung, what a prerequisite of the stalling kind blocks its dependents on.
    hung: bool = field(init=False, default=False)
    n_runners: int = field(init=False)
    random: random.Random = field(init=False, repr=False)
    results: list[ScenarioResult] = field(init=False, default_factory=list, repr=False)
    # Figures a passing check measured against their bounds ("1.204 s against 3.000 s"): the verdict's
    # reason, so a pass says by how much.
    figures: list[str] = field(init=False, default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.name = get_contract(self.contract_id).name
        self.n_runners = runners_for_situation(self.situation)
        # A str seed is hashed with SHA-512 by random.Random: stable across processes and PYTHONHASHSEED.
        self.random = random.Random(f"{self.seed}:{self.contract_id}:{self.situation}")

    @property
    def title(self) -> str:
        return f"{self.contract_id} {self.name}"

    def bound(self, seconds: float) -> float:
        """A time bound of the catalogue scaled by ``--conformance-timeout-scale``."""
        return seconds * self.timeout_scale

    def run(self, scenario: Scenario, *, target: Target | None = None) -> ScenarioResult:
        """Run ``scenario`` in a fresh sandbox process and return what was observed.

        ``target`` overrides the context's target (e.g. another start method for F3). The scenario's
        ``n_runners`` is merged into the strategy options, as the kit promises to pass ``n_runners=``.
        """
        from conformance.sandbox import run_scenario

        if self.blocker is not None:
            reason = self.blocker(self.contract_id, scenario)
            if reason is not None:
                raise Blocked(reason)
        base = target if target is not None else self.target
        options = {**base.options, "n_runners": scenario.n_runners}
        # The fixed catalogue's low-rate perturbation (P1 draws its own, or none, with each scenario)
        if (
            self.kit_options.get("perturb") == "all"
            and scenario.perturbation is None
            and self.contract_id != "P1"
        ):
            key = f"{self.contract_id}:{self.situation}:{len(self.results)}"
            scenario = dataclasses.replace(scenario, perturbation=catalogue_perturbation(key, self.seed))
        result = run_scenario(
            dataclasses.replace(base, options=options),
            scenario,
            timeout_scale=self.timeout_scale,
            seed=self.seed,
        )
        self.results.append(result)
        return result

    def measure(self, figure: str) -> None:
        """Report ``figure`` (a measurement against its bound) with the verdict, pass or fail."""
        self.figures.append(figure)

    def fail(
        self,
        *,
        expected: str,
        observed: str,
        figure: str = "",
        result: ScenarioResult | None = None,
        details: str = "",
    ) -> NoReturn:
        """End the check as ``fail``: expected vs observed, the figure against its bound, the timeline."""
        timeline = ""
        extra = [details.rstrip()] if details else []
        if result is not None:
            timeline = _render_timeline(result.journal)
            if result.exception is not None and result.exception.traceback and "traceback" not in details:
                extra.append("  execute() raised:\n" + _indent(result.exception.traceback))
            if result.outcome == "hang" and result.stacks:
                extra.append(
                    "  stacks of every thread of every process in the group:\n" + _indent(result.stacks)
                )
            if result.outcome == "crashed" and result.stderr:
                extra.append("  sandbox stderr:\n" + _indent(result.stderr[-4000:]))
        raise ContractFailed(
            self.contract_id,
            self.name,
            expected=expected,
            observed=observed,
            figure=figure,
            timeline=timeline,
            details="\n".join(part for part in extra if part),
        )

    def not_applicable(self, capability: str, reason: str) -> NoReturn:
        """End the check as ``n/a``: ``capability`` (as declared) excludes the contract."""
        raise NotApplicable(capability, reason)

    def limitation(self, capability: str, reason: str) -> NoReturn:
        """End the check as ``limitation (declared)``: reported, never counted as a pass."""
        raise DeclaredLimitation(capability, reason)

    @property
    def limited(self) -> bool:
        """Whether the capability the catalogue names in ``limitation_unless`` is declared ``False``: the
        check then runs, and where the contract cannot be met it ends with ``declare_limitation``."""
        capability = get_contract(self.contract_id).limitation_unless
        return bool(capability) and not self.capabilities.get(capability, True)

    def declare_limitation(self, reason: str) -> NoReturn:
        """End the check as the limitation its catalogue entry declares (``limitation_unless``)."""
        capability = get_contract(self.contract_id).limitation_unless
        if not capability:
            raise ValueError(f"contract {self.contract_id} declares no limitation_unless capability")
        raise DeclaredLimitation(capability, reason)

    def require(self, capability_name: str, expected_value: Any, reason: str) -> None:
        """``n/a`` unless the capability has ``expected_value``: for a check that decides applicability
        from something only known at run time (what the catalogue entry requires, the plan decides).

        For a list-valued capability (``supports_start_methods``) a scalar ``expected_value`` must be one
        of its items.
        """
        if not satisfies(self.capabilities.get(capability_name), expected_value):
            raise NotApplicable(capability_name, reason)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.rstrip().splitlines())
