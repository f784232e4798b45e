"""Prerequisite contracts: the ones every other scenario stands on, settled once, before their dependents.

L1 (bundles-called: the algorithm once, each runner once with a distinct id in 0..n-1, a store and an
event given) is what every scenario of the other strategy sections builds on. A strategy that starts the
wrong runners, hangs at start-up or crashes in its worker fails L1, and each scenario built on it would
then only wait out its own hang bound. So the kit settles L1 (every situation the capabilities plan,
whatever the profile or ``-k`` selects) before a dependent item runs, and reports that item as
``blocked by L1 ...`` (the failing situation and what was observed) instead of running it. Section G
(configuration: building, validating, pickling) runs no scenario and depends on nothing. A waived
prerequisite blocks nothing: the waiver says the defect is known.

``PrerequisiteLedger`` shares the settled outcomes between the processes of one run (pytest-xdist
workers) through a directory: one lock file per item, so each prerequisite runs exactly once per run,
and the L1 items themselves report the outcome settled for them. A process settles first the
prerequisites no other process is settling (``settle_all``), so the workers of a run settle L1's
situations side by side.

E5 (startup-error: a bundle failing at once causes no hang) is a prerequisite of scenarios, not of
contracts: a strategy that waits for every bundle to get to work hangs whenever a bundle never gets
there, and L3's runner that returns at once, L7's runner blocked in its first step, S4's runner whose
first store call fails, P1's schedules that fail at once and any other such scenario would each wait
out its hang bound. ``startup_dependencies`` names the E5 situations a scenario stands on (the
algorithm, or a runner, that ends or blocks in its first step); when that situation's own run hung, the
scenario is not run and its check reports ``blocked by E5 ...`` (``conformance.verdicts.Blocked``). An
E5 failure that is no hang (a wrong error type, a leak) blocks nothing: its dependents do not wait.

D4 (late-store: a runner side started before the store is reachable gives up after its declared bound)
is a prerequisite of the rest of section D: every multi-host scenario ends with the store gone or
unreachable from some runner side, and a runner side that never gives up keeps each of them waiting out
the kit's 60 s hang bound, over and over. When D4's run saw the runner side still running past its
bound (the check marks its outcome ``hung``), the other D items report ``blocked by D4 ...``; a D4
failure of another kind (an error that does not name the address) blocks nothing.

The same ledger runs the situations of a contract side by side (``settle_side_by_side``): a check that
mostly waits out a strategy's declared window (D2's host-loss detection, D3's partition) runs
its sibling situations in threads beside it, each settled once per run as a prerequisite is, and their
own items then report the settled outcome. Each situation still runs alone in every respect the check
controls (its own hosts, ports, processes and journals); only the wall time is shared.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from conformance.catalogue import CATALOGUE
from conformance.scenarios import Scenario, Script
from conformance.verdicts import CheckOutcome

__all__ = [
    "PREREQUISITES",
    "STALL_PREREQUISITES",
    "STARTUP_PREREQUISITE",
    "PrerequisiteLedger",
    "prerequisites_of",
    "stall_prerequisites_of",
    "startup_dependencies",
]

PREREQUISITES: tuple[str, ...] = ("L1",)
"""Contracts whose failure blocks every strategy contract outside section G."""

_INDEPENDENT_SECTIONS = frozenset({"G"})

STALL_PREREQUISITES: dict[str, str] = {"D": "D4"}
"""Section -> the contract whose hang (outcome ``hung``) blocks the section's other contracts."""


def stall_prerequisites_of(contract_id: str) -> tuple[str, ...]:
    """The contracts whose failure with a hang blocks ``contract_id`` (none for those contracts)."""
    contract = CATALOGUE[contract_id]
    prerequisite = STALL_PREREQUISITES.get(contract.section)
    if prerequisite is None or prerequisite == contract_id or contract.subject != "strategy":
        return ()
    return (prerequisite,)


STARTUP_PREREQUISITE = "E5"
"""The contract whose hang blocks the scenarios that have a bundle ending at its first step."""

_STALLING_STEPS = frozenset({"return", "raise", "exit", "keyboard_interrupt", "block"})
"""Step kinds that end a bundle then and there, or hold its thread, with no await before."""

_FIRST_CALL = {"work": "dequeue_rollout", "dequeue": "dequeue_rollout", "enqueue": "enqueue_rollout"}
"""The store method a store step calls first."""


def _stalls_at_once(scenario: Scenario, bundle: str, script: Script) -> bool:
    """Whether ``bundle`` ends or blocks in its first step: a step that does so by itself, or a store
    step whose first call has a fault injected that raises."""
    if not script.steps or script.steps[0].kind in _STALLING_STEPS:
        return True
    first = script.steps[0]
    method = _FIRST_CALL.get(str(first.args.get("op", ""))) if first.kind == "store" else None
    return any(
        fault.bundle == bundle and fault.method == method and fault.call == 1 and fault.raises
        for fault in scenario.store_faults
    )


def startup_dependencies(contract_id: str, scenario: Scenario) -> list[tuple[str, str]]:
    """``(situation of E5, bundle)`` for each E5 situation ``scenario`` stands on: ``algorithm`` when the
    algorithm ends or blocks in its first step, ``runner`` when a runner does (none for E5's own)."""
    if contract_id == STARTUP_PREREQUISITE:
        return []
    found = []
    if _stalls_at_once(scenario, "algorithm", scenario.algorithm):
        found.append(("algorithm", "algorithm"))
    for index in range(scenario.n_runners):
        if _stalls_at_once(scenario, f"runner {index}", scenario.runner_script(index)):
            found.append(("runner", f"runner {index}"))
            break
    return found


def prerequisites_of(contract_id: str) -> tuple[str, ...]:
    """The prerequisite contracts ``contract_id`` depends on (none for a prerequisite itself, section G
    or a store contract)."""
    contract = CATALOGUE[contract_id]
    if (
        contract_id in PREREQUISITES
        or contract.subject != "strategy"
        or contract.section in _INDEPENDENT_SECTIONS
    ):
        return ()
    return PREREQUISITES


class PrerequisiteLedger:
    """Outcomes of prerequisite items, settled once per run and shared through ``directory``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._known: dict[str, CheckOutcome] = {}

    def _path(self, item_name: str, suffix: str) -> Path:
        return self.directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", item_name) + suffix)

    def settle(self, item_name: str, run: Callable[[], CheckOutcome]) -> CheckOutcome:
        """The outcome of ``item_name``: read when any process of the run settled it, else ``run()``
        under the item's lock (other processes wait for it) and written down for them."""
        outcome = self._settle(item_name, run, wait=True)
        assert outcome is not None  # a waiting settle always ends with an outcome
        return outcome

    def settle_all(self, items: Sequence[tuple[str, Callable[[], CheckOutcome]]]) -> dict[str, CheckOutcome]:
        """The outcomes of every ``(item_name, run)`` in ``items``, each settled exactly as ``settle``
        would, but first the ones no other process is settling right now: two xdist workers that both
        need L1's situations run one each, side by side, instead of one running both while the other
        waits for its lock."""
        outcomes: dict[str, CheckOutcome] = {}
        for item_name, run in items:
            outcome = self._settle(item_name, run, wait=False)
            if outcome is not None:
                outcomes[item_name] = outcome
        for item_name, run in items:
            if item_name not in outcomes:
                outcomes[item_name] = self.settle(item_name, run)
        return outcomes

    def settle_side_by_side(
        self,
        item_name: str,
        run: Callable[[], CheckOutcome],
        siblings: Sequence[tuple[str, Callable[[], CheckOutcome]]],
    ) -> CheckOutcome:
        """``settle(item_name, run)``, with each of ``siblings`` settled ``beside`` it."""
        with self.beside([(name, sibling) for name, sibling in siblings if name != item_name]):
            return self.settle(item_name, run)

    @contextlib.contextmanager
    def beside(self, items: Sequence[tuple[str, Callable[[], CheckOutcome]]]) -> Iterator[None]:
        """While the block runs, each of ``items`` that no process has settled or is settling is settled
        in a thread of its own and written down for its own item (which then reports it).

        The block's end waits for those threads, so no thread of the kit outlives it (a later item may
        fork a sandbox); an interrupt leaves them to the interpreter's exit (each check removes its own
        hosts and processes, ``NamespaceHosts`` also at exit). An item whose settling breaks (the ledger
        cannot be written) is left unsettled: its own item runs it then, and reports what breaks.
        """
        threads = [
            threading.Thread(
                target=self._settle_quietly, args=(name, run), name=f"conformance: {name}", daemon=True
            )
            for name, run in items
            if name not in self._known
        ]
        for thread in threads:
            thread.start()
        try:
            yield
        except BaseException as error:
            if not isinstance(error, (KeyboardInterrupt, SystemExit)):
                _join(threads)
            raise
        _join(threads)

    def _settle_quietly(self, item_name: str, run: Callable[[], CheckOutcome]) -> None:
        with contextlib.suppress(Exception):  # its own item settles it again, and reports what breaks
            self._settle(item_name, run, wait=False)

    def _settle(self, item_name: str, run: Callable[[], CheckOutcome], *, wait: bool) -> CheckOutcome | None:
        """``settle``; with ``wait=False``, ``None`` at once when another process holds the item's lock."""
        known = self._known.get(item_name)
        if known is not None:
            return known
        result = self._path(item_name, ".json")
        with open(self._path(item_name, ".lock"), "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # another process is settling it: come back to it last
            try:
                if result.exists():
                    outcome = CheckOutcome.from_dict(json.loads(result.read_text(encoding="utf-8")))
                else:
                    outcome = run()
                    partial = result.with_suffix(".partial")
                    partial.write_text(json.dumps(outcome.to_dict()), encoding="utf-8")
                    partial.replace(result)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._known[item_name] = outcome
        return outcome


def _join(threads: Sequence[threading.Thread]) -> None:
    for thread in threads:
        thread.join()
