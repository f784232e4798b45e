"""``python -m conformance.selfcheck``: the kit proves itself on the broken zoos (a mutation score).

Runs the kit (``python -m conformance SPEC``, one subprocess per strategy, ``--jobs`` at a time) on every
broken strategy of ``strategies/broken`` and on the example and reference strategies, and the store
suite (``python -m conformance --store FACTORY``) on every broken store of ``strategies/broken_stores``
and on the reference store, then prints the mutation table: each broken specimen, the contract it
breaks, the contracts the kit failed, whether the defect was caught on its intended contract, and the
collateral failures (listed, never hidden). The score is the share of broken specimens caught on their
own contract; examples and references must pass.

Scope per broken strategy: its whole section by default (e.g. every K contract for a K defect, so
collateral failures within the section show); ``--quick`` runs only its own contract; ``--full`` runs
the whole suite. Examples and references always run the whole suite (``--quick`` skips the references).
Exit status 0 when every defect is caught and every example and reference passes.

Specimens built on an optional extra (``NEEDS = "ray"``) run against one local Ray cluster the selfcheck
holds for them (``conformance.ray_session``; or the one ``RAY_ADDRESS`` names), one at a time, after the
others; the good ``ray`` strategy runs beside them on the same checks and must pass them. Without the extra
each such row is reported as skipped, with the reason naming the extra: never dropped, never a failure.

``--interleavings`` runs each interleaving-only specimen (``INTERLEAVING_ONLY = True``: a defect that
shows only in a rare interleaving of the strategy's own threads) ``--runs`` times (5 by default) under
the ``ci`` profile, each with another seed, P1 only, and prints how many runs caught it, the median time
P1 took to find it and how often the minimal scenario reproduced on its re-runs; then the examples and
references on the same seeds and profile (P1 only, the same perturbation), which must pass every run, and
the load average when the runs began and ended (the times depend on it). Exit status 0 when every run
caught its specimen and every example and reference passed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from conformance.catalogue import CATALOGUE

__all__ = [
    "EXAMPLES",
    "KIT_ISSUES",
    "REFERENCES",
    "REFERENCE_STORES",
    "InterleavingRun",
    "Row",
    "example_args",
    "kit_command",
    "main",
    "render_interleavings",
    "render_p1_passes",
    "run_interleaving",
    "run_one",
]

EXAMPLES = (
    "strategies.single_loop.SingleLoopExecutionStrategy",
    "strategies.thread_pool.ThreadPoolExecutionStrategy",
)
KIT_ISSUES: dict[str, str] = {}
"""Contracts an example or reference may fail for a reason that is the kit's own (shown, never hidden)."""

_WAIVERS = {"strategies.single_loop.SingleLoopExecutionStrategy": "single_loop.waivers.toml"}
"""Waiver files the examples ship (next to them in ``strategies/``), as a user would gate them."""


def example_args(spec: str) -> tuple[str, ...]:
    """Extra kit arguments for an example: its waiver file, if it ships one."""
    name = _WAIVERS.get(spec)
    if name is None:
        return ()
    import strategies

    return ("--conformance-waivers", os.path.join(os.path.dirname(strategies.__file__), name))


REFERENCES = ("shm", "cs", "ipc")
RAY_REFERENCE = "ray"
"""The good Ray strategy: run on the checks of the broken Ray specimens selected, beside them."""
RAY_EXTRA = ("--conformance-timeout-scale", "3")
"""Kit arguments of every Ray row, the good one's too: each Ray actor starts a worker process that imports
Ray (seconds on a loaded 2-core machine, two at a time), so the default hang bounds, sized for processes
that start in milliseconds, would report a slow start-up as a hang and block the contracts behind it."""
REFERENCE_STORES = (
    "agentlightning.store.memory.InMemoryLightningStore",
    "agentlightning.store.sqlite.SqliteLightningStore",
)


@dataclasses.dataclass
class Row:
    """One strategy's line of the table."""

    name: str
    spec: str
    role: str  # "broken", "example" or "reference"
    subject: str = "strategy"  # what SPEC is: a "strategy" or a "store" (run with --store)
    breaks: str = ""  # the contract a broken strategy breaks
    also: tuple[str, ...] = ()  # further contracts that must catch it too (a specimen's ALSO_BREAKS)
    kit_gap: str = ""  # a known miss (the module's KIT_GAP), reported as such
    kind: str = ""
    selection: str = ""  # the -k expression ("" = whole suite)
    extra: tuple[str, ...] = ()  # further kit arguments (an example's waiver file, -x)
    failed: list[str] = dataclasses.field(default_factory=list)
    blocked: list[str] = dataclasses.field(default_factory=list)  # contracts blocked by a prerequisite
    verdicts: dict[str, str] = dataclasses.field(default_factory=dict)
    reasons: dict[str, str] = dataclasses.field(default_factory=dict)  # failing item -> what the kit saw
    error: str = ""  # the kit did not produce a report
    needs: str = ""  # the optional extra the row is built on (a specimen's NEEDS; "ray" for the ray row)
    skipped: str = ""  # why the row cannot run here (its extra is missing), else ""
    seconds: float = 0.0

    @property
    def kit_issues(self) -> list[str]:
        """Failures of an example or reference explained by a known kit issue (``KIT_ISSUES``)."""
        return [cid for cid in self.failed if cid in KIT_ISSUES] if self.role != "broken" else []

    @property
    def ok(self) -> bool:
        if self.skipped:
            return True  # not run, and said so (status, render): never counted as caught
        if self.error:
            return False
        if self.role == "broken":
            also_ran = [cid for cid in self.also if cid in self.verdicts]
            return self.breaks in self.failed and all(cid in self.failed for cid in also_ran)
        return not (set(self.failed) - set(self.kit_issues))

    @property
    def status(self) -> str:
        if self.skipped:
            return "SKIPPED"
        if self.error:
            return "ERROR"
        if self.role == "broken":
            if self.breaks not in self.verdicts:
                return "NOT RUN"
            if self.ok:
                return "caught"
            return "MISSED (known kit gap)" if self.kit_gap else "MISSED"
        if self.ok and self.kit_issues:
            return "pass*"
        return "pass" if self.ok else "FAIL"

    @property
    def collateral(self) -> list[str]:
        intended = {self.breaks, *self.also}
        return [cid for cid in self.failed if cid not in intended] if self.role == "broken" else []

    def as_json(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "status": self.status,
            "ok": self.ok,
            "collateral": self.collateral,
            "kit_issues": self.kit_issues,
        }


def section_expression(contract_id: str) -> str:
    """A ``-k`` expression selecting every contract of ``contract_id``'s section (``K1`` -> K1..K5)."""
    section = contract_id.rstrip("0123456789")
    ids = [cid for cid in CATALOGUE if cid.rstrip("0123456789") == section]
    return " or ".join(f"{cid}-" for cid in ids)


def kit_command(
    spec: str, selection: str, report: str, extra: Sequence[str] = (), subject: str = "strategy"
) -> list[str]:
    """The subprocess that runs the kit on ``spec`` (a strategy, or with ``subject="store"`` a store
    factory), selecting ``selection`` (a ``-k`` expression)."""
    target = [spec] if subject == "strategy" else ["--store", spec]
    command = [sys.executable, "-m", "conformance", *target, "-p", "no:cacheprovider", "-q", "-n", "0"]
    command += ["--conformance-report", report, *extra]
    if selection:
        command += ["-k", selection]
    return command


def _run_kit(
    row: Row, timeout: float, env: dict[str, str] | None = None
) -> tuple[dict[str, Any] | None, str, float]:
    """Run the kit for ``row`` (a fresh report file per run; ``env``: variables to add, a Ray cluster's):
    its report, or why there is none, and the wall time."""
    with tempfile.TemporaryDirectory(prefix="selfcheck-") as scratch:
        report = os.path.join(scratch, "report.json")
        started = time.monotonic()
        try:
            completed = subprocess.run(
                kit_command(row.spec, row.selection, report, row.extra, row.subject),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env=None if env is None else {**os.environ, **env},
            )
        except subprocess.TimeoutExpired:
            return None, f"the kit did not finish within {timeout:g} s", time.monotonic() - started
        seconds = time.monotonic() - started
        try:
            with open(report, encoding="utf-8") as handle:
                return dict(json.load(handle)), "", seconds
        except (OSError, ValueError) as exc:
            tail = (completed.stdout + completed.stderr).strip().splitlines()[-12:]
            return None, f"no report ({exc}); exit {completed.returncode}: " + " | ".join(tail), seconds


def run_one(row: Row, *, timeout: float = 900.0, env: dict[str, str] | None = None) -> Row:
    """Run the kit for ``row`` and fill in its verdicts (a fresh report file per run)."""
    if row.skipped:
        return row
    data, row.error, row.seconds = _run_kit(row, timeout, env)
    if data is None:
        return row
    row.verdicts = dict(data.get("contracts", {}))
    row.failed = [cid for cid, verdict in row.verdicts.items() if verdict == "fail"]
    row.blocked = [cid for cid, verdict in row.verdicts.items() if verdict == "blocked"]
    row.reasons = {
        str(result.get("item")): str(result.get("reason", ""))
        for result in data.get("results", [])
        if result.get("verdict") == "fail"
    }
    return row


def plan_rows(*, scope: str, only: Sequence[str], with_references: bool) -> list[Row]:
    from strategies.broken import specimens
    from strategies.broken_stores import specimens as store_specimens

    rows: list[Row] = []
    for specimen in [*specimens(), *store_specimens()]:
        if specimen.breaks not in CATALOGUE:
            raise SystemExit(f"{specimen.name}: BREAKS = {specimen.breaks!r} is not a contract ID")
        own = " or ".join(f"{cid}-" for cid in (specimen.breaks, *specimen.also_breaks))
        selection = {"contract": own, "section": section_expression(specimen.breaks)}.get(scope, "")
        rows.append(
            Row(
                name=specimen.name,
                spec=specimen.spec,
                role="broken",
                breaks=specimen.breaks,
                also=specimen.also_breaks,
                kind=specimen.kind,
                selection=selection,
                kit_gap=specimen.kit_gap,
                subject="store" if specimen.kind == "store" else "strategy",
                needs=specimen.needs,
                skipped=specimen.unavailable,
                extra=RAY_EXTRA if specimen.needs == "ray" else (),
            )
        )
    for spec in EXAMPLES:
        rows.append(Row(name=spec.rsplit(".", 2)[-2], spec=spec, role="example", extra=example_args(spec)))
    if with_references:
        rows.extend(Row(name=alias, spec=alias, role="reference") for alias in REFERENCES)
        rows.extend(
            Row(name=spec.rsplit(".", 1)[-1], spec=spec, role="reference", subject="store", kind="store")
            for spec in REFERENCE_STORES
        )
    if only:
        rows = [row for row in rows if any(pattern in row.name or pattern == row.spec for pattern in only)]
        if not rows:
            raise SystemExit(f"--only {' '.join(only)}: matches no strategy or store")
    rows += _ray_beside(rows, scope)
    return rows


def _ray_beside(rows: Sequence[Row], scope: str) -> list[Row]:
    """The good ``ray`` strategy on every check its broken Ray specimens in ``rows`` run (none: none)."""
    ray_rows = [row for row in rows if row.role == "broken" and row.needs == "ray"]
    if not ray_rows or any(row.spec == RAY_REFERENCE for row in rows):
        return []
    from conformance.ray_session import ray_missing

    selections = list(dict.fromkeys(row.selection for row in ray_rows))
    selection = "" if scope == "full" or "" in selections else " or ".join(selections)
    return [
        Row(
            name=RAY_REFERENCE,
            spec=RAY_REFERENCE,
            role="reference",
            selection=selection,
            needs="ray",
            skipped=ray_missing(),
            extra=RAY_EXTRA,
        )
    ]


def _good_seconds(rows: Sequence[Row]) -> float | None:
    """The median whole-suite wall time of the strategies that passed (examples and references), the
    yardstick of a broken one's: a prerequisite's failure must not make the kit slower than twice it."""
    good = sorted(
        row.seconds for row in rows if row.role != "broken" and row.subject == "strategy" and row.ok
    )
    return good[len(good) // 2] if good else None


def render(rows: Sequence[Row]) -> str:
    """The mutation table, then the examples and references, then the score."""
    lines: list[str] = []
    broken = [row for row in rows if row.role == "broken"]
    good = _good_seconds(rows)
    if broken:
        header = (
            "specimen",
            "kind",
            "breaks",
            "kit failed",
            "result",
            "collateral",
            "blocked",
            "time",
            "x good",
        )
        table = [
            (
                row.name,
                row.kind,
                "+".join((row.breaks, *row.also)),
                ",".join(row.failed) or "-",
                row.status,
                ",".join(row.collateral) or "-",
                str(len(row.blocked)) if row.blocked else "-",
                f"{row.seconds:.0f}s",
                f"{row.seconds / good:.2f}"
                if good and not row.selection and row.subject == "strategy"
                else "-",
            )
            for row in broken
        ]
        lines += _table(header, table)
        for row in broken:
            if row.skipped:
                lines.append(f"  {row.name}: skipped: {row.skipped}")
            elif row.error:
                lines.append(f"  {row.name}: {row.error}")
            elif row.kit_gap and not row.ok:
                lines.append(f"  {row.name}: known kit gap: {row.kit_gap}")
            elif row.kit_gap:
                lines.append(f"  {row.name}: caught now: remove its stale KIT_GAP")
    others = [row for row in rows if row.role != "broken"]
    if others:
        lines.append("")
        other_header = ("strategy", "role", "result", "kit failed", "time")
        other_table = [
            (row.spec, row.role, row.status, ",".join(row.failed) or "-", f"{row.seconds:.0f}s")
            for row in others
        ]
        lines += _table(other_header, other_table)
        for row in others:
            if row.skipped:
                lines.append(f"  {row.spec}: skipped: {row.skipped}")
            elif row.error:
                lines.append(f"  {row.spec}: {row.error}")
        for cid in sorted({cid for row in others for cid in row.kit_issues}):
            lines.append(f"  * {cid} failed: a known kit issue, not the strategy's: {KIT_ISSUES[cid]}")
    lines.append("")
    full = [row for row in broken if not row.selection and row.subject == "strategy"]
    if good and full:
        slowest = max(full, key=lambda row: row.seconds)
        lines.append(
            f"wall time: good strategies' median {good:.0f}s; slowest broken strategy {slowest.name} "
            f"{slowest.seconds:.0f}s ({slowest.seconds / good:.2f}x); "
            f"{sum(row.seconds <= 2 * good for row in full)}/{len(full)} within 2x"
        )
    skipped = [row for row in rows if row.skipped]
    broken = [row for row in broken if not row.skipped]
    others = [row for row in others if not row.skipped]
    if skipped:
        reasons = sorted({row.skipped for row in skipped})
        lines.append(f"skipped (not run, not counted): {len(skipped)}: {'; '.join(reasons)}")
    if broken:
        caught = sum(row.ok for row in broken)
        sections = sorted({row.breaks.rstrip("0123456789") for row in broken})
        lines.append(
            f"mutation score: {caught}/{len(broken)} caught on their intended contract "
            f"({100 * caught / len(broken):.0f}%); sections covered: {', '.join(sections)}; "
            f"collateral failures in {sum(bool(row.collateral) for row in broken)} of them"
        )
        stores = [row for row in broken if row.subject == "store"]
        if stores:
            lines.append(
                f"  of which broken stores (section T): {sum(row.ok for row in stores)}/{len(stores)} caught"
            )
        gaps = [row for row in broken if row.kit_gap and not row.ok]
        if gaps:
            rest = [row for row in broken if not (row.kit_gap and not row.ok)]
            lines.append(
                f"  excluding {len(gaps)} known kit gap(s) ({', '.join(row.name for row in gaps)}): "
                f"{sum(row.ok for row in rest)}/{len(rest)} caught"
            )
    if others:
        passed = sum(row.ok for row in others)
        lines.append(f"examples and references passing the kit: {passed}/{len(others)}")
    return "\n".join(lines)


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *body, strict=True)]
    fmt = "  ".join(f"{{:<{width}}}" for width in widths)
    return [
        fmt.format(*header).rstrip(),
        fmt.format(*("-" * width for width in widths)).rstrip(),
        *(fmt.format(*row).rstrip() for row in body),
    ]


@dataclasses.dataclass
class InterleavingRun:
    """One P1 run of the kit on an interleaving-only specimen, with one seed."""

    name: str
    spec: str
    seed: int
    caught: bool = False
    seconds: float = 0.0  # the kit's whole wall time
    to_find: float | None = None  # P1's generation time until the first failing scenario
    examples: int | None = None  # scenarios P1 ran until it found it
    reproduced: int = 0  # re-runs of the minimal scenario that failed again
    reruns: int = 0
    error: str = ""
    verdict: str = ""  # P1's verdict in the kit's report ("" when it has none)
    role: str = "broken"  # "broken" (must be caught), "example" or "reference" (must pass)

    @property
    def ok(self) -> bool:
        """A specimen's run caught it; an example's or reference's run passed P1."""
        return self.caught if self.role == "broken" else self.verdict == "pass" and not self.error


_REPRODUCED = re.compile(r"reproduced (\d+)/(\d+)")
_FOUND = re.compile(r"found after (\d+) scenario\(s\) in ([\d.]+) s")


def run_interleaving(
    name: str,
    spec: str,
    seed: int,
    *,
    profile: str = "ci",
    perturb: str = "",
    timeout: float = 900.0,
    role: str = "broken",
    extra: Sequence[str] = (),
) -> InterleavingRun:
    """Run the kit's P1 on ``spec`` with ``seed`` under ``profile`` and read what P1 found from its
    report (``perturb``: a ``--conformance-perturb`` mode, else the profile's; ``extra``: further kit
    arguments, an example's waiver file)."""
    arguments = [*extra, "--conformance-seed", str(seed), "--conformance-profile", profile]
    if perturb:
        arguments += ["--conformance-perturb", perturb]
    row = Row(name=name, spec=spec, role="broken", breaks="P1", selection="P1-", extra=tuple(arguments))
    run = InterleavingRun(name, spec, seed, role=role)
    data, run.error, run.seconds = _run_kit(row, timeout)
    if data is None:
        return run
    for result in data.get("results", []):
        if result.get("id") != "P1":
            continue
        if run.verdict != "fail":
            run.verdict = str(result.get("verdict", ""))
        if result.get("verdict") != "fail":
            continue
        run.caught = True
        run.error = "" if role == "broken" else str(result.get("reason", ""))[:300]
        figure = str(result.get("figure", ""))
        reproduced = _REPRODUCED.search(figure)
        if reproduced:
            run.reproduced, run.reruns = int(reproduced.group(1)), int(reproduced.group(2))
        found = _FOUND.search(figure)
        if found:
            run.examples, run.to_find = int(found.group(1)), float(found.group(2))
    return run


def render_interleavings(runs: Sequence[InterleavingRun]) -> str:
    """The table: per specimen, runs caught, median time to find, reproduction of the minimal scenario."""
    names = list(dict.fromkeys(run.name for run in runs))
    body = []
    for name in names:
        mine = [run for run in runs if run.name == name]
        caught = [run for run in mine if run.caught]
        times = [run.to_find for run in caught if run.to_find is not None]
        examples = [run.examples for run in caught if run.examples is not None]
        reruns = sum(run.reruns for run in caught)
        reproduced = sum(run.reproduced for run in caught)
        body.append(
            (
                name,
                f"{len(caught)}/{len(mine)}",
                f"{statistics.median(times):.1f} s" if times else "-",
                f"{statistics.median(examples):g}" if examples else "-",
                f"{reproduced}/{reruns} ({100 * reproduced / reruns:.0f}%)" if reruns else "-",
                " ".join(str(run.seed) for run in mine),
            )
        )
    header = (
        "specimen",
        "runs caught",
        "median time to find",
        "median scenarios",
        "minimal scenario reproduced",
        "seeds",
    )
    lines = _table(header, body)
    lines += [f"  {run.name} seed {run.seed}: {run.error}" for run in runs if run.error]
    total = sum(run.caught for run in runs)
    lines.append(f"interleaving-only specimens caught: {total}/{len(runs)} runs")
    return "\n".join(lines)


def render_p1_passes(runs: Sequence[InterleavingRun]) -> str:
    """The table of the examples and references: per strategy, the P1 runs that passed (each must)."""
    names = list(dict.fromkeys(run.name for run in runs))
    body = []
    for name in names:
        mine = [run for run in runs if run.name == name]
        failed = [run for run in mine if not run.ok]
        body.append(
            (
                name,
                mine[0].role,
                f"{len(mine) - len(failed)}/{len(mine)}",
                " ".join(f"{run.seed}:{run.verdict or 'no verdict'}" for run in failed) or "-",
                f"{statistics.median(run.seconds for run in mine):.0f} s",
                " ".join(str(run.seed) for run in mine),
            )
        )
    header = ("strategy", "role", "P1 runs passed", "failed runs (seed:verdict)", "median run", "seeds")
    lines = _table(header, body)
    lines += [f"  {run.name} seed {run.seed}: {run.error}" for run in runs if run.error and not run.ok]
    failures = sum(not run.ok for run in runs)
    lines.append(
        f"examples and references passing P1: {len(runs) - failures}/{len(runs)} runs, {failures} failures"
    )
    return "\n".join(lines)


def _load() -> str:
    """The load average (1, 5 and 15 minutes), which the times of a run depend on."""
    try:
        return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:  # pragma: no cover - a platform without it
        return "load average unknown"


def _interleavings(args: argparse.Namespace) -> int:
    from strategies.broken import specimens

    # (name, spec, role, extra kit arguments): the specimens, then the examples and references
    subjects: list[tuple[str, str, str, tuple[str, ...]]] = [
        (specimen.name, specimen.spec, "broken", ()) for specimen in specimens() if specimen.interleaving_only
    ]
    subjects += [(spec.rsplit(".", 2)[-2], spec, "example", example_args(spec)) for spec in EXAMPLES]
    subjects += [(alias, alias, "reference", ()) for alias in REFERENCES]
    if args.only:
        subjects = [subject for subject in subjects if any(pattern in subject[0] for pattern in args.only)]
    if not subjects:
        raise SystemExit("--interleavings: no interleaving-only specimen, example or reference matches")
    seeds = [args.seed + index for index in range(args.runs)]
    broken = sum(subject[2] == "broken" for subject in subjects)
    print(
        f"selfcheck --interleavings: {broken} specimens and {len(subjects) - broken} examples and "
        f"references x {len(seeds)} seeds ({', '.join(map(str, seeds))}), profile {args.profile}, "
        f"P1 only, {args.jobs} at a time; {_load()}",
        flush=True,
    )
    jobs = [(subject, seed) for subject in subjects for seed in seeds]
    runs: list[InterleavingRun] = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(
                run_interleaving,
                name,
                spec,
                seed,
                profile=args.profile,
                perturb=args.perturb,
                role=role,
                extra=extra,
            )
            for (name, spec, role, extra), seed in jobs
        ]
        for done in concurrent.futures.as_completed(futures):
            run = done.result()
            found = f", found in {run.to_find:.1f} s" if run.to_find is not None else ""
            if run.role == "broken":
                status = "caught" if run.caught else "MISSED"
            else:
                status = "pass" if run.ok else "FAIL"
            print(f"  {status:<7} {run.name} seed {run.seed} ({run.seconds:.0f} s{found})", flush=True)
            runs.append(run)
    order = {(subject[0], seed): index for index, (subject, seed) in enumerate(jobs)}
    runs.sort(key=lambda run: order[(run.name, run.seed)])
    print()
    specimen_runs = [run for run in runs if run.role == "broken"]
    good_runs = [run for run in runs if run.role != "broken"]
    if specimen_runs:
        print(render_interleavings(specimen_runs))
    if good_runs:
        print(("\n" if specimen_runs else "") + render_p1_passes(good_runs))
    print(f"{_load()} at the end")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"runs": [dataclasses.asdict(run) for run in runs]}, handle, indent=2)
    return 0 if all(run.ok for run in runs) else 1


def _print_done(row: Row) -> None:
    failed = f" failed {','.join(row.failed)}" if row.failed else ""
    print(f"  {row.status:<8} {row.name} ({row.seconds:.0f} s){failed}", flush=True)


def _run_on_ray(rows: Sequence[Row]) -> None:
    """Run ``rows`` one at a time (a Ray cluster takes every core there is) against one Ray cluster: the
    one ``RAY_ADDRESS`` names, else a local one held for them."""
    if os.environ.get("RAY_ADDRESS"):
        print(f"selfcheck: {len(rows)} Ray runs on the cluster at {os.environ['RAY_ADDRESS']}", flush=True)
        for row in rows:
            _print_done(run_one(row))
        return
    from conformance.ray_session import held_cluster

    print(f"selfcheck: starting a local Ray cluster for {len(rows)} Ray runs", flush=True)
    with held_cluster() as env:
        for row in rows:
            _print_done(run_one(row, env=env))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance.selfcheck",
        description="Run the kit on the broken zoo, the examples and the references; "
        "print the mutation table.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--quick",
        action="store_true",
        help="run each broken strategy on its own contract only, and skip the reference strategies",
    )
    scope.add_argument("--full", action="store_true", help="run each broken strategy on the whole suite")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="only strategies and stores whose name contains NAME (repeatable)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the score as JSON to PATH")
    parser.add_argument("--jobs", type=int, default=2, help="kit runs at a time (default 2)")
    parser.add_argument(
        "--interleavings",
        action="store_true",
        help="run P1 on each interleaving-only specimen, example and reference --runs times with different "
        "seeds; print the tables",
    )
    parser.add_argument("--runs", type=int, default=5, help="--interleavings: runs per specimen (default 5)")
    parser.add_argument(
        "--seed", type=int, default=1, help="--interleavings: the first run's seed (default 1)"
    )
    parser.add_argument("--profile", default="ci", help="--interleavings: the kit's profile (default ci)")
    parser.add_argument(
        "--perturb",
        default="",
        choices=("", "off", "p1", "all"),
        help="--interleavings: --conformance-perturb for each run (default: the profile's)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    if args.interleavings:
        return _interleavings(args)
    scope_name = "contract" if args.quick else "full" if args.full else "section"
    rows = plan_rows(scope=scope_name, only=args.only, with_references=not args.quick)
    print(f"selfcheck: {len(rows)} runs, scope {scope_name}, {args.jobs} at a time", flush=True)
    # Longest first (whole-suite runs), so the pool does not end on one long straggler.
    order = sorted(rows, key=lambda row: row.selection != "")
    on_ray = [row for row in order if row.needs == "ray" and not row.skipped]
    for row in order:
        if row.skipped:
            print(f"  {row.status:<8} {row.name}: {row.skipped}", flush=True)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        others = [row for row in order if row not in on_ray and not row.skipped]
        for done in concurrent.futures.as_completed([pool.submit(run_one, row) for row in others]):
            _print_done(done.result())
    if on_ray:
        _run_on_ray(on_ray)
    print()
    print(render(rows))
    if args.json:
        caught = [row for row in rows if row.role == "broken" and row.ok]
        broken = [row for row in rows if row.role == "broken"]
        payload = {
            "scope": scope_name,
            "rows": [row.as_json() for row in rows],
            "score": {"caught": len(caught), "broken": len(broken)},
            "ok": all(row.ok for row in rows),
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
