"""The catalogue covers every contract of CONTRACTS.md by ID and name, and exports as JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conformance.catalogue import CATALOGUE, SECTIONS, catalogue_json, get_contract
from conformance.checks import load_checks

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


def test_every_registered_check_belongs_to_the_catalogue_and_s_and_g_are_complete() -> None:
    checks = load_checks()
    assert all(spec.contract_id in CATALOGUE for spec in checks)
    implemented = {spec.contract_id for spec in checks}
    assert {f"S{i}" for i in range(1, 7)} | {"G1", "G2", "G3"} <= implemented
    names = [spec.item_name for spec in checks]
    assert len(names) == len(set(names))
    assert "G1-buildable[alias]" in names
