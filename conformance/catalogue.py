"""The machine-readable contract catalogue: every contract of ``CONTRACTS.md`` by its stable ID.

Each entry is the one declaration of a contract: its ID, name, section, the kit version it appeared in,
the MUST sentence, the situations it runs in, and when it applies: the capabilities it ``requires``
(contract-wide, and per situation in ``situation_requires``) and the capability whose absence makes it a
declared limitation (``limitation_unless``). The plan (``plan.py``) reads those fields, as pytest reads
skip marks, and plans ``n/a`` and ``limitation`` with their reason before anything runs; the report and
``docs/contracts.md`` are generated from the same entries; the checks in ``conformance/contracts/`` are
registered against them by ID and take their situations from them. IDs never change meaning.

Adding a contract
-----------------
1. Add its ``Contract(...)`` entry below, in its section (ID, name, MUST sentence, situations, and
   ``requires`` / ``situation_requires`` / ``limitation_unless`` when a capability decides whether it
   applies; a new capability also needs its default in ``capabilities.py`` and, for a readable n/a
   reason, its meaning in ``plan.py``'s ``CAPABILITY_MEANINGS``).
2. Write its check in ``conformance/contracts/<section module>.py`` with ``@contract("ID")``: the check
   gets the entry's situations and runs only where the entry applies, so it never restates either (it
   may still end ``n/a`` for a reason only known at run time, saying so in a comment).
3. Regenerate the reference: ``python -m conformance --catalogue-markdown > docs/contracts.md``.

``tests/conformance/test_catalogue.py`` proves the three agree: every entry has a check for each of its
situations (or says why not in ``unchecked``), every check matches an entry, and ``docs/contracts.md`` is
exactly what ``catalogue_markdown()`` renders.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "ACCESS_PATHS",
    "CATALOGUE",
    "SECTIONS",
    "STORE_SECTIONS",
    "Contract",
    "catalogue_json",
    "catalogue_markdown",
    "get_contract",
]

SECTIONS: dict[str, str] = {
    "L": "lifecycle and stop-event synchronisation",
    "K": "KeyboardInterrupt",
    "E": "exceptions",
    "R": "resources and leaks",
    "S": "store interaction",
    "F": "faults in process strategies",
    "G": "configuration and registration",
    "D": "distributed runners",
    "T": "the store itself",
    "P": "property-based scheduling",
}

STORE_SECTIONS: frozenset[str] = frozenset({"T"})
"""Sections that check a ``LightningStore`` (``--store`` without ``--strategy``); all others check a
strategy."""

ACCESS_PATHS: tuple[str, ...] = ("in-process", "threaded", "http", "ipc")
"""How a T check reaches the store: the object itself, ``ThreadedLightningStore``, HTTP, IPC."""

_RUNNERS = ("one-runner", "several-runners")
_MOMENTS = ("before-start", "while-running", "during-shutdown", "event-set")
_ENDINGS = ("after-return", "after-error", "after-keyboard-interrupt")
_START_METHODS = ("fork", "spawn", "forkserver")
_PROCESSES: Mapping[str, Any] = {"uses_processes": True}
_MANY_HOSTS: Mapping[str, Any] = {"runs_on_many_hosts": True}


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Contract:
    """One contract: ``L2 normal-completion``, its section, the version it appeared in, what it demands,
    the situations it runs in and when it applies.

    ``requires`` maps a capability to the value the contract needs (for a list-valued capability such as
    ``supports_start_methods``: an item the list must contain); any other declared value plans every
    situation ``n/a``, in the order the requirements are written. ``situation_requires`` adds
    requirements of one situation (F3's start method, G1's registered alias). Besides declared
    capabilities a requirement may name a fact the kit observes before the run (``agentlightning``:
    its registry is importable; ``registered_alias``: an alias names the strategy class; see
    ``plan.py``). ``limitation_unless`` names a boolean capability: declared ``False``, the contract runs
    and is reported as a declared limitation, never a pass. ``why`` says, per capability, what lacking it
    means for this contract when that says more than the capability's general meaning. ``unchecked``
    says why this kit build has no check for the contract, on purpose (empty: it has one).
    """

    id: str
    name: str
    must: str
    situations: tuple[str, ...] = ("default",)
    since: str = "0.1.0"
    requires: Mapping[str, Any] = field(default_factory=dict, hash=False)
    situation_requires: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    limitation_unless: str = ""
    why: Mapping[str, str] = field(default_factory=dict, hash=False)
    unchecked: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.situation_requires) - set(self.situations))
        if unknown:
            raise ValueError(
                f"contract {self.id}: situation_requires names {unknown}, not among its situations "
                f"{list(self.situations)}"
            )
        # Read-only views: an entry is shared by the whole kit and must not be changed through one.
        object.__setattr__(self, "requires", _frozen(self.requires))
        object.__setattr__(
            self,
            "situation_requires",
            _frozen({situation: _frozen(needs) for situation, needs in self.situation_requires.items()}),
        )
        object.__setattr__(self, "why", _frozen(self.why))

    def requirements(self, situation: str) -> Mapping[str, Any]:
        """Everything ``situation`` needs: the contract's ``requires``, then the situation's own."""
        return {**self.requires, **self.situation_requires.get(situation, {})}

    @property
    def section(self) -> str:
        return self.id[0]

    @property
    def subject(self) -> str:
        """What the contract checks: ``"store"`` (section T) or ``"strategy"``."""
        return "store" if self.section in STORE_SECTIONS else "strategy"

    @property
    def title(self) -> str:
        """``"L2 normal-completion"``: how messages and reports name the contract."""
        return f"{self.id} {self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "section": self.section,
            "section_title": SECTIONS[self.section],
            "since": self.since,
            "must": self.must,
            "situations": list(self.situations),
            "requires": dict(self.requires),
            "situation_requires": {k: dict(v) for k, v in self.situation_requires.items()},
            "limitation_unless": self.limitation_unless,
            "implemented": not self.unchecked,
            "unchecked": self.unchecked,
        }


_ENTRIES: tuple[Contract, ...] = (
    # -- L: lifecycle and stop-event synchronisation ------------------------------------------------
    Contract(
        "L1",
        "bundles-called",
        "The algorithm is awaited exactly once; each runner exactly once with a distinct worker_id in "
        "0..n-1; every bundle gets a store and an event.",
        _RUNNERS,
    ),
    Contract(
        "L2",
        "normal-completion",
        "When the algorithm returns, the event is set, runners that poll it return, and execute() returns "
        "None within 1 s of the last bundle's return.",
        _RUNNERS,
    ),
    Contract(
        "L3",
        "runner-return-is-local",
        "A runner that returns normally does not set the event and does not stop the algorithm or the "
        "other runners.",
        ("several-runners",),
    ),
    Contract(
        "L4",
        "stop-propagates",
        "event.set() in any bundle is seen (is_set() true, wait() wakes) by every other bundle, in any "
        "process, within 0.5 s.",
        ("set-by-algorithm", "set-by-runner"),
    ),
    Contract(
        "L5",
        "event-protocol",
        "wait(timeout) returns False on timeout and True once set; set() is idempotent; clear() works; the "
        "event is usable from asyncio code without blocking the loop.",
    ),
    Contract(
        "L6",
        "cancel-after-grace",
        "A bundle that ignores the event while awaiting is cancelled after the strategy's grace period: it "
        "receives CancelledError, its finally blocks run, and execute() returns within grace + 2 s.",
    ),
    Contract(
        "L7",
        "blocking-bundle",
        "A bundle stuck in blocking code (no await) does not hang execute(): a process strategy escalates "
        "(SIGINT, then SIGTERM, then SIGKILL) and returns within its declared bounds; a thread strategy "
        "returns within its join bound, logs the straggler by name, and the kit reports it as a declared "
        "limitation, not a pass.",
        limitation_unless="can_cancel_blocking_code",
    ),
    # -- K: KeyboardInterrupt -----------------------------------------------------------------------
    Contract(
        "K1",
        "ki-in-algorithm",
        "KeyboardInterrupt raised in the algorithm: the event is set, all runners stop, and execute() "
        "raises KeyboardInterrupt (not another type, not swallowed).",
        _RUNNERS,
    ),
    Contract(
        "K2",
        "ki-in-runner",
        "KeyboardInterrupt raised in any runner, in a thread or in a child process: the event is set, all "
        "runners stop, and execute() raises KeyboardInterrupt.",
        _RUNNERS,
    ),
    Contract(
        "K3",
        "sigint-main",
        "SIGINT delivered to the main process only, at each named moment (before any bundle has started, "
        "while all run, after the algorithm returned and shutdown began, with the event already set): "
        "execute() raises KeyboardInterrupt within 1 s (plus the declared grace for non-cooperative "
        "bundles) and leaves nothing behind (all R contracts hold).",
        _MOMENTS,
    ),
    Contract(
        "K4",
        "sigint-group",
        "SIGINT delivered to the whole process group, as a terminal's Ctrl+C does: as K3, and no child "
        "survives.",
        _MOMENTS,
    ),
    Contract(
        "K5",
        "second-sigint",
        "A second SIGINT during shutdown forces a faster shutdown, still with nothing left behind and "
        "KeyboardInterrupt raised.",
    ),
    # -- E: exceptions ------------------------------------------------------------------------------
    Contract(
        "E1",
        "algorithm-error",
        "An exception in the algorithm stops the runners and execute() raises an exception of the same type "
        "with the same message (across processes too: the original type is re-raised in the caller and the "
        "remote traceback is attached).",
        _RUNNERS,
    ),
    Contract(
        "E2",
        "runner-error",
        "An exception in any runner stops the algorithm and the other runners, and execute() raises an "
        "exception of the same type with the same message, with the remote traceback attached.",
        _RUNNERS,
    ),
    Contract(
        "E3",
        "first-error-wins",
        "With several failures the first one is raised; the others are logged or attached, never masking it.",
        ("several-runners",),
    ),
    Contract(
        "E4",
        "cleanup-error-no-mask",
        "An error during cleanup (store close, server stop) does not replace the original error.",
    ),
    Contract(
        "E5",
        "startup-error",
        "A bundle failing immediately (before others have started) causes no hang and no leak.",
        ("algorithm", "runner"),
    ),
    Contract(
        "E6",
        "base-exceptions",
        "SystemExit and other BaseExceptions from a bundle are not swallowed.",
        ("algorithm", "runner"),
    ),
    # -- R: resources and leaks ---------------------------------------------------------------------
    Contract(
        "R1",
        "no-thread-leak",
        "No thread started during execute() is alive after it returns (beyond L7's declared stragglers).",
        _ENDINGS,
    ),
    Contract(
        "R2",
        "no-process-leak",
        "No child process is alive after execute() returns and none is left a zombie.",
        _ENDINGS,
    ),
    Contract(
        "R3",
        "no-fd-or-socket-leak",
        "Open fds and sockets return to the baseline; any port the strategy listened on can be bound again "
        "at once, and a second execute() on the same port succeeds.",
        _ENDINGS,
    ),
    Contract(
        "R4",
        "no-ipc-leak",
        "No leaked semaphores or shared memory (no resource_tracker warnings), no temp files left.",
        _ENDINGS,
    ),
    Contract(
        "R5",
        "no-asyncio-leak",
        "No pending-task-destroyed messages, never-awaited coroutines, unclosed transports or other "
        "ResourceWarnings and unraisable exceptions.",
        _ENDINGS,
    ),
    Contract(
        "R6",
        "repeat-stable",
        "Many consecutive execute() calls in one process (default 20) show no growth in threads, fds or "
        "children, and RSS growth under a tolerance.",
    ),
    Contract(
        "R7",
        "caller-state-restored",
        "Signal handlers, the multiprocessing start method, the current event loop and the logging "
        "configuration are as they were before execute().",
        _ENDINGS,
    ),
    # -- S: store interaction -----------------------------------------------------------------------
    Contract(
        "S1",
        "exactly-once",
        "Rollouts enqueued by the algorithm are each dequeued and completed exactly once across all "
        "runners: nothing lost, nothing duplicated, under concurrency.",
        ("several-runners",),
    ),
    Contract(
        "S2",
        "writes-visible",
        "Status updates and spans written by runners are visible to the algorithm while it runs "
        "(wait_for_rollouts sees them complete).",
        _RUNNERS,
    ),
    Contract(
        "S3",
        "caller-store-updated",
        "Where the strategy declares shares_caller_store, the store object passed to execute() holds every "
        "write afterwards.",
        _RUNNERS,
        requires={"shares_caller_store": True},
    ),
    Contract(
        "S4",
        "store-fault",
        "A store call that raises (injected) in a bundle behaves as E1/E2: stop, raise, no hang.",
        ("in-algorithm", "in-runner"),
    ),
    Contract(
        "S5",
        "slow-store",
        "Injected store latency causes no deadlock; shutdown bounds still hold.",
        ("several-runners",),
    ),
    Contract(
        "S6",
        "unmanaged-store",
        "With managed_store=False (where supported) bundles receive the caller's object.",
        requires={"supports_unmanaged_store": True},
    ),
    # -- F: faults in process strategies ------------------------------------------------------------
    Contract(
        "F1",
        "worker-killed",
        "A worker process killed with SIGKILL mid-run: execute() raises an error naming the worker and its "
        "exit status within 2 s; the others stop; nothing is left behind.",
        ("several-runners",),
        requires=_PROCESSES,
    ),
    Contract(
        "F2",
        "port-in-use",
        "A listen address already taken gives a clear error naming host and port, before any worker is "
        "spawned, with nothing left behind.",
        requires=_PROCESSES,
    ),
    Contract(
        "F3",
        "start-methods",
        "The strategy passes L1-L4 and E1 under fork, spawn and forkserver.",
        _START_METHODS,
        requires=_PROCESSES,
        situation_requires={method: {"supports_start_methods": method} for method in _START_METHODS},
    ),
    Contract(
        "F4",
        "parent-death",
        "If the process calling execute() dies (SIGKILL), no worker outlives it by more than 2 s.",
        requires=_PROCESSES,
    ),
    # -- G: configuration and registration ----------------------------------------------------------
    Contract(
        "G1",
        "buildable",
        "The strategy can be built from its alias, a dotted path, a class, a dict {'type': alias, ...} and "
        "an instance, through the registry and build_component.",
        ("alias", "dotted-path", "class", "dict", "instance"),
        requires={"agentlightning": True},
        situation_requires={"alias": {"registered_alias": True}},
    ),
    Contract(
        "G2",
        "invalid-config",
        "Invalid parameters raise ValueError naming the parameter at construction time; invalid environment "
        "overrides likewise.",
    ),
    Contract(
        "G3",
        "picklable",
        "A process strategy's instance and its bundles' wrappers survive pickling (spawn).",
        requires=_PROCESSES,
        why={"uses_processes": "nothing is pickled"},
    ),
    # -- D: distributed runners ----------------------------------------------------------------------
    Contract(
        "D1",
        "remote-stop",
        "When the algorithm returns, raises or is interrupted, runner processes on other hosts see the stop "
        "and return within 2 s plus the strategy's declared grace; none keeps polling a store that is gone, "
        "and none is left running on any host.",
        _ENDINGS,
        requires=_MANY_HOSTS,
    ),
    Contract(
        "D2",
        "host-loss",
        "A runner host lost mid-run: within the strategy's declared detection bound the in-flight attempts "
        "of that host are marked failed or unresponsive and their rollouts requeued by the retry policy; "
        "execute() then follows its declared policy. Nothing is lost; nothing is completed twice.",
        ("killed", "silent"),
        requires=_MANY_HOSTS,
    ),
    Contract(
        "D3",
        "partition",
        "A partition between a runner host and the store shorter than the declared tolerance is survived "
        "with no write applied twice; a longer one makes the runner exit with an error naming the "
        "unreachable address, and the algorithm side sees D2.",
        ("short", "long"),
        requires=_MANY_HOSTS,
    ),
    Contract(
        "D4",
        "late-store",
        "Runners started before the store is reachable wait up to a declared bound, then fail with an error "
        "naming host and port; nothing is left running.",
        requires=_MANY_HOSTS,
    ),
    Contract(
        "D5",
        "authenticated",
        "A store reachable beyond loopback refuses requests without the right credentials (401), never binds "
        "beyond loopback without them, and credentials never appear in logs, errors or reprs.",
        requires=_MANY_HOSTS,
    ),
    # -- T: the store itself -------------------------------------------------------------------------
    Contract(
        "T1",
        "state-machine",
        "Rollout and attempt statuses move only along the documented transitions; an illegal transition "
        "is refused with an error naming the ids and both states, and changes nothing.",
        ACCESS_PATHS,
    ),
    Contract(
        "T2",
        "exactly-once-claim",
        "Under concurrent dequeue_rollout from many clients each queued rollout is handed to one attempt "
        "at a time: nothing lost, nothing handed out twice.",
        ACCESS_PATHS,
    ),
    Contract(
        "T3",
        "retry-policy",
        "Failed, timed-out and unresponsive attempts are retried or ended exactly as the rollout's "
        "RolloutConfig says; no attempt stays claimed forever by a worker that is gone.",
        ACCESS_PATHS,
    ),
    Contract(
        "T4",
        "wait",
        "wait_for_rollouts returns exactly the rollouts in a terminal state, wakes within 50 ms of the "
        "transition, honours its timeout, and never blocks the caller's event loop.",
        ACCESS_PATHS,
    ),
    Contract(
        "T5",
        "values",
        "What goes in is validated (JSON-representable, valid Unicode, bounded nesting and size) and a "
        "refused write names the field and changes nothing; what comes out is a copy the caller may "
        "mutate safely; a value reads back equal to what was written, whatever the access path.",
        ACCESS_PATHS,
    ),
    Contract(
        "T6",
        "resources",
        "Resource versions are monotonic; the latest is what get_latest_resources returns.",
        ACCESS_PATHS,
    ),
    Contract(
        "T7",
        "spans",
        "Spans attach only to existing attempts, with sequence ids increasing per attempt, and come back "
        "in order.",
        ACCESS_PATHS,
    ),
    Contract(
        "T8",
        "durable",
        "For stores that declare durable: True: after the owning process is SIGKILLed at any point, "
        "reopening the store yields every acknowledged write and no partial one; attempts in flight then "
        "follow T3.",
        ACCESS_PATHS,
        requires={"durable": True},
    ),
    Contract(
        "T9",
        "history",
        "A hypothesis-driven concurrent workload is recorded as an invoke/ok/fail history and checked "
        "against T1-T7 by a checker that needs no knowledge of the store's internals; a failure shrinks to "
        "a minimal history and prints the one command that replays it.",
        ACCESS_PATHS,
    ),
    # -- P: property-based scheduling ---------------------------------------------------------------
    Contract(
        "P1",
        "random-schedules",
        "Hypothesis-generated scenarios (runner count, per-bundle scripts, injected faults at gates) each "
        "match the oracle's expected outcome and keep every L, R and S invariant; a failure shrinks to a "
        "minimal scenario with a replay command and its reproduction rate.",
    ),
)

CATALOGUE: dict[str, Contract] = {entry.id: entry for entry in _ENTRIES}
"""Every contract by ID, in the order of ``CONTRACTS.md``."""


def get_contract(contract_id: str) -> Contract:
    """The contract with this ID; ``KeyError`` naming the ID and the known ones otherwise."""
    try:
        return CATALOGUE[contract_id]
    except KeyError:
        raise KeyError(f"unknown contract ID {contract_id!r}; known: {', '.join(CATALOGUE)}") from None


def catalogue_json(*, indent: int | None = 2) -> str:
    """The catalogue as JSON (for docs, badges and CI gates): every entry as ``Contract.to_dict()``.

    The entries are the single source: the registered checks take their situations from them, and
    ``tests/conformance/test_catalogue.py`` proves every situation has its check.
    """
    from conformance import __version__

    contracts = [entry.to_dict() for entry in CATALOGUE.values()]
    return json.dumps({"kit_version": __version__, "contracts": contracts}, indent=indent)


def _requirement_text(name: str, value: Any) -> str:
    if value is True:
        return f"`{name}`"
    if value is False:
        return f"not `{name}`"
    return f"`{name}` has `{value}`"


def _applies_text(contract: Mapping[str, Any]) -> str:
    """When a contract applies, for the reference table: its requirements, per situation where so."""
    parts = [_requirement_text(name, value) for name, value in contract["requires"].items()]
    for situation, needs in contract["situation_requires"].items():
        parts += [f"[`{situation}`] {_requirement_text(name, value)}" for name, value in needs.items()]
    if contract["limitation_unless"]:
        parts.append(f"a declared limitation without `{contract['limitation_unless']}`")
    return "; ".join(parts) or "always"


def catalogue_markdown() -> str:
    """The contract reference page (``docs/contracts.md``), generated from ``catalogue_json()``.

    Regenerate with ``python -m conformance --catalogue-markdown > docs/contracts.md``; a test fails when
    the committed page is stale.
    """
    data = json.loads(catalogue_json())
    lines = [
        "# Contract reference",
        "",
        "<!-- Generated: python -m conformance --catalogue-markdown > docs/contracts.md (do not edit) -->",
        "",
        f"Kit version {data['kit_version']}. Every contract has a stable ID that never changes meaning; the",
        "kit's test ids are `<ID>-<name>[<situation>]`, so `pytest --strategy=SPEC -k K3` selects one.",
        "Section T checks a store (`pytest --store=SPEC`, no `--strategy`); its situations are the access",
        "paths the store is reached through.",
        "",
        "*Applies when* lists the capabilities a contract needs (see",
        "[capabilities-and-waivers.md](capabilities-and-waivers.md)), for one situation where it says",
        "`[situation]`; `agentlightning` and `registered_alias` are what the kit finds before the run (the",
        "registry is importable; an alias of it names the strategy class). Anything else declared plans the",
        "contract `n/a`, with that reason, before anything runs.",
        "",
        "Each contract is declared once, as an entry of `conformance/catalogue.py`: this page, the plan and",
        "the checks' situations all come from it. Adding a contract is that entry plus its check (the",
        "module's docstring says how).",
    ]
    section = ""
    for contract in data["contracts"]:
        if contract["section"] != section:
            section = contract["section"]
            lines += ["", f"## {section}: {contract['section_title']}", ""]
            lines += [
                "| ID | name | since | situations | applies when | must |",
                "|---|---|---|---|---|---|",
            ]
        situations = ", ".join(f"`{s}`" for s in contract["situations"])
        if not contract["implemented"]:
            situations += f" (not checked by this kit build: {contract['unchecked']})"
        must = contract["must"].replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {contract['id']} | {contract['name']} | {contract['since']} | {situations} | "
            f"{_applies_text(contract)} | {must} |"
        )
    return "\n".join(lines) + "\n"
