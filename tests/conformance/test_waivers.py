"""Waivers: parsed from TOML or JSON, expire with the kit version, and fail when stale or unknown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance import __version__ as KIT_VERSION
from conformance.waivers import WaiverError, load_waivers

STRICT = "plugin_strategies.Strict"
LAX = "plugin_strategies.Lax"


def _toml(path: Path, *entries: str) -> Path:
    path.write_text("\n".join(entries), encoding="utf-8")
    return path


def _entry(cid: str, reason: str = "known issue", version: str = KIT_VERSION, extra: str = "") -> str:
    return f'[[waiver]]\nid = "{cid}"\nreason = "{reason}"\nkit_version = "{version}"\n{extra}\n'


def test_toml_and_json_files_load(tmp_path: Path) -> None:
    toml = _toml(
        tmp_path / "w.toml", _entry("L7", "blocked C calls"), _entry("K3", extra='situations = ["event-set"]')
    )
    waivers = load_waivers(toml, kit_version=KIT_VERSION)
    assert waivers.find("L7", "default") is not None
    assert waivers.find("L7", "default").reason == "blocked C calls"  # type: ignore[union-attr]
    assert waivers.find("K3", "event-set") is not None
    assert waivers.find("K3", "while-running") is None
    document = {"waivers": [{"id": "E4", "reason": "r", "kit_version": KIT_VERSION}]}
    path = tmp_path / "w.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    assert load_waivers(path, kit_version=KIT_VERSION).find("E4", "default") is not None


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ((_entry("Z9"),), "unknown contract ID 'Z9'"),
        ((_entry("L7", version="0.0.1"),), "waiver for L7 was written for kit 0.0.1"),
        (('[[waiver]]\nid = "L7"\nkit_version = "0.1.0"\n',), "'reason' is required"),
        ((_entry("L7", extra='expires = "never"'),), "unknown field 'expires'"),
        ((_entry("L7"), _entry("L7", extra='situations = ["default"]')), "L7 is waived twice"),
        ((_entry("L7", extra='situations = "default"'),), "'situations' must be a non-empty list"),
        (("[whatever]\nx = 1\n",), "unknown top-level key 'whatever'"),
        (("this is = not toml [",), "is not valid TOML"),
    ],
)
def test_bad_waiver_files_are_errors_naming_the_problem(
    tmp_path: Path, entries: tuple[str, ...], named: str
) -> None:
    with pytest.raises(WaiverError) as error:
        load_waivers(_toml(tmp_path / "w.toml", *entries), kit_version=KIT_VERSION)
    assert named in str(error.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(WaiverError, match=r"cannot read waiver file .*nowhere\.toml"):
        load_waivers(tmp_path / "nowhere.toml", kit_version=KIT_VERSION)


def test_unknown_situation_is_an_error(tmp_path: Path) -> None:
    waivers = load_waivers(
        _toml(tmp_path / "w.toml", _entry("K3", extra='situations = ["teatime"]')), kit_version=KIT_VERSION
    )
    with pytest.raises(WaiverError, match="unknown situation 'teatime'; known: before-start, while-running"):
        waivers.check_situations({"K3": ["before-start", "while-running"]})


def test_waived_failure_is_xfailed_waived(kit_project: pytest.Pytester) -> None:
    _toml(kit_project.path / "waivers.toml", _entry("G2", "our config is validated elsewhere"))
    result = kit_project.runpytest_subprocess(
        f"--strategy={LAX}", "--conformance-waivers=waivers.toml", "-k", "G2", "-rx"
    )
    result.assert_outcomes(xfailed=1, passed=0, failed=0)
    result.stdout.fnmatch_lines(
        ["waived*G2*invalid-config*", "*XFAIL*G2*waived: our config is validated elsewhere*"]
    )
    assert result.ret == 0


def test_waiver_for_a_passing_contract_is_stale(kit_project: pytest.Pytester) -> None:
    _toml(kit_project.path / "waivers.toml", _entry("G2", "was broken once"))
    result = kit_project.runpytest_subprocess(
        f"--strategy={STRICT}", "--conformance-waivers=waivers.toml", "-k", "G2"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*waiver for G2 is stale: G2 now passes; remove it*"])


def test_waiver_for_an_unknown_id_is_a_usage_error(kit_project: pytest.Pytester) -> None:
    _toml(kit_project.path / "waivers.toml", _entry("Q7"))
    result = kit_project.runpytest_subprocess(f"--strategy={STRICT}", "--conformance-waivers=waivers.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown contract ID 'Q7'*"])
    assert "Traceback" not in result.stderr.str()
