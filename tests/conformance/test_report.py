"""The report: the terminal table, the JSON and Markdown files, and the worst-verdict rule."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from conformance.plan import PlanEntry
from conformance.report import (
    ConformanceReport,
    ItemResult,
    contract_verdict,
    render_markdown,
    render_table,
    report_paths,
    write_report,
)


def _report() -> ConformanceReport:
    plan = [
        PlanEntry("L2", "normal-completion", "one-runner", "run"),
        PlanEntry("L2", "normal-completion", "several-runners", "run"),
        PlanEntry("L7", "blocking-bundle", "default", "limitation", "can_cancel_blocking_code", "threads"),
        PlanEntry("F1", "worker-killed", "several-runners", "n/a", "uses_processes", "no processes"),
        PlanEntry("G2", "invalid-config", "default", "run"),
    ]
    results = [
        ItemResult("L2", "normal-completion", "one-runner", "pass", "", 0.5),
        ItemResult(
            "L2", "normal-completion", "several-runners", "fail", "observed a | hang\nsecond line", 1.25
        ),
        ItemResult(
            "L7", "blocking-bundle", "default", "limitation", "can_cancel_blocking_code: threads", 2.0
        ),
        ItemResult("F1", "worker-killed", "several-runners", "n/a", "uses_processes: no processes", 0.0),
    ]
    return ConformanceReport(
        kind="strategy",
        subject="shm",
        subject_class="pkg.Shm",
        subject_version="1.2",
        kit_version="0.1.0",
        options={"n_runners": 2},
        store_factory="pkg:Store",
        python="3.11.7",
        start_method="fork",
        seed=42,
        timeout_scale=1.5,
        plan=plan,
        results=results,
        missing=["G2-invalid-config[default]"],
        unimplemented=["P1"],
    )


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        (["pass", "fail", "n/a"], "fail"),
        (["pass", "n/a"], "pass"),
        (["n/a", "n/a"], "n/a"),
        (["pass", "limitation"], "limitation"),
        (["waived", "pass"], "waived"),
        ([], "missing"),
    ],
)
def test_a_contract_takes_its_worst_situation(verdicts: list[str], expected: str) -> None:
    assert contract_verdict(verdicts) == expected


def test_totals_and_ok() -> None:
    report = _report()
    assert report.totals() == {
        "pass": 1,
        "fail": 1,
        "blocked": 0,
        "flaky": 0,
        "n/a": 1,
        "limitation": 1,
        "waived": 0,
        "error": 0,
        "missing": 1,
    }
    assert not report.ok


def test_terminal_table_lists_contracts_worst_first_with_reasons() -> None:
    table = render_table(_report())
    lines = table.splitlines()
    assert lines[0].split() == ["verdict", "id", "name", "time", "situations"]
    assert lines[1].startswith("fail") and "L2" in lines[1] and "several-runners:fail" in lines[1]
    assert "  L2-normal-completion[several-runners]: fail: observed a | hang" in table
    assert "missing (planned, neither run nor deselected): G2-invalid-config[default]" in table
    assert "not checked by this kit build: P1" in table
    assert table.splitlines()[-1] == "totals: 1 pass, 1 fail, 1 n/a, 1 limitation, 1 missing"


def test_json_and_markdown_files(tmp_path: Path) -> None:
    written = write_report(_report(), tmp_path / "out" / "conformance")
    assert [p.name for p in written] == ["conformance.json", "conformance.md"]
    document = json.loads(written[0].read_text())
    assert document["kind"] == "strategy" and document["strategy"] == "shm"
    assert document["strategy_class"] == "pkg.Shm" and document["seed"] == 42
    assert document["contracts"] == {"L2": "fail", "L7": "limitation", "F1": "n/a"}
    assert document["results"][1]["item"] == "L2-normal-completion[several-runners]"
    assert document["results"][1]["duration"] == 1.25
    assert document["plan"][3]["status"] == "n/a" and document["plan"][3]["capability"] == "uses_processes"
    assert document["ok"] is False
    markdown = written[1].read_text()
    assert markdown.startswith("# Conformance report: `shm`")
    assert "| L2 | normal-completion | fail |" in markdown
    assert "observed a \\| hang |" in markdown  # pipes escaped, only the first line of a reason
    assert "`--conformance-seed 42`" in markdown
    assert markdown == render_markdown(_report())


def test_a_store_report_names_the_store_its_options_and_access_paths() -> None:
    report = dataclasses.replace(
        _report(),
        kind="store",
        subject="pkg.stores:make",
        subject_class="pkg.stores.Store",
        subject_version="2.0",
        options={},
        store_options={"path": "/tmp/db"},
        access_paths=["in-process", "http"],
    )
    document = report.to_dict()
    assert document["kind"] == "store" and "strategy" not in document
    assert (document["store"], document["store_class"], document["store_version"]) == (
        "pkg.stores:make",
        "pkg.stores.Store",
        "2.0",
    )
    assert document["store_options"] == {"path": "/tmp/db"}
    assert document["access_paths"] == ["in-process", "http"]
    markdown = render_markdown(report)
    assert markdown.startswith("# Conformance report: `pkg.stores:make`")
    assert "- store: `pkg.stores.Store` 2.0" in markdown
    assert '- store options: `path="/tmp/db"`' in markdown
    assert "- access paths: in-process, http" in markdown
    assert "start method" not in markdown


def test_report_paths_follow_the_suffix(tmp_path: Path) -> None:
    assert report_paths(tmp_path / "r.json") == [tmp_path / "r.json"]
    assert report_paths(tmp_path / "r.md") == [tmp_path / "r.md"]
    assert report_paths(tmp_path / "r") == [tmp_path / "r.json", tmp_path / "r.md"]


def test_plugin_writes_the_report_files(kit_project: pytest.Pytester) -> None:
    result = kit_project.runpytest_subprocess(
        "--strategy=plugin_strategies.Lax",
        "--conformance-report=reports/run",
        "--conformance-seed=1234",
        "-k",
        "G1 or G2",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # G2 fails for Lax
    document = json.loads((kit_project.path / "reports" / "run.json").read_text())
    assert document["strategy_class"] == "plugin_strategies.Lax"
    assert document["seed"] == 1234
    verdicts = {r["item"]: r["verdict"] for r in document["results"]}
    assert verdicts["G2-invalid-config[default]"] == "fail"
    assert verdicts["G1-buildable[class]"] == "pass"
    assert verdicts["G1-buildable[alias]"] == "n/a"
    assert document["totals"]["fail"] == 1 and document["missing"] == []
    assert "G3-picklable[default]" in document["deselected"]
    failure = next(r for r in document["results"] if r["verdict"] == "fail")
    assert "n_runners=0: accepted" in failure["reason"]
    markdown = (kit_project.path / "reports" / "run.md").read_text()
    assert "| G2 | invalid-config | fail |" in markdown
    only_json = kit_project.runpytest_subprocess(
        "--strategy=plugin_strategies.Strict", "--conformance-report=one.json", "-k", "G2"
    )
    assert only_json.ret == 0
    assert json.loads((kit_project.path / "one.json").read_text())["ok"] is True
    assert not (kit_project.path / "one.md").exists()
