"""The certificate: a round trip through build, write, load and verify; tampering and incomplete runs are
refused with their reason; the badge; ``python -m conformance verify``; the plugin writes one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance import __version__ as KIT_VERSION
from conformance.certificate import (
    CertificateError,
    badge,
    build_certificate,
    document_digest,
    load_certificate,
    verify_certificate,
    write_certificate,
)
from conformance.checks import load_checks
from conformance.plan import compute_plan, select_for_profile
from conformance.profiles import get_profile
from conformance.report import ConformanceReport, ItemResult
from conformance.target import make_target, validate_target

SPEC = "strategies.single_loop.SingleLoopExecutionStrategy"
REPO = Path(__file__).resolve().parents[2]


def _certificate(profile: str = "certify", verdict: str = "pass") -> dict[str, Any]:
    """A certificate of a run in which every planned item got ``verdict`` (built, not run: the kit's
    verdicts are the plugin's business, the document's logic is this module's)."""
    resolved = validate_target(make_target(SPEC, []))
    checks = [c for c in load_checks() if not c.contract_id.startswith("T")]
    chosen = get_profile(profile)
    plan, left_out = select_for_profile(
        compute_plan(checks, resolved.capabilities, resolved.strategy_class), chosen
    )
    results = [
        ItemResult(
            e.contract_id,
            e.name,
            e.situation,
            "n/a" if e.status == "n/a" else verdict,
            e.reason,
            0.5,
            ("n/a",) if e.status == "n/a" else (verdict,) * chosen.repeat,
            "execute() 0.100 s (slowest of 1 scenario(s))",
            "hang bound 30 s",
        )
        for e in plan
    ]
    report = ConformanceReport(
        kind="strategy",
        subject=SPEC,
        subject_class=resolved.class_path,
        subject_version=resolved.version,
        kit_version=KIT_VERSION,
        options={},
        store_factory="agentlightning.store.memory:InMemoryLightningStore",
        python="3.11",
        start_method="fork",
        seed=7,
        timeout_scale=1.0,
        plan=plan,
        results=results,
        profile=chosen.name,
        left_out=left_out,
        repeat=chosen.repeat,
        flaky_fails=chosen.flaky_fails,
    )
    return build_certificate(
        report,
        profile=chosen,
        capabilities=resolved.capabilities,
        checks=checks,
        strategy_class=resolved.strategy_class,
    )


def test_a_certificate_round_trips_and_verifies(tmp_path: Path) -> None:
    document = _certificate()
    path = write_certificate(document, tmp_path / "cert.json")
    loaded = load_certificate(path)
    assert loaded == json.loads(json.dumps(document))
    assert verify_certificate(loaded) == []
    assert loaded["profile"]["name"] == "certify" and loaded["repeat"] == 3
    assert loaded["subject"]["source_hash"].startswith("sha256:")
    assert all(e["reason"] for e in loaded["plan"] if e["status"] == "n/a")
    result = next(r for r in loaded["results"] if r["verdict"] == "pass")
    assert result["figure"] and result["bound"]
    assert badge(loaded, [])["color"] == "brightgreen"
    assert badge(loaded, [])["message"].startswith(f"{loaded['totals']['pass']}/")


def _redigest(document: dict[str, Any]) -> dict[str, Any]:
    document["digest"] = document_digest(document)
    return document


def test_an_edited_certificate_fails_its_digest() -> None:
    document = _certificate(verdict="fail")
    document["results"][0]["verdict"] = "pass"  # hiding a failure by hand
    assert verify_certificate(document) == [
        "the digest does not match the content: the document was edited after it was written"
    ]


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (lambda d: d.update(kit_version="0.0.1"), "kit version '0.0.1' differs from the installed"),
        (lambda d: d.update(catalogue_hash="sha256:0"), "the catalogue differs"),
        (lambda d: d.update(checks_hash="sha256:0"), "the registered checks differ"),
        (lambda d: d["subject"].update(source_hash="sha256:0"), "changed since it was certified"),
        (lambda d: d.update(waivers="w.toml"), "waived: the run used the waiver file w.toml"),
        (lambda d: d.update(deselected=["K3-x[y]"]), "incomplete: 1 item(s) deselected"),
        (lambda d: d["results"].pop(0), "has no verdict"),
        (lambda d: d["results"][0].update(verdict="flaky"), ": flaky"),
        (lambda d: d["subject"]["capabilities"].update(uses_processes=True), "the plan differs"),
        (lambda d: d.update(repeat=0), "repeat 0 is not a positive number of runs"),
    ],
)
def test_verify_names_every_reason_a_document_is_no_certificate(tamper: Any, problem: str) -> None:
    document = _certificate()
    tamper(document)
    problems = verify_certificate(_redigest(document))
    assert any(problem in p for p in problems), problems
    assert badge(document, problems) == {
        "schemaVersion": 1,
        "label": "conformance",
        "message": "not certified",
        "color": "red",
    }


def test_a_failing_or_partial_run_is_not_certified() -> None:
    failing = verify_certificate(_certificate(verdict="fail"))
    assert "the run itself did not pass (ok: false)" in failing
    assert any(p.endswith(": fail") for p in failing)
    quick = verify_certificate(_certificate(profile="quick"))
    assert any(p.startswith("incomplete: profile 'quick' left out") for p in quick), quick


def test_python_m_conformance_verify(tmp_path: Path) -> None:
    good = write_certificate(_certificate(), tmp_path / "good.json")
    bad = write_certificate(_certificate(verdict="fail"), tmp_path / "bad.json")

    def verify(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conformance", "verify", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    ok = verify(str(good), "--badge", str(tmp_path / "badge.json"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("CERTIFIED: strategies.single_loop.SingleLoopExecutionStrategy")
    assert json.loads((tmp_path / "badge.json").read_text())["color"] == "brightgreen"
    refused = verify(str(bad))
    assert refused.returncode == 1 and refused.stdout.startswith("NOT CERTIFIED:"), refused.stdout
    (tmp_path / "junk.json").write_text("[]")
    junk = verify(str(tmp_path / "junk.json"))
    assert junk.returncode == 2 and "not a conformance certificate" in junk.stderr


def test_load_refuses_a_file_that_is_no_certificate(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(CertificateError, match=r"x\.json: not a readable JSON certificate"):
        load_certificate(tmp_path / "x.json")


def test_the_plugin_writes_a_certificate_and_junit_properties(kit_project: pytest.Pytester) -> None:
    result = kit_project.runpytest_subprocess(
        "--strategy=plugin_strategies.Lax",
        "-k",
        "G2",
        "--conformance-certificate=cert.json",
        "--junitxml=junit.xml",
    )
    result.stdout.fnmatch_lines(
        [
            "conformance certificate written to cert.json; "
            "verify it with python -m conformance verify cert.json"
        ]
    )
    document = load_certificate(kit_project.path / "cert.json")
    section_d = document["subject"]["section_d"]  # what section D would build it with, and its bounds
    assert (section_d["declared"], section_d["options"]) == ({}, {})
    assert section_d["bounds"]["late_store_seconds"] == 10.0
    problems = verify_certificate(document)
    assert any("deselected" in p for p in problems) and any(
        "G2-invalid-config[default]: fail" in p for p in problems
    )
    from xml.etree import ElementTree

    root = ElementTree.parse(kit_project.path / "junit.xml").getroot()
    case = next(c for c in root.iter("testcase") if c.get("name") == "G2-invalid-config[default]")
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["conformance_contract"] == "G2"
    assert properties["conformance_situation"] == "default"
    assert properties["conformance_figure"].endswith("invalid values mishandled")
    assert properties["conformance_bound"].startswith("ValueError naming the parameter")
