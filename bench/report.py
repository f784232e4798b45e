"""The benchmark report: ``docs/benchmarks.md`` (Markdown tables) and its PNG plots under ``docs/img/``.

``write_report(results, out, img_dir)`` renders whatever workloads ``results`` holds (the dict
``python -m bench`` assembles; see ``bench.__main__``), so a partial run (``--only``) still gives a
consistent page. Every table gives medians with their spread (min-max), targets met or missed, and
ratios to baselines measured in the same run. Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conformance.profiles import DEFAULT_PROFILE, get_profile

__all__ = ["PLOTS", "render_markdown", "write_plots", "write_report"]

PLOTS = {
    "runners": "throughput_vs_runners.png",
    "latency": "latency_per_strategy.png",
    "payload": "payload_scaling.png",
}
"""File name of each plot (under the image directory), by the workload it draws."""

_WORKLOAD_ORDER = ("W1", "W2", "W3", "W4")
_STRATEGY_ORDER = ("shm", "ipc", "cs")


def _by_strategy(name: str) -> tuple[int, str]:
    """Sort key: the reference strategies in their usual order, any other strategy after them."""
    return (_STRATEGY_ORDER.index(name) if name in _STRATEGY_ORDER else len(_STRATEGY_ORDER), name)


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("rollouts/s", "cycles/s") or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _spread(row: dict[str, Any], unit: str = "") -> str:
    return f"{_num(row.get('min'), unit)}-{_num(row.get('max'), unit)}"


def _met(value: bool | None) -> str:
    return {True: "met", False: "**missed**", None: ""}[value]


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _load(value: Sequence[float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in value) if value else "n/a"


# -- sections ----------------------------------------------------------------------------------------------


def _machine(results: dict[str, Any]) -> list[str]:
    machine = results.get("machine", {})
    cores = f"{machine.get('logical_cores')} logical"
    if machine.get("physical_cores"):
        cores += f", {machine['physical_cores']} physical"
    return [
        "## Machine",
        "",
        *_table(
            ("", ""),
            [
                ("CPU", machine.get("cpu_model", "unknown")),
                ("Cores", cores),
                ("Memory", f"{machine.get('memory_gb', 0):.1f} GiB"),
                ("Python", machine.get("python", "unknown")),
                ("Platform", machine.get("platform", "unknown")),
                ("Load average at start (1/5/15 min)", _load(results.get("load_start"))),
                ("Load average at end (1/5/15 min)", _load(results.get("load_end"))),
            ],
        ),
    ]


def _strategies(rows: list[dict[str, Any]], img: str | None) -> list[str]:
    units = {r["workload"]: r["unit"] for r in rows}
    keys = sorted({(r["strategy"], r["n_runners"]) for r in rows}, key=lambda k: (_by_strategy(k[0]), k[1]))
    by_key = {(r["strategy"], r["n_runners"], r["workload"]): r for r in rows}
    workloads = [w for w in _WORKLOAD_ORDER if w in units]
    body = []
    for strategy, n in keys:
        cells: list[str] = [strategy, str(n)]
        for workload in workloads:
            row = by_key.get((strategy, n, workload))
            cells.append(
                "-" if row is None else f"{_num(row['median'], row['unit'])} ({_spread(row, row['unit'])})"
            )
        body.append(cells)
    samples = max((len(r.get("samples", [])) for r in rows), default=0)
    lines = [
        "## Strategy workloads W1-W4",
        "",
        "W1 throughput (rollouts/s, N = 1,000), W2 stop latency, W3 SIGINT latency, W4 start-up latency "
        f"(ms). Median (min-max) of {samples} runs per cell.",
        "",
        *_table(["Strategy", "Runners"] + [f"{w} ({units[w]})" for w in workloads], body),
    ]
    judged = [r for r in rows if r.get("target")]
    if judged:
        lines += [
            "### Targets (2 runners, N = 1,000)",
            "",
            *_table(
                ("Strategy", "Workload", "Median", "Target", "Result"),
                [
                    (
                        r["strategy"],
                        r["workload"],
                        _num(r["median"], r["unit"]),
                        r["target"],
                        _met(r["meets_target"]),
                    )
                    for r in sorted(judged, key=lambda r: (_by_strategy(r["strategy"]), r["workload"]))
                ],
            ),
        ]
    swallowed = [
        r for r in rows if r["workload"] == "W3" and r.get("w3_outcomes") not in (None, ["KeyboardInterrupt"])
    ]
    for row in swallowed:
        lines.append(
            f"- W3 {row['strategy']} with {row['n_runners']} runners: "
            f"interrupt NOT re-raised: {row['w3_outcomes']}"
        )
    if swallowed:
        lines.append("")
    ratios = _w1_ratios(rows)
    if ratios:
        lines += [
            "### W1 ratios between strategies (same run)",
            "",
            *_table(("Runners", "Ratio", "Value"), ratios),
        ]
    if img:
        lines += [f"![W2, W3 and W4 latency per strategy]({img})", ""]
    return lines


def _w1_ratios(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    w1 = {(r["strategy"], r["n_runners"]): r["median"] for r in rows if r["workload"] == "W1"}
    out = []
    for n in sorted({n for _, n in w1}):
        for num, den in (("ipc", "cs"), ("shm", "cs"), ("shm", "ipc")):
            if (num, n) in w1 and (den, n) in w1 and w1[(den, n)]:
                out.append((str(n), f"{num} / {den}", f"{w1[(num, n)] / w1[(den, n)]:.2f}x"))
    return out


def _runners(rows: list[dict[str, Any]], img: str | None) -> list[str]:
    counts = sorted({r["n_runners"] for r in rows})
    by_key = {(r["strategy"], r["n_runners"]): r for r in rows}
    body = []
    for strategy in sorted({r["strategy"] for r in rows}, key=_by_strategy):
        cells = [strategy]
        for n in counts:
            row = by_key.get((strategy, n))
            cells.append(
                "-" if row is None else f"{_num(row['median'], 'rollouts/s')} ({_spread(row, 'rollouts/s')})"
            )
        last = by_key.get((strategy, counts[-1]))
        ratio = last.get("ratio_to_first") if last else None
        cells.append("-" if ratio is None else f"{ratio:.2f}x")
        body.append(cells)
    lines = [
        "## W1 scaling with runners",
        "",
        f"Rollouts/s, N = 1,000, median (min-max); the last column is {counts[-1]} runners over "
        f"{counts[0]} runner(s) of the same strategy in this run.",
        "",
        *_table(
            ["Strategy"]
            + [f"{n} runner{'s' if n > 1 else ''}" for n in counts]
            + [f"{counts[-1]} / {counts[0]}"],
            body,
        ),
    ]
    if img:
        lines += [f"![W1 throughput against runners]({img})", ""]
    return lines


def _size(value: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if value >= scale:
            return f"{value / scale:g} {unit}"
    return f"{value} B"


def _payload(rows: list[dict[str, Any]], img: str | None) -> list[str]:
    n_runners = rows[0].get("n_runners", 2) if rows else 2
    lines = [
        "## W1 scaling with payload size",
        "",
        f"{n_runners} runners; every rollout's input carries a string of the given size; N shrinks as the "
        "payload grows (at most ~50 MB per run). Ratio: rollouts/s over the same strategy's smallest "
        "payload. shm hands the same object to its runner threads (no copy), so its MB/s is not a "
        "transfer rate.",
        "",
        *_table(
            ("Strategy", "Payload", "N", "Rollouts/s (min-max)", "MB/s", "Ratio"),
            [
                (
                    r["strategy"],
                    _size(r["payload_bytes"]),
                    f"{r['n_rollouts']:,}",
                    f"{_num(r['median'], 'rollouts/s')} ({_spread(r, 'rollouts/s')})",
                    f"{r['mb_per_s']:,.1f}",
                    f"{r['ratio_to_first']:.2f}x",
                )
                for r in rows
            ],
        ),
    ]
    if img:
        lines += [f"![W1 throughput against payload size]({img})", ""]
    return lines


def _kit(rows: list[dict[str, Any]]) -> list[str]:
    examples = {r.get("p1_examples") for r in rows if r.get("p1_examples")}
    note = (
        f" P1 runs a fixed {examples.pop()} scenarios (`--conformance-examples`)."
        if len(examples) == 1
        else ""
    )
    return [
        "## Kit wall time",
        "",
        "`python -m conformance <strategy> -n 2 -k <selection>` timed as a subprocess, one run each."
        f"{note} The default profile ({DEFAULT_PROFILE}) runs P1 for up to "
        f"{get_profile(DEFAULT_PROFILE).p1_budget:g} s instead.",
        "",
        *_table(
            ("Strategy", "Selection", "Wall time (s)", "Exit code", "pytest summary"),
            [
                (
                    r["strategy"],
                    f"`{r['selection']}`" if r["selection"] != "total" else "**total**",
                    f"{r['seconds']:.1f}",
                    "-" if r["returncode"] is None else r["returncode"],
                    r.get("summary", ""),
                )
                for r in rows
            ],
        ),
    ]


def _sandbox(rows: list[dict[str, Any]]) -> list[str]:
    body = []
    for r in rows:
        value = r.get("median", r.get("value"))
        details = []
        if "p90" in r:
            details.append(f"p90 {r['p90']} ms; wall {r.get('wall_median')} ms; {r.get('runs')} runs")
        if "overhead_vs_baseline" in r:
            details.append(
                f"overhead / this baseline = {r['overhead_vs_baseline']:.3f}; {r.get('runs')} runs"
            )
        target = f"<= {r['target']:g} ms" if "target" in r else ""
        body.append((r["metric"], _num(value), target, _met(r.get("meets_target")), "; ".join(details)))
    return [
        "## Conformance sandbox overhead",
        "",
        "What running one scenario in the kit's sandbox costs beyond `execute()` itself (a trivial strategy, "
        "empty scripts), against a fresh interpreter importing the kit (what a spawn-per-scenario sandbox "
        "pays).",
        "",
        *_table(("Metric", "ms", "Target", "Result", "Details"), body),
    ]


def _cpu_bound(rows: list[dict[str, Any]]) -> list[str]:
    first = rows[0]
    return [
        "## CPU-bound runners: ipc against shm",
        "",
        f"{first['n_runners']} runners, {first['n_rollouts']} rollouts each costing "
        f"{first['work_ms']:g} ms of pure-Python CPU (ideal with {first['n_runners']} cores: "
        f"{first['ideal']:,.0f} rollouts/s).",
        "",
        *_table(
            ("Strategy", "Median rollouts/s", "Min-max"),
            [(r["strategy"], f"{r['median']:,.1f}", f"{r['min']:,.1f}-{r['max']:,.1f}") for r in rows],
        ),
        f"ipc / shm = **{first['ipc_over_shm']:.2f}x** (same run, interleaved).",
        "",
    ]


def _store(rows: list[dict[str, Any]], verdicts: Sequence[tuple[str, bool]]) -> list[str]:
    lines = [
        "## Store cycles",
        "",
        "One cycle: enqueue, dequeue, mark succeeded, observe finished, with the queue held at the given "
        "length. Wall-clock cycles/s (the targets); 'per CPU-s' divides by this process's CPU time instead.",
        "",
        *_table(
            ("Mode", "Queued", "Median cycles/s", "Min-max", "Spread", "Per CPU-s", "Repeats"),
            [
                (
                    r["mode"],
                    f"{r['queued']:,}",
                    f"{r['median_cps']:,.0f}",
                    f"{r['min_cps']:,.0f}-{r['max_cps']:,.0f}",
                    f"{r['spread_pct']:.1f}%",
                    f"{r['median_cpu_cps']:,.0f}",
                    r["repeats"],
                )
                for r in rows
            ],
        ),
    ]
    lines += [f"- {'met' if ok else '**missed**'}: {text}" for text, ok in verdicts]
    return lines + ([""] if verdicts else [])


def _scenarios(rows: list[dict[str, Any]]) -> list[str]:
    return [
        "## P1 scenarios per second",
        "",
        *_table(
            (
                "Strategy",
                "Perturbation",
                "Scenarios",
                "Seconds",
                "Scenarios/s",
                "Median scenario (s)",
                "p90 (s)",
                "Failed",
            ),
            [
                (
                    r["strategy"],
                    r.get("perturbation", "off"),
                    r["scenarios"],
                    r["seconds"],
                    r["scenarios_per_second"],
                    r["median_scenario_s"],
                    r["p90_scenario_s"],
                    r["failed"],
                )
                for r in rows
            ],
        ),
    ]


def render_markdown(results: dict[str, Any], images: dict[str, str] | None = None) -> str:
    """The page as Markdown; ``images`` maps a plot's workload to its path relative to the page."""
    images = images or {}
    work = results.get("workloads", {})
    quick = results.get("quick", False)
    lines = [
        "# Benchmarks" + (" (QUICK smoke run: few repeats, not representative)" if quick else ""),
        "",
        f"Generated by `{results.get('command', 'python -m bench')}` on {results.get('started', '?')}; "
        f"the whole run took {results.get('total_seconds', 0.0):.1f} s. Regenerate with `python -m bench` "
        "(budgeted to under 10 minutes on a 2-core machine). Every ratio is against a baseline "
        "measured in the same run, so it holds on a noisy machine better than the absolute figures do.",
        "",
    ]
    if quick:
        lines += [
            "> **Quick run**: each figure comes from very few repeats; use it as a smoke test only.",
            "",
        ]
    lines += _machine(results)
    sections = (
        ("strategies", lambda rows: _strategies(rows, images.get("latency"))),
        ("runners", lambda rows: _runners(rows, images.get("runners"))),
        ("payload", lambda rows: _payload(rows, images.get("payload"))),
        ("kit", _kit),
        ("sandbox", _sandbox),
        ("cpu_bound", _cpu_bound),
        ("store", lambda rows: _store(rows, results.get("store_verdicts", []))),
        ("scenarios", _scenarios),
    )
    for name, render in sections:
        if work.get(name):
            lines += render(work[name])
    timings = results.get("timings", [])
    if timings:
        lines += [
            "## Run",
            "",
            *_table(
                ("Workload", "Elapsed (s)", "Status"),
                [(t["workload"], f"{t['seconds']:.1f}", t.get("error") or "ok") for t in timings],
            ),
        ]
    return "\n".join(lines).rstrip() + "\n"


# -- plots -------------------------------------------------------------------------------------------------


def _errors(rows: Sequence[dict[str, Any]]) -> list[list[float]]:
    return [[r["median"] - r["min"] for r in rows], [r["max"] - r["median"] for r in rows]]


def write_plots(results: dict[str, Any], img_dir: Path) -> dict[str, Path]:
    """Draw the plots the results have data for; returns their paths by workload."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    work = results.get("workloads", {})
    img_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    suffix = " (quick run)" if results.get("quick") else ""

    runner_rows = work.get("runners") or [r for r in work.get("strategies", []) if r["workload"] == "W1"]
    if runner_rows:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for strategy in sorted({r["strategy"] for r in runner_rows}, key=_by_strategy):
            rows = sorted((r for r in runner_rows if r["strategy"] == strategy), key=lambda r: r["n_runners"])
            ax.errorbar(
                [r["n_runners"] for r in rows],
                [r["median"] for r in rows],
                yerr=_errors(rows),
                marker="o",
                capsize=4,
                label=strategy,
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")  # shm and cs differ by more than an order of magnitude
        _plain_log_ticks(ax.yaxis)
        ax.set_xticks(sorted({r["n_runners"] for r in runner_rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("runners")
        ax.set_ylabel("W1 rollouts/s (median, min-max; log scale)")
        ax.set_title("W1 throughput against runners" + suffix)
        ax.grid(True, alpha=0.3)
        ax.legend()
        written["runners"] = _save(fig, img_dir / PLOTS["runners"])

    latency_rows = [r for r in work.get("strategies", []) if r["workload"] in ("W2", "W3", "W4")]
    if latency_rows:
        workloads = [w for w in ("W2", "W3", "W4") if any(r["workload"] == w for r in latency_rows)]
        fig, axes = plt.subplots(1, len(workloads), figsize=(4.2 * len(workloads), 4.2), squeeze=False)
        strategies = sorted({r["strategy"] for r in latency_rows}, key=_by_strategy)
        counts = sorted({r["n_runners"] for r in latency_rows})
        width = 0.8 / max(len(counts), 1)
        titles = {"W2": "W2 stop", "W3": "W3 SIGINT", "W4": "W4 start-up"}
        for ax, workload in zip(axes[0], workloads, strict=True):
            for i, n in enumerate(counts):
                rows = [
                    next(
                        (
                            r
                            for r in latency_rows
                            if (r["strategy"], r["n_runners"], r["workload"]) == (s, n, workload)
                        ),
                        None,
                    )
                    for s in strategies
                ]
                present = [(j, r) for j, r in enumerate(rows) if r is not None]
                ax.bar(
                    [j + (i - (len(counts) - 1) / 2) * width for j, _ in present],
                    [r["median"] for _, r in present],
                    width,
                    yerr=_errors([r for _, r in present]),
                    capsize=3,
                    label=f"{n} runner{'s' if n > 1 else ''}",
                )
            ax.set_xticks(range(len(strategies)))
            ax.set_xticklabels(strategies)
            ax.set_yscale("log")  # shm's sub-ms and cs's start-up differ by three orders
            _plain_log_ticks(ax.yaxis)
            ax.set_ylabel("ms (median, min-max; log scale)")
            ax.set_title(titles[workload] + " latency")
            ax.grid(True, axis="y", which="both", alpha=0.3)
        axes[0][0].legend()
        fig.suptitle("Latency per strategy" + suffix)
        written["latency"] = _save(fig, img_dir / PLOTS["latency"])

    payload_rows = work.get("payload")
    if payload_rows:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for strategy in sorted({r["strategy"] for r in payload_rows}, key=_by_strategy):
            rows = sorted(
                (r for r in payload_rows if r["strategy"] == strategy), key=lambda r: r["payload_bytes"]
            )
            ax.errorbar(
                [r["payload_bytes"] for r in rows],
                [r["median"] for r in rows],
                yerr=_errors(rows),
                marker="o",
                capsize=4,
                label=strategy,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("payload per rollout (bytes)")
        ax.set_ylabel("W1 rollouts/s (median, min-max; log scale)")
        ax.set_title("W1 throughput against payload size" + suffix)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        written["payload"] = _save(fig, img_dir / PLOTS["payload"])
    return written


def _plain_log_ticks(axis: Any) -> None:
    """Label a log axis 1, 10, 100 (and 2, 5 ... when it spans little) instead of ``2 x 10^0``."""
    from matplotlib.ticker import FuncFormatter, LogFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.{0 if value >= 1 else 1}f}"))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(results: dict[str, Any], out: Path, img_dir: Path) -> list[Path]:
    """Write the plots and the Markdown page (images linked relative to the page); returns every path."""
    plots = write_plots(results, img_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    relative = {name: Path(os.path.relpath(path, out.parent)).as_posix() for name, path in plots.items()}
    out.write_text(render_markdown(results, relative))
    return [*plots.values(), out]
