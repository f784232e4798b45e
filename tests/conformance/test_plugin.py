"""The pytest plugin end to end, through pytest's public ``pytester``: options, usage errors, collection
beside a project's tests, selection by ID, verdict mapping, the plan, no silent shrinkage, xdist, JUnit."""

from __future__ import annotations

import importlib.util
import json
import signal
import sys
from xml.etree import ElementTree

import pytest

STRICT = "--strategy=plugin_strategies.Strict"
LAX = "--strategy=plugin_strategies.Lax"
HAS_REGISTRY = importlib.util.find_spec("agentlightning.trainer.registry") is not None


def _usage_error(result: pytest.RunResult, *fragments: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    err = result.stderr.str()
    for fragment in fragments:
        assert fragment in err, err
    assert "Traceback" not in err and "Traceback" not in result.stdout.str()


def test_without_a_strategy_the_plugin_is_inert(kit_project: pytest.Pytester) -> None:
    result = kit_project.runpytest_subprocess("-v")
    result.assert_outcomes(passed=1)
    # No header, plan or item of the kit (the plugin's own distribution name may appear in pytest's header).
    assert [line for line in result.stdout.lines if line.startswith("conformance")] == []
    listed = kit_project.runpytest_subprocess("--collect-only", "-q")
    assert [line for line in listed.stdout.lines if "::" in line] == ["test_own.py::test_own_test_still_runs"]


def test_the_suite_is_collected_beside_the_projects_tests_in_a_stable_order(
    kit_project: pytest.Pytester,
) -> None:
    first = kit_project.runpytest_subprocess(STRICT, "--collect-only", "-q")
    assert first.ret == pytest.ExitCode.OK
    ids = [line for line in first.stdout.lines if "::" in line]
    assert ids[0] == "test_own.py::test_own_test_still_runs"
    assert "conformance::K3-sigint-main[while-running]" in ids or "conformance::G1-buildable[alias]" in ids
    assert "conformance::S1-exactly-once[several-runners]" in ids
    assert "conformance::G2-invalid-config[default]" in ids
    second = kit_project.runpytest_subprocess(STRICT, "--collect-only", "-q", "--conformance-seed=7")
    assert [line for line in second.stdout.lines if "::" in line] == ids


def test_k_selects_a_contract_by_id(kit_project: pytest.Pytester) -> None:
    result = kit_project.runpytest_subprocess(STRICT, "-k", "G2", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["conformance::G2-invalid-config[[]default[]] PASSED*"])
    assert "test_own_test_still_runs" not in result.stdout.str()


@pytest.mark.skipif(not HAS_REGISTRY, reason="agentlightning's registry is not importable")
def test_unknown_alias_is_a_usage_error_naming_it(kit_project: pytest.Pytester) -> None:
    _usage_error(
        kit_project.runpytest_subprocess("--strategy=shmm"),
        "unknown strategy 'shmm'; did you mean 'shm'? known aliases: cs, ipc, ray, shm",
    )


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--strategy=plugin_strategies.Nope"], ["'plugin_strategies' has no attribute 'Nope'"]),
        (["--strategy=no_such_pkg.Strategy"], ["no module named 'no_such_pkg'"]),
        (["--strategy=plugin_strategies.not_a_class"], ["is not a class"]),
        (
            [STRICT, "--strategy-option", "n_runners=0"],
            ["n_runners=0", "ValueError: n_runners must be a positive"],
        ),
        (
            [STRICT, "--strategy-option", "colour=red"],
            ["colour='red'", "unexpected keyword argument 'colour'"],
        ),
        ([STRICT, "--strategy-option", "n_runners"], ["--strategy-option 'n_runners' must be key=value"]),
        ([STRICT, "--store", "no_such_store:Factory"], ["store factory 'no_such_store:Factory'"]),
        (
            [STRICT, "--conformance-timeout-scale=0"],
            ["--conformance-timeout-scale 0.0 must be a positive number"],
        ),
        (["--strategy=plugin_strategies.Misspelled"], ["unknown capability 'uses_process'; did you mean"]),
        (
            ["--strategy=plugin_strategies.BadHostOptions"],
            [
                "declares host_test_options grace_seconds=-1.0 that it refuses to be built with",
                "ValueError: grace_seconds must be a number >= 0, got -1.0",
            ],
        ),
    ],
)
def test_bad_spec_option_or_store_is_a_usage_error(
    kit_project: pytest.Pytester, args: list[str], fragments: list[str]
) -> None:
    _usage_error(kit_project.runpytest_subprocess(*args), *fragments)


def test_the_ini_key_stands_in_for_the_option(kit_project: pytest.Pytester) -> None:
    kit_project.makeini(
        "[pytest]\n"
        "conformance_strategy = plugin_strategies.Strict\n"
        "conformance_strategy_options = n_runners=2\n"
    )
    result = kit_project.runpytest_subprocess("-k", "G1 and class", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*conformance: options n_runners=2;*"])


def test_header_names_strategy_versions_seed_and_plan(kit_project: pytest.Pytester) -> None:
    result = kit_project.runpytest_subprocess(STRICT, "--conformance-seed=99", "-k", "G2")
    result.stdout.fnmatch_lines(
        [
            "conformance kit *: strategy 'plugin_strategies.Strict' -> plugin_strategies.Strict *",
            "conformance: options none; store agentlightning.store.memory:InMemoryLightningStore",
            f"conformance: Python {sys.version.split()[0]}, start method *, seed 99 "
            "(replay with --conformance-seed 99)*",
            'conformance: capabilities {*"uses_processes": false*',
            "conformance plan: * items: * run, * limitation expected, * n/a",
            "  n/a: G3-picklable[[]default[]] (uses_processes): *",
        ]
    )


def test_not_applicable_items_are_skipped_with_their_reason(kit_project: pytest.Pytester) -> None:
    result = kit_project.runpytest_subprocess(STRICT, "-k", "G3", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [[]1[]] *configuration.py:*: n/a (uses_processes): "
            "the strategy declares uses_processes=False*"
        ]
    )


def test_a_failure_starts_with_the_contract_id_and_name(kit_project: pytest.Pytester) -> None:
    result = kit_project.runpytest_subprocess(LAX, "-k", "G2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ G2 invalid-config [[]default[]] _*",
            "G2 invalid-config",
            "  expected: ValueError naming the parameter for each invalid value, at construction",
            "  observed: ",
            "    n_runners=0: accepted",
            "*",
            "  measured: 3 of 3 invalid values mishandled",
        ]
    )
    result.stdout.fnmatch_lines(["fail * G2 * invalid-config *default:fail", "totals: 1 fail"])


def test_what_ran_must_match_the_plan(kit_project: pytest.Pytester) -> None:
    # A plugin that silently drops a planned item (no pytest_deselected): the gate must fail.
    kit_project.makeconftest(
        """
        def pytest_collection_modifyitems(items):
            items[:] = [item for item in items if item.name != "G1-buildable[dict]"]
        """
    )
    result = kit_project.runpytest_subprocess(STRICT, "-k", "G1")
    result.assert_outcomes(passed=3, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*conformance: FAILED: what ran differs from the plan; missing 1 item(s): G1-buildable[[]dict[]]*"]
    )


def test_deselection_is_not_shrinkage(kit_project: pytest.Pytester) -> None:
    result = kit_project.runpytest_subprocess(
        STRICT, "-k", "G1 or G2", "--deselect", "conformance::G2-invalid-config[default]"
    )
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines(["totals: 4 pass, 1 n/a"])


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="pytest-xdist is not installed")
def test_works_under_xdist_and_the_controller_builds_the_table(kit_project: pytest.Pytester) -> None:
    result = kit_project.runpytest_subprocess(
        LAX, "-n", "2", "-k", "G1 or G2", "--conformance-report=xd.json"
    )
    result.assert_outcomes(passed=4, skipped=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*fail * G2 * invalid-config*", "*pass * G1 * buildable*", "totals: 4 pass, 1 fail, 1 n/a"]
    )
    document = json.loads((kit_project.path / "xd.json").read_text())
    assert len(document["results"]) == 6 and document["missing"] == []


@pytest.mark.skipif(
    importlib.util.find_spec("pytest_timeout") is None, reason="pytest-timeout is not installed"
)
def test_works_with_pytest_timeout_and_junit_xml(kit_project: pytest.Pytester) -> None:
    result = kit_project.runpytest_subprocess(LAX, "--timeout=120", "-k", "G2 or G1", "--junitxml=junit.xml")
    result.assert_outcomes(passed=4, skipped=1, failed=1)
    root = ElementTree.parse(kit_project.path / "junit.xml").getroot()
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert "G2-invalid-config[default]" in cases
    g2 = cases["G2-invalid-config[default]"]
    assert g2.get("classname") == "conformance"
    assert g2.find("failure") is not None
    verdict = next(p for p in g2.iter("property") if p.get("name") == "conformance_verdict")
    assert json.loads(verdict.get("value") or "{}")["verdict"] == "fail"


def test_python_m_conformance(kit_project: pytest.Pytester) -> None:
    helped = kit_project.run(sys.executable, "-m", "conformance", "--help")
    assert helped.ret == 0
    helped.stdout.fnmatch_lines(["usage: python -m conformance SPEC [[]pytest args[]]"])
    catalogue = kit_project.run(sys.executable, "-m", "conformance", "--catalogue")
    assert catalogue.ret == 0
    assert [c["id"] for c in json.loads(catalogue.stdout.str())["contracts"]][:2] == ["L1", "L2"]
    missing = kit_project.run(sys.executable, "-m", "conformance")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    ran = kit_project.run(
        sys.executable, "-m", "conformance", "plugin_strategies.Strict", "-k", "G2 or test_own"
    )
    assert ran.ret == 0
    ran.stdout.fnmatch_lines(["*1 passed*"])
    assert "test_own_test_still_runs" not in ran.stdout.str()  # only the contract suite
    failed = kit_project.run(sys.executable, "-m", "conformance", "plugin_strategies.Lax", "-k", "G2")
    assert failed.ret == pytest.ExitCode.TESTS_FAILED


def _plugins_line(result: pytest.RunResult) -> str:
    """pytest's header line naming the plugins loaded from installed distributions."""
    return next((line for line in result.stdout.lines if line.startswith("plugins:")), "plugins: none")


def test_python_m_conformance_loads_only_the_kit_and_its_cooperating_plugins(
    kit_project: pytest.Pytester,
) -> None:
    # hypothesis registers a pytest plugin and is one of the kit's own dependencies: always installed.
    selection = ("plugin_strategies.Strict", "-k", "G2", "-p", "no:cacheprovider")
    alone = kit_project.run(sys.executable, "-m", "conformance", *selection)
    assert alone.ret == 0, alone.stdout.str() + alone.stderr.str()
    alone.stdout.fnmatch_lines(["*1 passed*"])
    assert "hypothesis-" not in _plugins_line(alone)
    if importlib.util.find_spec("xdist") is not None:
        assert "xdist-" in _plugins_line(alone)
    named = kit_project.run(sys.executable, "-m", "conformance", *selection, "-p", "hypothesispytest")
    assert named.ret == 0 and "hypothesis-" in _plugins_line(named)
    every = kit_project.run(sys.executable, "-m", "conformance", *selection, "--plugin-autoload")
    assert every.ret == 0, every.stdout.str() + every.stderr.str()
    assert "hypothesis-" in _plugins_line(every)
    assert "--plugin-autoload" not in every.stderr.str()


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="pytest-xdist is not installed")
def test_python_m_conformance_runs_on_xdist_workers_without_autoload(kit_project: pytest.Pytester) -> None:
    result = kit_project.run(
        sys.executable, "-m", "conformance", "plugin_strategies.Strict", "-k", "G1 or G2", "-n", "2"
    )
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*2 workers*", "*passed*"])


def _shm_available() -> bool:
    try:
        from conformance.target import resolve_strategy_class

        resolve_strategy_class("shm")
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _shm_available(), reason="the shm reference strategy is not importable")
def test_store_contracts_pass_for_the_shm_reference_strategy(kit_project: pytest.Pytester) -> None:
    result = kit_project.run(
        sys.executable,
        "-m",
        "conformance",
        "shm",
        "-k",
        "S1 or S3 or S4 or S6",
        "--conformance-report=shm.json",
    )
    assert result.ret == 0, result.stdout.str()
    document = json.loads((kit_project.path / "shm.json").read_text())
    assert {r["id"] for r in document["results"]} == {"S1", "S3", "S4", "S6"}
    assert all(r["verdict"] == "pass" for r in document["results"])


def test_store_contracts_pass_for_a_correct_strategy_and_fail_for_a_broken_one(
    kit_project: pytest.Pytester,
) -> None:
    selection = [
        "-k",
        "S1 or S2 or S3 or S4 or S5 or S6",
        "--conformance-report=r.json",
        "-p",
        "no:cacheprovider",
    ]
    good = kit_project.run(sys.executable, "-m", "conformance", "plugin_strategies.Loop", *selection)
    assert good.ret == 0, good.stdout.str()
    verdicts = {
        r["item"]: r["verdict"] for r in json.loads((kit_project.path / "r.json").read_text())["results"]
    }
    assert len(verdicts) == 9 and set(verdicts.values()) == {"pass"}
    broken = kit_project.run(
        sys.executable, "-m", "conformance", "plugin_strategies.PrivateStore", *selection
    )
    assert broken.ret == pytest.ExitCode.TESTS_FAILED
    results = json.loads((kit_project.path / "r.json").read_text())["results"]
    assert sorted(r["item"] for r in results if r["verdict"] == "fail") == [
        "S3-caller-store-updated[one-runner]",
        "S3-caller-store-updated[several-runners]",
        "S6-unmanaged-store[default]",
    ]
    broken.stdout.fnmatch_lines(
        ["S3 caller-store-updated", "  expected: the caller's store * holds every rollout*"]
    )


def test_profile_quick_runs_one_situation_per_contract_and_the_header_says_so(
    kit_project: pytest.Pytester,
) -> None:
    full = kit_project.runpytest_subprocess(STRICT, "--collect-only", "-q")
    quick = kit_project.runpytest_subprocess(STRICT, "--collect-only", "-q", "--conformance-profile=quick")
    full_ids = [line for line in full.stdout.lines if "::" in line and "conformance" in line]
    quick_ids = [line for line in quick.stdout.lines if "::" in line and "conformance" in line]
    assert set(quick_ids) < set(full_ids)
    assert sum("K3-" in line for line in quick_ids) == 1 < sum("K3-" in line for line in full_ids)
    header = kit_project.runpytest_subprocess(STRICT, "--conformance-profile=quick", "-k", "G2")
    header.stdout.fnmatch_lines(
        [
            "conformance: Python *, seed *, timeout scale 1.0, profile quick",
            "conformance profile quick: *; leaves out * situation(s) of * planned*",
            "conformance P1: quick profile, 5 scenarios",
        ]
    )


def test_an_unknown_profile_is_a_usage_error(kit_project: pytest.Pytester) -> None:
    _usage_error(
        kit_project.runpytest_subprocess(STRICT, "--conformance-profile=fast"),
        "unknown conformance profile 'fast'; known profiles: quick, ci, thorough, certify",
    )


def test_a_failed_prerequisite_blocks_its_dependents_by_name(kit_project: pytest.Pytester) -> None:
    # L1 is not selected: the kit settles it all the same before the S items, and blocks them on it.
    broken = kit_project.run(
        sys.executable,
        "-m",
        "conformance",
        "plugin_strategies.OneRunner",
        "-k",
        "S1 or S2 or G2",
        "--conformance-report=r.json",
        "-p",
        "no:cacheprovider",
    )
    assert broken.ret == pytest.ExitCode.TESTS_FAILED, broken.stdout.str()
    document = json.loads((kit_project.path / "r.json").read_text())
    verdicts = {r["item"]: (r["verdict"], r["reason"]) for r in document["results"]}
    assert verdicts["G2-invalid-config[default]"][0] == "pass"  # section G depends on nothing
    blocked = {item: reason for item, (verdict, reason) in verdicts.items() if verdict == "blocked"}
    assert sorted(blocked) == [
        "S1-exactly-once[default]",
        "S2-store-consistency[one-runner]",
        "S2-store-consistency[several-runners]",
    ] or sorted(blocked) == sorted(i for i in verdicts if i.startswith(("S1", "S2")))
    assert len(blocked) >= 3
    for reason in blocked.values():
        assert reason.startswith("blocked by L1 bundles-called [several-runners]: observed runners were"), (
            reason
        )
    assert document["contracts"]["S1"] == "blocked" and not document["ok"]
    broken.stdout.fnmatch_lines(["*blocked by L1 bundles-called [[]several-runners[]]*"])


def test_repeat_reports_passes_per_contract_and_flags_a_flaky_item(kit_project: pytest.Pytester) -> None:
    steady = kit_project.runpytest_subprocess(
        STRICT, "-k", "G2", "--conformance-repeat=3", "--conformance-report=s.json"
    )
    assert steady.ret == pytest.ExitCode.OK, steady.stdout.str()
    steady.stdout.fnmatch_lines(
        ["*each item runs 3 times*", "repeat 3: passes/runs per contract*", "  G2    3/3 *"]
    )
    assert json.loads((kit_project.path / "s.json").read_text())["results"][0]["runs"] == ["pass"] * 3
    moody = ["--strategy=plugin_strategies.Moody", "-k", "G2", "--conformance-report=m.json"]
    # ci: a flaky item is reported (and warned about) but does not fail the gate
    reported = kit_project.runpytest_subprocess(*moody, "--conformance-repeat=3")
    assert reported.ret == pytest.ExitCode.OK, reported.stdout.str()
    document = json.loads((kit_project.path / "m.json").read_text())
    assert document["results"][0]["verdict"] == "flaky" and document["results"][0]["runs"] == [
        "pass",
        "fail",
        "pass",
    ]
    assert document["reliability"]["G2"]["passes"] == 2 and document["ok"]
    # certify: the same flaky item fails the gate, with both runs side by side
    gated = kit_project.runpytest_subprocess(*moody, "--conformance-profile=certify")
    assert gated.ret == pytest.ExitCode.TESTS_FAILED, gated.stdout.str()
    gated.stdout.fnmatch_lines(
        [
            "G2 invalid-config: flaky: passed 2/3 runs; a failing run observed*",
            "*journals:",
            "a passing run * | a failing run",
        ]
    )
    assert not json.loads((kit_project.path / "m.json").read_text())["ok"]


def test_a_bad_repeat_count_is_a_usage_error(kit_project: pytest.Pytester) -> None:
    _usage_error(
        kit_project.runpytest_subprocess(STRICT, "--conformance-repeat=0"),
        "--conformance-repeat 0 must be a positive number of runs",
    )


def test_header_says_when_the_kit_was_started_with_sigint_ignored(kit_project: pytest.Pytester) -> None:
    # A background job of a non-interactive shell (`cmd &`) starts with SIGINT ignored; children inherit it.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = kit_project.runpytest_subprocess(STRICT, "-k", "G2")
    finally:
        signal.signal(signal.SIGINT, previous)
    result.stdout.fnmatch_lines(["conformance: this run was started with SIGINT ignored *(K3-K5, D1)*"])
    plain = kit_project.runpytest_subprocess(STRICT, "-k", "G2")
    assert "this run was started with" not in plain.stdout.str()


def test_a_timed_contract_that_passes_says_its_margin(kit_project: pytest.Pytester) -> None:
    """A bound met by a hair is a flake waiting to happen: the summary shows the figure of a pass too."""
    result = kit_project.runpytest_subprocess("--strategy=shm", "-k", "K5")
    result.assert_outcomes(passed=1)
    margin = "measured *.* s against a bound of *.* s after the second SIGINT"
    result.stdout.fnmatch_lines([f"  K5-second-sigint[[]default[]]: pass: {margin}"])
