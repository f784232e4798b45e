"""The pinned upstream verdicts and the upstream waiver file agree with each other and the catalogue."""

from __future__ import annotations

import sys
from pathlib import Path

from conformance.catalogue import CATALOGUE
from conformance.verdicts import VERDICTS
from conformance.waivers import load_waivers

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as _toml

_PACKAGING = Path(__file__).resolve().parents[2] / "packaging" / "conformance"


def _pins() -> dict[str, dict[str, object]]:
    return _toml.loads((_PACKAGING / "upstream-verdicts.toml").read_text(encoding="utf-8"))


def test_every_pinned_failure_is_an_explained_upstream_defect() -> None:
    pins = _pins()
    defects = pins["defects"]
    known = set(CATALOGUE)
    assert set(defects) <= known
    for version, configurations in dict(pins.get("verdicts", {})).items():
        for name, verdicts in configurations.items():
            for cid, verdict in verdicts.items():
                assert cid in known, f"{version} {name}: unknown contract {cid}"
                assert verdict in (*VERDICTS, "missing"), f"{version} {name} {cid}: {verdict!r}"
                assert verdict not in ("fail", "error") or cid in defects, f"{version} {name} {cid}"


def test_the_upstream_waiver_file_waives_exactly_the_failures_pinned_for_shm_on_0_3_0_and_0_2_2() -> None:
    waivers = load_waivers(_PACKAGING / "upstream-0.3.0-waivers.toml", kit_version="0.1.0")
    waived = {waiver.contract_id for waiver in waivers.entries}
    for version in ("0.3.0", "0.2.2"):  # one file: 0.2.2's base-class defects are 0.3.0's
        pinned = _pins()["verdicts"][version]["shm-algorithm"]
        assert waived == {c for c, v in pinned.items() if v == "fail"}, version
