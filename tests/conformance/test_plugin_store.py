"""The plugin's store mode end to end (``pytest --store=FACTORY`` without ``--strategy``): usage errors,
the header and plan, selection by ID and access path, the report, waivers, ``python -m conformance``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PROBES = (Path(__file__).parent / "store_probes.py").read_text(encoding="utf-8")
MEMORY = "--store=agentlightning.store.memory:InMemoryLightningStore"


@pytest.fixture
def store_project(kit_project: pytest.Pytester) -> pytest.Pytester:
    """``kit_project`` with the probe stores (``store_probes``) beside the plugin's test strategies."""
    kit_project.makepyfile(store_probes=PROBES)
    return kit_project


def _usage_error(result: pytest.RunResult, fragment: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    assert fragment in result.stderr.str(), result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def test_store_alone_collects_section_t_per_access_path(store_project: pytest.Pytester) -> None:
    listed = store_project.runpytest_subprocess(MEMORY, "--collect-only", "-q", "--conformance-seed=5")
    assert listed.ret == pytest.ExitCode.OK
    ids = [line for line in listed.stdout.lines if "::" in line]
    assert ids[0] == "test_own.py::test_own_test_still_runs"
    assert "conformance::T2-exactly-once-claim[http]" in ids
    assert "conformance::T8-durable[ipc]" in ids
    assert not [i for i in ids if i.startswith("conformance::") and not i.startswith("conformance::T")]
    header = store_project.runpytest_subprocess(MEMORY, "--collect-only", "--conformance-seed=5")
    header.stdout.fnmatch_lines(
        [
            "conformance kit *: store 'agentlightning.store.memory:InMemoryLightningStore' -> "
            "agentlightning.store.memory.InMemoryLightningStore *",
            "conformance: store options none; access paths in-process, threaded, http, ipc",
            "conformance: Python *, seed 5 (replay with --conformance-seed 5), timeout scale 1.0, profile ci",
            'conformance: capabilities {"durable": false, "thread_safe": true}',
            "conformance plan: 36 items: 32 run, 0 limitation expected, 4 n/a",
            "conformance profile ci: *",
            "conformance T9: CI profile, up to 150 workloads within 5 s per access path",
            "  run: T1x4 T2x4 T3x4 T4x4 T5x4 T6x4 T7x4 T9x4",
            "  n/a: T8-durable[[]in-process[]] (durable): the store declares durable: False *",
            "  n/a: T8-durable[[]threaded[]] (durable): the store declares durable: False *",
            "  n/a: T8-durable[[]http[]] (durable): the store declares durable: False *",
            "  n/a: T8-durable[[]ipc[]] (durable): the store declares durable: False *",
        ]
    )
    assert "not checked by this kit build" not in header.stdout.str()


def test_a_strategy_keeps_its_suite_and_store_names_its_store(store_project: pytest.Pytester) -> None:
    listed = store_project.runpytest_subprocess(
        "--strategy=plugin_strategies.Strict",
        "--store=store_probes:OptionStore",
        "--store-option",
        "label=x",
        "--collect-only",
    )
    assert listed.ret == pytest.ExitCode.OK
    assert not [line for line in listed.stdout.lines if "T1-state-machine" in line]
    assert [line for line in listed.stdout.lines if "L1-bundles-called" in line]
    listed.stdout.fnmatch_lines(['conformance: options none; store store_probes:OptionStore with label="x"'])


# Every way a store target can be wrong is in test_target.py; here, that the plugin turns one into a usage
# error, and the store-mode rule of its own.
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--store=store_probes:MisspelledManifestStore"], "unknown capability 'durabel'; did you mean"),
        ([MEMORY, "--strategy-option", "n_runners=2"], "--strategy-option needs --strategy"),
    ],
)
def test_a_bad_store_is_a_usage_error_naming_it(
    store_project: pytest.Pytester, args: list[str], fragment: str
) -> None:
    _usage_error(store_project.runpytest_subprocess(*args), fragment)


def test_items_run_report_and_plan_like_a_strategys(store_project: pytest.Pytester) -> None:
    result = store_project.runpytest_subprocess(
        "--store=store_probes:OptionStore",
        "--store-option",
        "label=x",
        "-k",
        "T1 and in-process or T8 and ipc",
        "--conformance-report=r.json",
        "-rs",
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]1[]] *store_durable.py:*: n/a (durable): the store declares durable: False*"]
    )
    document = json.loads((store_project.path / "r.json").read_text())
    assert (document["kind"], document["store"], document["store_class"]) == (
        "store",
        "store_probes:OptionStore",
        "store_probes.OptionStore",
    )
    assert document["store_options"] == {"label": "x"}
    assert document["access_paths"] == ["in-process", "threaded", "http", "ipc"]
    assert {r["item"]: r["verdict"] for r in document["results"]} == {
        "T1-state-machine[in-process]": "pass",
        "T8-durable[ipc]": "n/a",
    }
    assert document["unimplemented"] == [] and document["missing"] == []


def test_a_broken_store_fails_with_the_contract_and_a_waiver_owns_it(store_project: pytest.Pytester) -> None:
    broken = "--store=strategies.broken_stores.t7_newest_spans_first:NewestSpansFirstStore"
    failed = store_project.runpytest_subprocess(broken, "-k", "T7 and in-process")
    assert failed.ret == pytest.ExitCode.TESTS_FAILED
    failed.stdout.fnmatch_lines(["T7 spans", "  expected: spans attach only to existing attempts*"])
    (store_project.path / "waivers.toml").write_text(
        '[[waiver]]\nid = "T7"\nreason = "our dashboard wants newest first"\nkit_version = "0.1.0"\n'
        'situations = ["in-process"]\n'
    )
    waived = store_project.runpytest_subprocess(
        broken, "-k", "T7 and in-process", "--conformance-waivers=waivers.toml"
    )
    assert waived.ret == pytest.ExitCode.OK
    waived.stdout.fnmatch_lines(["*waived * T7 * spans*", "totals: 1 waived"])


def test_python_m_conformance_store(store_project: pytest.Pytester) -> None:
    ran = store_project.run(
        sys.executable, "-m", "conformance", "--store", "store_probes:NotThreadSafeStore", "-k", "T6 and ipc"
    )
    assert ran.ret == 0, ran.stdout.str()
    ran.stdout.fnmatch_lines(
        ['conformance: capabilities {"durable": false, "thread_safe": false}', "*1 passed*"]
    )
    assert "test_own_test_still_runs" not in ran.stdout.str()
    missing = store_project.run(sys.executable, "-m", "conformance", "--store")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    assert "--store needs a FACTORY" in missing.stderr.str()


# A workload the broken store below fails every time: one client waits for the set-up's rollout.
_WAIT_ALL = '{"kind": "T9", "setup": ["once"], "resources": 0, "clients": [[["wait", "all", 0.0]]]}'


def test_t9_replays_a_workload_on_a_path_and_prints_the_command(store_project: pytest.Pytester) -> None:
    broken = "--store=strategies.broken_stores.t4_wait_returns_unfinished:WaitReturnsUnfinishedStore"
    failed = store_project.runpytest_subprocess(
        broken, "--conformance-replay", _WAIT_ALL, "-k", "T9 and ipc", "--collect-only"
    )
    failed.stdout.fnmatch_lines(
        ["conformance T9: replaying one workload (--conformance-replay) per access path"]
    )
    failed = store_project.runpytest_subprocess(broken, "--conformance-replay", _WAIT_ALL, "-k", "T9 and ipc")
    assert failed.ret == pytest.ExitCode.TESTS_FAILED, failed.stdout.str()
    failed.stdout.fnmatch_lines(
        [
            "T9 history",
            "  expected: every history of concurrent clients is one a store keeping T1-T7 could have "
            "produced",
            "  observed: the minimal workload's history breaks T4: T4 wait: wait_for_rollouts returned * in "
            "status 'queuing'*",
            "  measured: reproduced 3/3 re-runs of the minimal workload",
            "*c0: wait all 0.0",
            "*replay:",
            "*pytest --store=strategies.broken_stores.t4_wait_returns_unfinished:WaitReturnsUnfinishedStore "
            "--conformance-only --conformance-replay b64:* -k 'T9 and ipc'",
        ]
    )
    # The workload ran through the ipc path, its client in a process of its own: the reference passes it.
    passed = store_project.runpytest_subprocess(MEMORY, "--conformance-replay", _WAIT_ALL, "-k", "T9 and ipc")
    assert passed.ret == pytest.ExitCode.OK, passed.stdout.str()
    passed.assert_outcomes(passed=1)


def test_t9_replay_value_must_be_a_workload(store_project: pytest.Pytester) -> None:
    _usage_error(
        store_project.runpytest_subprocess(MEMORY, "--conformance-replay", '{"kind": "P1"}'),
        'is not a T9 workload (b64:..., JSON, or a file): ValueError: not a T9 workload (no "kind": "T9")',
    )
    _usage_error(
        store_project.runpytest_subprocess(MEMORY, "--conformance-examples", "0"),
        "--conformance-examples 0 must be a positive number of workloads",
    )
