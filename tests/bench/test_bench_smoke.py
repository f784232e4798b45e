"""The benchmark report writer on fabricated rows: Markdown tables and PNG plots, no real benchmark run."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import strategies
from bench.__main__ import main as bench_main
from bench.report import PLOTS, render_markdown, write_report
from bench.scaling import rollouts_for_payload
from conformance.ray_session import RAY_MISSING, ray_missing


def _row(median: float, **fields: Any) -> dict[str, Any]:
    return {"median": median, "min": median * 0.9, "max": median * 1.1, "samples": [median] * 3, **fields}


def _strategy_rows() -> list[dict[str, Any]]:
    figures = {
        "shm": (9000.0, 2.0, 3.0, 1.0),
        "ipc": (3000.0, 5.0, 6.0, 30.0),
        "cs": (1800.0, 9.0, 8.0, 400.0),
    }
    rows = []
    for name, values in figures.items():
        for n in (1, 2, 4):
            for workload, value in zip(("W1", "W2", "W3", "W4"), values, strict=True):
                rows.append(strategies._summary(name, workload, n, [value * 0.9, value, value * 1.1], 1000))
    strategies.apply_relative_targets(rows)
    return rows


def _results() -> dict[str, Any]:
    rows = _strategy_rows()
    runners = [
        _row(1000.0 * n, strategy=s, n_runners=n, n_rollouts=1000, ratio_to_first=float(n))
        for s in ("shm", "ipc", "cs")
        for n in (1, 2, 4, 8)
    ]
    payload = [
        _row(
            500.0,
            strategy=s,
            payload_bytes=b,
            n_rollouts=rollouts_for_payload(b),
            n_runners=2,
            mb_per_s=0.5 * b / 1e3,
            ratio_to_first=1.0,
        )
        for s in ("shm", "ipc", "cs")
        for b in (100, 1_000, 10_000, 100_000, 1_000_000)
    ]
    kit = [
        {
            "strategy": "shm",
            "selection": "not P1",
            "workers": 2,
            "seconds": 21.5,
            "returncode": 0,
            "summary": "60 passed in 20s",
            "command": "",
            "p1_examples": None,
        },
        {
            "strategy": "shm",
            "selection": "P1",
            "workers": 2,
            "seconds": 7.25,
            "returncode": 0,
            "summary": "1 passed in 6s",
            "command": "",
            "p1_examples": 20,
        },
        {
            "strategy": "shm",
            "selection": "total",
            "workers": 2,
            "seconds": 28.75,
            "returncode": 0,
            "summary": "",
            "command": "",
        },
    ]
    sandbox = [
        {
            "bench": "sandbox",
            "metric": "overhead per scenario (wall - execute)",
            "unit": "ms",
            "median": 12.5,
            "p90": 15.0,
            "wall_median": 20.0,
            "runs": 60,
            "target": 50.0,
            "meets_target": True,
        },
        {"bench": "sandbox", "metric": "zygote cold start + first scenario", "unit": "ms", "value": 400.0},
        {
            "bench": "sandbox",
            "metric": "baseline: fresh interpreter importing the kit",
            "unit": "ms",
            "median": 300.0,
            "runs": 10,
            "overhead_vs_baseline": 0.042,
        },
    ]
    cpu = [
        {
            **_row(190.0),
            "strategy": "shm",
            "n_runners": 2,
            "n_rollouts": 200,
            "work_ms": 5.0,
            "ideal": 400.0,
            "ipc_over_shm": 1.9,
        },
        {
            **_row(361.0),
            "strategy": "ipc",
            "n_runners": 2,
            "n_rollouts": 200,
            "work_ms": 5.0,
            "ideal": 400.0,
            "ipc_over_shm": 1.9,
        },
    ]
    store = [
        {
            "mode": "one loop",
            "queued": q,
            "cycles": 100,
            "repeats": 3,
            "median_cps": 40000.0,
            "min_cps": 39000.0,
            "max_cps": 41000.0,
            "spread_pct": 5.0,
            "median_cpu_cps": 42000.0,
        }
        for q in (1_000, 10_000, 100_000)
    ]
    return {
        "command": "python -m bench --quick",
        "quick": True,
        "started": "2026-01-01 00:00 UTC",
        "total_seconds": 123.4,
        "machine": {
            "cpu_model": "Test CPU 9000",
            "logical_cores": 2,
            "physical_cores": 1,
            "memory_gb": 8.0,
            "python": "CPython 3.11.0",
            "platform": "Linux",
        },
        "load_start": (0.5, 0.4, 0.3),
        "load_end": (1.5, 0.9, 0.4),
        "store_verdicts": [("one loop >= 30,000 cycles/s", True)],
        "workloads": {
            "strategies": rows,
            "runners": runners,
            "payload": payload,
            "kit": kit,
            "sandbox": sandbox,
            "cpu_bound": cpu,
            "store": store,
        },
        "timings": [
            {"workload": "strategies", "seconds": 61.0, "error": None},
            {"workload": "kit", "seconds": 1.0, "error": "failed: RuntimeError: boom"},
        ],
    }


def test_per_strategy_targets() -> None:
    rows = {(r["strategy"], r["workload"], r["n_runners"]): r for r in _strategy_rows()}
    assert rows[("shm", "W1", 2)]["meets_target"] is True  # 9,000 >= 8,600
    assert rows[("cs", "W1", 2)]["meets_target"] is False  # 1,800 < 2,500: a miss is reported as one
    assert rows[("cs", "W4", 2)]["target"] is None  # cs has no W4 target
    assert rows[("ipc", "W1", 2)]["meets_target"] is False  # 3,000 < 8,000
    assert rows[("ipc", "W1", 1)]["meets_target"] is None  # targets apply with 2 runners only


def test_markdown_has_every_table_machine_and_quick_label() -> None:
    text = render_markdown(_results(), {"latency": "img/latency.png"})
    assert text.startswith("# Benchmarks (QUICK")
    assert "| CPU | Test CPU 9000 |" in text
    assert "| Load average at start (1/5/15 min) | 0.50 / 0.40 / 0.30 |" in text
    assert (
        "| shm | 2 | 9,000 (8,100-9,900) | 2.00 (1.80-2.20) | 3.00 (2.70-3.30) | 1.00 (0.90-1.10) |" in text
    )
    assert "| ipc | W1 | 3,000 | >= 8000 | **missed** |" in text
    assert "| 2 | ipc / cs | 1.67x |" in text
    assert (
        "| shm | 1,000 (900-1,100) | 2,000 (1,800-2,200) | 4,000 (3,600-4,400) "
        "| 8,000 (7,200-8,800) | 8.00x |" in text
    )
    assert "| cs | 1 MB | 50 |" in text
    assert "| shm | **total** | 28.8 | 0 |" in text
    assert "ipc / shm = **1.90x**" in text
    assert "| one loop | 100,000 | 40,000 |" in text
    assert "| kit | 1.0 | failed: RuntimeError: boom |" in text
    assert "![W2, W3 and W4 latency per strategy](img/latency.png)" in text
    for line in text.splitlines():  # every table row has as many cells as its header
        if line.startswith("|"):
            assert line.endswith("|"), line


def test_render_writes_the_page_and_every_plot_from_a_json_run(tmp_path: Path) -> None:
    """``python -m bench --render`` rewrites the report from a ``--json`` file (tuples come back as lists)."""
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(_results()))
    out = tmp_path / "docs" / "benchmarks.md"
    assert bench_main(["--render", str(saved), "--out", str(out)]) == 0
    text = out.read_text()
    assert "- met: one loop >= 30,000 cycles/s" in text
    for name in PLOTS.values():
        png = tmp_path / "docs" / "img" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](img/{name})" in text


def test_a_partial_run_renders_only_its_sections(tmp_path: Path) -> None:
    results = _results()
    results["workloads"] = {"cpu_bound": results["workloads"]["cpu_bound"]}
    written = write_report(results, tmp_path / "b.md", tmp_path / "img")
    text = (tmp_path / "b.md").read_text()
    assert written == [tmp_path / "b.md"]  # no data for any plot
    assert "## CPU-bound runners" in text and "## Strategy workloads" not in text


def test_payload_rollouts_are_capped_and_bad_sizes_named() -> None:
    assert rollouts_for_payload(100) == 1000
    assert rollouts_for_payload(1_000_000) == 50
    with pytest.raises(ValueError, match="-1"):
        rollouts_for_payload(-1)


def test_cpu_bound_runners_spend_their_work_per_rollout() -> None:
    """bench.cpu_bound is W1 with CPU work per rollout: 10 rollouts of 20 ms on one runner thread take
    at least 200 ms, so the rate cannot exceed 50/s (a runner that skipped the work would be far faster)."""
    from bench import cpu_bound

    rate = cpu_bound.measure("shm", 1, 10, 20.0)
    assert 0 < rate <= 50.0


def test_ray_targets_absolute_and_relative_to_cs_of_the_same_run() -> None:
    rows = [
        strategies._summary("cs", "W1", 2, [1800.0], 1000),
        strategies._summary("ray", "W1", 2, [1700.0], 1000),
        strategies._summary("ray", "W2", 2, [90.0], 1000),
        strategies._summary("ray", "W3", 2, [600.0], 1000),
        strategies._summary("ray", "W4", 2, [1500.0], 1000),
    ]
    strategies.apply_relative_targets(rows)
    judged = {r["workload"]: r["meets_target"] for r in rows if r["strategy"] == "ray"}
    assert judged == {"W1": False, "W2": True, "W3": False, "W4": True}  # W1 1,700 < cs's 1,800
    assert rows[1]["target"] == ">= 1x cs (1,800)"


def test_ray_without_its_extra_is_named_not_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance import ray_session

    monkeypatch.setattr(ray_session.importlib.util, "find_spec", lambda name: None)
    assert strategies.available(["cs", "ray"]) == (["cs"], {"ray": ray_session.RAY_MISSING})
    with pytest.raises(ValueError, match=r"cannot benchmark 'ray': .*agentlightning-execution\[ray\]"):
        strategies.run(["ray"], runners=(2,), repeats=1)


def test_bundles_pickle_by_reference_to_bench_bundles() -> None:
    """Ray's workers and the runner processes they spawn unpickle a bundle by its module's name: that
    name is ``bench.bundles`` even when ``bench.strategies`` runs as ``__main__``."""
    from bench import bundles

    for bundle in (
        bundles.LifecycleAlgorithm("d", 2),
        bundles.LifecycleRunner("d"),
        bundles.ThroughputAlgorithm("d", 2, 10),
        bundles.ThroughputRunner("d"),
    ):
        data = pickle.dumps(bundle)
        assert b"bench.bundles" in data and b"__main__" not in data, type(bundle).__name__


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(bool(ray_missing()), reason=RAY_MISSING)
def test_ray_rows_are_measured_on_a_cluster_the_bench_starts_and_stops(tmp_path: Path) -> None:
    """``python -m bench.strategies --strategy cs --strategy ray`` as a user runs it (``__main__``, no
    ``RAY_ADDRESS``): cs is measured first, then ray in a child process of its own against a cluster
    the bench starts, joins with the cluster's token and stops before it writes its rows (a cluster
    that survives its stop raises instead); ray's W1 is judged against cs's of the same invocation.
    Figures are not judged here: a target missed is exit status 1 with the rows written."""
    out = tmp_path / "rows.json"
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    command = [sys.executable, "-m", "bench.strategies", "--strategy", "cs", "--strategy", "ray"]
    command += ["--runners", "2"]
    command += ["--repeats", "1", "--json", str(out)]  # N = 1,000: the N ray's W1 target is judged at
    done = subprocess.run(
        command,
        cwd=Path(strategies.__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )
    assert out.exists(), f"exit status {done.returncode}:\n{done.stderr[-4000:]}"
    every = json.loads(out.read_text())
    assert sorted({row["workload"] for row in every if row["strategy"] == "cs"}) == ["W1", "W2", "W3", "W4"]
    rows = {row["workload"]: row for row in every if row["strategy"] == "ray"}
    assert sorted(rows) == ["W1", "W2", "W3", "W4"]
    assert rows["W1"]["target"].startswith(">= 1x cs")
    assert rows["W3"]["w3_outcomes"] == ["KeyboardInterrupt"]
    assert all(row["median"] > 0 for row in rows.values())
