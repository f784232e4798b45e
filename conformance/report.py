"""The conformance report: the contract table for the terminal, and JSON and Markdown files for CI gates.

Built from test reports alone (the verdict travels in ``user_properties``), so the controller of a
pytest-xdist run builds the same report as a single process does.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.plan import PlanEntry
from conformance.verdicts import VERDICTS

__all__ = [
    "ConformanceReport",
    "ItemResult",
    "contract_verdict",
    "render_markdown",
    "render_table",
    "report_paths",
    "wilson_interval",
    "write_report",
]

# Worst first: a contract's verdict is the worst of its situations.
_SEVERITY = ("missing", "error", "fail", "blocked", "flaky", "waived", "limitation", "pass", "n/a")


@dataclass(frozen=True)
class ItemResult:
    """The verdict of one (contract, situation) item."""

    contract_id: str
    name: str
    situation: str
    verdict: str  # one of VERDICTS
    reason: str = ""
    duration: float = 0.0
    runs: tuple[str, ...] = ()  # the verdict of each run (``--conformance-repeat``), in order
    figure: str = ""  # what was measured
    bound: str = ""  # what it was held to
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase of its scenarios

    @property
    def item_name(self) -> str:
        return f"{self.contract_id}-{self.name}[{self.situation}]"

    @property
    def passes(self) -> int:
        return sum(run == "pass" for run in self.runs)

    @property
    def judged_runs(self) -> int:
        """Runs that passed or failed (``n/a`` and limitations say nothing about reliability)."""
        return sum(run in ("pass", "fail", "error") for run in self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.contract_id,
            "name": self.name,
            "situation": self.situation,
            "item": self.item_name,
            "verdict": self.verdict,
            "reason": self.reason,
            "duration": round(self.duration, 3),
            "runs": list(self.runs),
            "figure": self.figure,
            "bound": self.bound,
            "phases": self.phases,
        }


@dataclass
class ConformanceReport:
    """Everything a conformance run says about a strategy (``kind="strategy"``) or a store (``"store"``).

    ``subject`` is the SPEC as given (the strategy, or the store factory), ``subject_class`` and
    ``subject_version`` what it resolved to.
    """

    kind: str
    subject: str
    subject_class: str
    subject_version: str
    kit_version: str
    options: dict[str, Any]  # the strategy's constructor arguments
    store_factory: str
    python: str
    start_method: str
    seed: int
    timeout_scale: float
    plan: list[PlanEntry]
    results: list[ItemResult] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # planned items that neither ran nor were deselected
    deselected: list[str] = field(default_factory=list)
    unimplemented: list[str] = field(default_factory=list)  # catalogue IDs without a check in this build
    waivers: str = ""
    store_options: dict[str, Any] = field(default_factory=dict)
    access_paths: list[str] = field(default_factory=list)  # a store's situations (section T)
    profile: str = "ci"  # conformance.profiles: how much this run checked
    repeat: int = 1  # runs per item
    flaky_fails: bool = False  # the profile fails the gate on a flaky item
    left_out: list[PlanEntry] = field(default_factory=list)  # planned situations the profile did not run
    # The options section D built the strategy with and the bounds it declared so (host_options.py).
    section_d: dict[str, Any] = field(default_factory=dict)

    def totals(self) -> dict[str, int]:
        counts = Counter(result.verdict for result in self.results)
        totals = {verdict: counts.get(verdict, 0) for verdict in VERDICTS}
        totals["missing"] = len(self.missing)
        return totals

    def by_contract(self) -> dict[str, list[ItemResult]]:
        grouped: dict[str, list[ItemResult]] = {}
        order = {entry.item_name: i for i, entry in enumerate(self.plan)}
        for result in sorted(self.results, key=lambda r: order.get(r.item_name, len(order))):
            grouped.setdefault(result.contract_id, []).append(result)
        return grouped

    def reliability(self) -> dict[str, dict[str, Any]]:
        """Per contract: passes over judged runs across its situations, with the 95% Wilson interval."""
        figures: dict[str, dict[str, Any]] = {}
        for cid, results in self.by_contract().items():
            passes = sum(r.passes for r in results)
            runs = sum(r.judged_runs for r in results)
            if not runs:
                continue
            low, high = wilson_interval(passes, runs)
            figures[cid] = {"passes": passes, "runs": runs, "low": round(low, 4), "high": round(high, 4)}
        return figures

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            # "strategy", "strategy_class", ... or "store", "store_class", ...: what the report is about.
            self.kind: self.subject,
            f"{self.kind}_class": self.subject_class,
            f"{self.kind}_version": self.subject_version,
            "kit_version": self.kit_version,
            "options": self.options,
            "store_factory": self.store_factory,
            "store_options": self.store_options,
            "access_paths": self.access_paths,
            "python": self.python,
            "start_method": self.start_method,
            "seed": self.seed,
            "timeout_scale": self.timeout_scale,
            "profile": self.profile,
            "repeat": self.repeat,
            "flaky_fails": self.flaky_fails,
            "section_d": self.section_d,
            "reliability": self.reliability(),
            "waivers": self.waivers,
            "plan": [entry.to_dict() for entry in self.plan],
            "left_out_by_profile": [entry.to_dict() for entry in self.left_out],
            "unimplemented": self.unimplemented,
            "results": [result.to_dict() for result in self.results],
            "contracts": {
                cid: contract_verdict([r.verdict for r in results])
                for cid, results in self.by_contract().items()
            },
            "missing": self.missing,
            "deselected": self.deselected,
            "totals": self.totals(),
            "ok": self.ok,
        }

    @property
    def ok(self) -> bool:
        """No failure or set-up error, nothing blocked or missing, no flaky item when the profile fails on
        one (waived, n/a and limitations are reported, not failures)."""
        failing = ("error", "fail", "blocked", "flaky") if self.flaky_fails else ("error", "fail", "blocked")
        return not self.missing and all(result.verdict not in failing for result in self.results)


def wilson_interval(passes: int, runs: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a pass rate (``z`` = 1.96: 95%); sound at 0/N and N/N, unlike the
    normal approximation, which collapses to a point there."""
    if runs < 1 or not 0 <= passes <= runs:
        raise ValueError(f"wilson_interval needs 0 <= passes <= runs and runs >= 1, got {passes}/{runs}")
    rate = passes / runs
    denominator = 1 + z * z / runs
    centre = (rate + z * z / (2 * runs)) / denominator
    spread = z * math.sqrt(rate * (1 - rate) / runs + z * z / (4 * runs * runs)) / denominator
    return max(0.0, centre - spread), min(1.0, centre + spread)


def render_reliability(report: ConformanceReport) -> list[str]:
    """Lines of the terminal table for repeated runs: passes/N per contract and its 95% interval."""
    if report.repeat < 2:
        return []
    flaky = [r.item_name for r in report.results if r.verdict == "flaky"]
    lines = [
        "",
        f"repeat {report.repeat}: passes/runs per contract, 95% interval (Wilson); "
        f"{len(flaky)} flaky item(s)"
        + (" (the profile fails the gate on them)" if report.flaky_fails else ""),
    ]
    lines.extend(
        f"  {cid:<3} {figure['passes']:>3}/{figure['runs']:<3} [{figure['low']:.2f}, {figure['high']:.2f}]"
        for cid, figure in report.reliability().items()
    )
    lines.extend(f"  flaky: {name}" for name in flaky)
    return lines


def contract_verdict(verdicts: list[str]) -> str:
    """The verdict of a contract over its situations: the worst one (n/a only when all are n/a)."""
    present = [v for v in verdicts if v != "n/a"] or verdicts
    return min(present, key=_SEVERITY.index) if present else "missing"


def _totals_line(report: ConformanceReport) -> str:
    totals = report.totals()
    return ", ".join(f"{count} {verdict}" for verdict, count in totals.items() if count) or "nothing ran"


def render_table(report: ConformanceReport) -> str:
    """The terminal table: one row per contract (worst verdict first), its situations, then reasons."""
    grouped = report.by_contract()
    rows = []
    for cid, results in grouped.items():
        verdict = contract_verdict([r.verdict for r in results])
        situations = " ".join(f"{r.situation}:{r.verdict}" for r in results)
        rows.append((verdict, cid, results[0].name, situations, sum(r.duration for r in results)))
    rows.sort(key=lambda row: _SEVERITY.index(row[0]))
    width_name = max((len(row[2]) for row in rows), default=4)
    lines = [f"{'verdict':<10} {'id':<3} {'name':<{width_name}} {'time':>7}  situations"]
    lines.extend(
        f"{verdict:<10} {cid:<3} {name:<{width_name}} {seconds:6.2f}s  {situations}"
        for verdict, cid, name, situations, seconds in rows
    )
    notes = [
        f"  {r.item_name}: {r.verdict}: {r.reason.splitlines()[0] if r.reason else ''}"
        for results in grouped.values()
        for r in results
        if r.verdict != "pass" or r.reason  # a pass with a measured figure says it
    ]
    if notes:
        lines.append("")
        lines.extend(notes)
    if report.missing:
        lines.append("")
        lines.append("missing (planned, neither run nor deselected): " + ", ".join(report.missing))
    if report.unimplemented:
        lines.append(f"not checked by this kit build: {', '.join(report.unimplemented)}")
    lines.extend(render_reliability(report))
    lines.append(f"totals: {_totals_line(report)}")
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def render_markdown(report: ConformanceReport) -> str:
    """The report as Markdown: header facts, totals, the contract table and every item."""
    options = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in report.options.items()) or "none"
    store_options = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in report.store_options.items()) or "none"
    lines = [
        f"# Conformance report: `{report.subject}`",
        "",
        f"- {report.kind}: `{report.subject_class}` {report.subject_version}",
        f"- kit: {report.kit_version}",
    ]
    if report.kind == "strategy":
        lines += [
            f"- options: {options}",
            f"- store: `{report.store_factory}`" + (f" with {store_options}" if report.store_options else ""),
            f"- Python {report.python}, start method {report.start_method}",
        ]
        if report.section_d.get("declared"):
            shown = report.section_d["options"] if not report.section_d["at_defaults"] else report.options
            lines.append(
                "- section D options: "
                + (", ".join(f"`{k}={json.dumps(v)}`" for k, v in shown.items()) or "none")
                + (
                    " (the strategy's defaults; its host_test_options not applied)"
                    if report.section_d["at_defaults"]
                    else " (the strategy's host_test_options under the options above)"
                )
            )
    else:
        lines += [
            f"- store options: {store_options}",
            f"- access paths: {', '.join(report.access_paths)}",
            f"- Python {report.python}",
        ]
    lines += [
        f"- profile: {report.profile}"
        + (f" (left out {len(report.left_out)} situation(s))" if report.left_out else ""),
        f"- seed: {report.seed} (replay: `--conformance-seed {report.seed}`), "
        f"timeout scale {report.timeout_scale}",
        f"- result: **{'PASS' if report.ok else 'FAIL'}** ({_totals_line(report)})",
    ]
    if report.waivers:
        lines.append(f"- waivers: `{report.waivers}`")
    if report.unimplemented:
        lines.append(f"- not checked by this kit build: {', '.join(report.unimplemented)}")
    lines += ["", "## Contracts", "", "| ID | name | verdict | situations |", "|---|---|---|---|"]
    for cid, results in report.by_contract().items():
        situations = ", ".join(f"{r.situation}: {r.verdict}" for r in results)
        verdict = contract_verdict([r.verdict for r in results])
        lines.append(f"| {cid} | {results[0].name} | {verdict} | {_md_cell(situations)} |")
    lines += ["", "## Items", "", "| item | verdict | duration | reason |", "|---|---|---|---|"]
    for result in report.results:
        reason = result.reason.splitlines()[0] if result.reason else ""
        lines.append(
            f"| `{result.item_name}` | {result.verdict} | {result.duration:.2f}s | {_md_cell(reason)} |"
        )
    if report.missing:
        lines += ["", "## Missing", "", *(f"- `{item}`" for item in report.missing)]
    planned_out = [entry for entry in report.plan if entry.status != "run"]
    if planned_out:
        lines += ["", "## Planned n/a and limitations", ""]
        lines += [f"- `{e.item_name}`: {e.status} ({e.capability}): {e.reason}" for e in planned_out]
    return "\n".join(lines) + "\n"


def report_paths(path: str | Path) -> list[Path]:
    """``x.json`` -> JSON only, ``x.md`` -> Markdown only, anything else -> ``x.json`` and ``x.md``."""
    path = Path(path)
    if path.suffix in (".json", ".md"):
        return [path]
    return [path.with_name(path.name + ".json"), path.with_name(path.name + ".md")]


def write_report(report: ConformanceReport, path: str | Path) -> list[Path]:
    """Write the report to ``path`` (see ``report_paths``); returns the files written."""
    written = []
    for target in report_paths(path):
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".json":
            target.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        else:
            target.write_text(render_markdown(report), encoding="utf-8")
        written.append(target)
    return written
