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
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from conformance.catalogue import CATALOGUE
from conformance.verdicts import CheckOutcome

__all__ = ["PREREQUISITES", "PrerequisiteLedger", "prerequisites_of"]

PREREQUISITES: tuple[str, ...] = ("L1",)
"""Contracts whose failure blocks every strategy contract outside section G."""

_INDEPENDENT_SECTIONS = frozenset({"G"})


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
