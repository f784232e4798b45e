"""Meta-tests: the store suite (section T) catches every defect of the broken-store zoo on its own contract.

Each broken store of ``strategies/broken_stores`` goes through the kit as a user would run it
(``python -m conformance --store FACTORY``, in a subprocess), on its own contract only and stopping at
the first failing access path; ``python -m conformance.selfcheck`` runs the whole section for each and
shows the collateral failures. A specimen that declares ``ALSO_BREAKS = ("T9",)`` is run on T9 history
too, which must catch it from its clients' history alone.
"""

from __future__ import annotations

import pytest

from conformance.catalogue import CATALOGUE
from conformance.selfcheck import REFERENCE_STORES, Row, kit_command, plan_rows, run_one
from strategies.broken_stores import Specimen, specimens

_ZOO = specimens()


def test_store_zoo_is_large_and_covers_t1_to_t8() -> None:
    assert len(_ZOO) >= 10, f"only {len(_ZOO)} broken stores"
    assert {specimen.breaks for specimen in _ZOO} == {f"T{i}" for i in range(1, 9)}
    assert len([specimen for specimen in _ZOO if specimen.breaks == "T8"]) >= 3
    assert {specimen.kind for specimen in _ZOO} == {"store"}
    assert all(specimen.defect for specimen in _ZOO)
    assert all(set(specimen.also_breaks) <= {"T9"} for specimen in _ZOO)
    assert len([specimen for specimen in _ZOO if specimen.also_breaks]) >= 5


def test_selfcheck_runs_broken_and_reference_stores_with_store() -> None:
    rows = plan_rows(
        scope="contract", only=["t2_check_then_claim", REFERENCE_STORES[0]], with_references=True
    )
    broken, reference = sorted(rows, key=lambda row: row.role)
    assert (broken.role, broken.subject, broken.breaks, broken.selection) == ("broken", "store", "T2", "T2-")
    assert (reference.role, reference.subject) == ("reference", "store")
    command = kit_command(broken.spec, broken.selection, "r.json", subject=broken.subject)
    assert command[1:5] == ["-m", "conformance", "--store", broken.spec]


@pytest.mark.parametrize("specimen", _ZOO, ids=[specimen.name for specimen in _ZOO])
def test_broken_store_fails_its_contract(specimen: Specimen) -> None:
    assert specimen.breaks in CATALOGUE, f"{specimen.name}: BREAKS = {specimen.breaks!r} is no contract ID"
    row = run_one(
        Row(
            name=specimen.name,
            spec=specimen.spec,
            role="broken",
            subject="store",
            breaks=specimen.breaks,
            selection=f"{specimen.breaks}-",
            extra=("-x",),  # the first failing access path proves the catch: the others cost time
        ),
        timeout=240.0,
    )
    assert not row.error, row.error
    assert row.verdicts.get(specimen.breaks) == "fail", (
        f"the store suite missed {specimen.name}: "
        f"{specimen.breaks} is {row.verdicts.get(specimen.breaks)!r}, "
        f"expected 'fail' (defect: {specimen.defect})"
    )


_HISTORY_ZOO = [specimen for specimen in _ZOO if "T9" in specimen.also_breaks]


@pytest.mark.parametrize("specimen", _HISTORY_ZOO, ids=[specimen.name for specimen in _HISTORY_ZOO])
def test_broken_store_with_a_history_anomaly_fails_t9(specimen: Specimen) -> None:
    row = run_one(
        Row(
            name=specimen.name,
            spec=specimen.spec,
            role="broken",
            subject="store",
            breaks="T9",
            selection="T9-",
            # A fixed seed and number of workloads: what is explored does not depend on the machine's speed.
            extra=("-x", "--conformance-seed", "0", "--conformance-examples", "150"),
        ),
        timeout=240.0,
    )
    assert not row.error, row.error
    assert row.verdicts.get("T9") == "fail", (
        f"T9 history missed {specimen.name}: T9 is {row.verdicts.get('T9')!r} (defect: {specimen.defect})"
    )
    reason = next(text for item, text in row.reasons.items() if item.startswith("T9-"))
    assert "the minimal workload's history breaks" in reason, reason
