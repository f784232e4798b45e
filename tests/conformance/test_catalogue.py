"""The catalogue covers every contract of CONTRACTS.md by ID and name, agrees with the registered checks and
the generated reference, and exports as JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conformance.capabilities import CAPABILITY_DEFAULTS, STORE_CAPABILITY_DEFAULTS, validate_manifest
from conformance.catalogue import CATALOGUE, SECTIONS, catalogue_json, catalogue_markdown, get_contract
from conformance.checks import load_checks
from conformance.plan import compute_plan

_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "CONTRACTS.md",
    Path(__file__).resolve().parents[3] / "shared" / "CONTRACTS.md",
)
# "- **T8 durable** (stores that declare `durable: True`) — ...": a parenthesis may follow the name.
_ENTRY = re.compile(r"^- \*\*([A-Z]\d+) ([a-z0-9-]+)\*\*(?: \([^)]*\))? — ", re.MULTILINE)


def _contracts_md() -> dict[str, str]:
    for path in _CANDIDATES:
        if path.is_file():
            return dict(_ENTRY.findall(path.read_text(encoding="utf-8")))
    pytest.skip(f"CONTRACTS.md not found (looked at {', '.join(map(str, _CANDIDATES))})")


def test_every_contract_of_the_specification_is_catalogued_with_its_name() -> None:
    specified = _contracts_md()
    assert len(specified) >= 30  # the parse found the catalogue, not a stray line
    assert {cid: CATALOGUE[cid].name for cid in specified if cid in CATALOGUE} == specified
    assert sorted(set(specified) - set(CATALOGUE)) == []
    assert sorted(set(CATALOGUE) - set(specified)) == []


def test_entries_carry_section_version_must_and_situations() -> None:
    for cid, entry in CATALOGUE.items():
        assert entry.section in SECTIONS and cid.startswith(entry.section)
        assert entry.since == "0.1.0"
        assert entry.must.endswith(".") and len(entry.must) > 30, cid
        assert entry.situations and all(re.fullmatch(r"[a-z0-9-]+", s) for s in entry.situations), cid
    assert [cid[0] for cid in CATALOGUE] == sorted((cid[0] for cid in CATALOGUE), key="LKERSFGDTP".index)


def test_unknown_id_is_an_error_naming_it() -> None:
    with pytest.raises(KeyError, match="unknown contract ID 'Z9'"):
        get_contract("Z9")


def test_json_export_lists_every_contract() -> None:
    document = json.loads(catalogue_json())
    assert document["kit_version"]
    ids = [entry["id"] for entry in document["contracts"]]
    assert ids == list(CATALOGUE)
    s1 = next(entry for entry in document["contracts"] if entry["id"] == "S1")
    assert s1["name"] == "exactly-once" and s1["section"] == "S" and s1["since"] == "0.1.0"
    assert "exactly once" in s1["must"]
    assert s1["implemented"] is True


def test_catalogue_checks_and_reference_agree() -> None:
    """Each contract is declared once: every catalogue entry has a check in each of its situations (or
    says in ``unchecked`` why this kit build has none), every registered check is a situation of an
    entry, and docs/contracts.md is exactly what the catalogue renders."""
    registered: dict[str, list[str]] = {}
    for spec in load_checks():
        registered.setdefault(spec.contract_id, []).append(spec.situation)
    assert sorted(set(registered) - set(CATALOGUE)) == []
    for cid, entry in CATALOGUE.items():
        if entry.unchecked:
            assert cid not in registered, f"{cid} says it is unchecked ({entry.unchecked}) but has a check"
            continue
        assert registered.get(cid) == list(entry.situations), (
            f"{cid}: the catalogue declares situations {list(entry.situations)}, the registered checks "
            f"cover {registered.get(cid, [])}"
        )
    committed = (Path(__file__).resolve().parents[2] / "docs" / "contracts.md").read_text(encoding="utf-8")
    assert committed == catalogue_markdown(), (
        "docs/contracts.md is stale: regenerate it with "
        "`python -m conformance --catalogue-markdown > docs/contracts.md`"
    )


def test_applicability_names_known_capabilities_and_situations() -> None:
    """What an entry requires is a capability its subject can declare (or a fact the plan finds), with
    a value of that capability's type, so a typo in the catalogue cannot silently plan a contract n/a."""
    facts = {"agentlightning", "registered_alias"}
    for cid, entry in CATALOGUE.items():
        known = STORE_CAPABILITY_DEFAULTS if entry.subject == "store" else CAPABILITY_DEFAULTS
        needs = [entry.requires, *entry.situation_requires.values()]
        for name, value in (pair for mapping in needs for pair in mapping.items()):
            if name in facts:
                assert value is True, cid
                continue
            assert name in known, f"{cid} requires unknown capability {name!r}"
            default = known[name]
            if isinstance(default, tuple):
                assert value in default, f"{cid}: {value!r} is no item {name} can list"
            else:
                assert type(value) is type(default), f"{cid}: {name} is a {type(default).__name__}"
        if entry.limitation_unless:
            assert known.get(entry.limitation_unless) is True, cid  # a bool whose strict reading is True
        assert set(entry.why) <= {*entry.requires, entry.limitation_unless}, cid
        assert set(entry.situation_requires) <= set(entry.situations), cid


def test_the_plan_reads_applicability_from_the_entry_alone() -> None:
    """A contract becomes n/a or a limitation only through its entry: with every capability at its
    strictest reading (and the registry facts present) the whole plan runs."""
    strategy = compute_plan(load_checks(), validate_manifest({}), subject="strategy")
    store = compute_plan(
        load_checks(),
        validate_manifest({"durable": True}, defaults=STORE_CAPABILITY_DEFAULTS),
        subject="store",
    )
    for entry in [*strategy, *store]:
        contract = CATALOGUE[entry.contract_id]
        if entry.status == "run":
            continue
        assert entry.capability in {*contract.requirements(entry.situation), contract.limitation_unless}
        # Only the registry facts (no strategy class given here) and a platform without a start method
        # may exclude an item at the strictest reading.
        assert entry.capability in {"agentlightning", "registered_alias", "supports_start_methods"}, entry


def test_every_registered_check_belongs_to_the_catalogue_and_s_and_g_are_complete() -> None:
    checks = load_checks()
    assert all(spec.contract_id in CATALOGUE for spec in checks)
    implemented = {spec.contract_id for spec in checks}
    assert {f"S{i}" for i in range(1, 7)} | {"G1", "G2", "G3"} <= implemented
    names = [spec.item_name for spec in checks]
    assert len(names) == len(set(names))
    assert "G1-buildable[alias]" in names
