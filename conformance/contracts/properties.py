"""Check for section P: P1 random-schedules.

Hypothesis draws turn-based schedules (``conformance.schedules``) for the strategy's declared
capabilities; each one runs in the sandbox and ``conformance.oracle`` judges it against the outcome the
scenario implies and the invariants every run keeps. Everything random comes from the kit's seed:
hypothesis runs derandomised with ``@seed(ctx.seed)``, no example database, no deadline.

Profiles: ``conformance-ci`` (default) stops generating after ``CI_BUDGET`` seconds or ``CI_EXAMPLES``
examples, whichever comes first; ``conformance-thorough`` (``--conformance-examples N``) runs N examples
with no time budget. A failure is shrunk (bounded: ``SHRINK_RUNS`` runs, ``SHRINK_BUDGET`` seconds, and
``SHRINK_HANGS`` runs that hang, each run once: a hang costs its whole bound) to a minimal scenario,
printed as pasteable Python with the one command that replays it (``--conformance-replay``), and re-run
``RERUNS`` times (fewer past ``RERUN_BUDGET`` seconds) to say how often it reproduces; one that never
reproduces is reported as timing-dependent, still as a failure.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conformance.checks import CheckContext, contract
from conformance.exploration import CI_PROFILE, THOROUGH_PROFILE, describe_reproduction, search
from conformance.oracle import Expectation, expect, judge
from conformance.scenarios import Scenario, ScenarioResult
from conformance.schedules import (
    ScheduleBounds,
    scenario_from_json,
    scenario_json,
    scenario_source,
    scenarios,
    shape_of,
    shape_rotation,
)
from conformance.target import DEFAULT_STORE_FACTORY

__all__ = [
    "CI_BUDGET",
    "CI_EXAMPLES",
    "CI_PROFILE",
    "RERUNS",
    "RERUN_BUDGET",
    "SHRINK_BUDGET",
    "SHRINK_HANGS",
    "SHRINK_RUNS",
    "THOROUGH_PROFILE",
    "Exploration",
    "Finding",
    "explore",
    "replay_command",
]

CI_EXAMPLES = 150
CI_BUDGET = 45.0  # seconds of generation; shrinking and re-runs come on top only when something fails
SHRINK_RUNS = 150
SHRINK_BUDGET = 45.0  # seconds of shrinking at most; the smallest failure so far is kept
SHRINK_HANGS = 2  # shrink runs that hang at most (each waits out the scenario's hang bound)
RERUNS = 3
RERUN_BUDGET = 30.0  # seconds: re-runs past it are skipped (the report says how many ran)


@dataclass
class Finding:
    """The minimal failing scenario, what it broke, and how often it reproduced."""

    scenario: Scenario
    expectation: Expectation
    result: ScenarioResult
    violations: list[str]
    reproduced: int = 0
    reruns: int = 0
    rerun_violations: list[list[str]] = field(default_factory=list)

    @property
    def timing_dependent(self) -> bool:
        return self.reruns > 0 and self.reproduced == 0


@dataclass
class Exploration:
    """What one P1 exploration did: examples run (sandbox runs), wall time, and the finding if any."""

    profile: str
    examples: int = 0  # scenarios run while generating
    shrink_runs: int = 0
    seconds: float = 0.0
    finding: Finding | None = None
    budget_hit: bool = False
    seconds_to_find: float | None = None  # generation time until the first failing scenario


def _run(ctx: CheckContext, scenario: Scenario) -> tuple[Expectation, ScenarioResult, list[str]]:
    expectation = expect(scenario, ctx.capabilities, timeout_scale=ctx.timeout_scale)
    result = ctx.run(scenario)
    return expectation, result, judge(expectation, result)


def _rerun(ctx: CheckContext, finding: Finding, times: int, deadline: float | None = None) -> None:
    """Re-run the finding's scenario ``times`` times (fewer, but at least once, past ``deadline``: a
    scenario that hangs costs its whole hang bound per run)."""
    for index in range(times):
        if index and deadline is not None and time.monotonic() > deadline:
            break
        _, _, violations = _run(ctx, finding.scenario)
        finding.reruns += 1
        if violations:
            finding.reproduced += 1
        finding.rerun_violations.append(violations)


def explore(
    ctx: CheckContext,
    *,
    examples: int | None = None,
    budget: float | None = CI_BUDGET,
    bounds: ScheduleBounds | None = None,
    reruns: int = RERUNS,
    shrink_runs: int = SHRINK_RUNS,
    shrink_budget: float = SHRINK_BUDGET,
    shrink_hangs: int | None = SHRINK_HANGS,
    on_example: Callable[[Scenario, list[str]], None] | None = None,
    max_examples: int = CI_EXAMPLES,
) -> Exploration:
    """Run P1's property against ``ctx.target``: ``examples`` scenarios (thorough) or the CI profile.

    ``budget`` (seconds) stops generating new scenarios once spent (the CI profile, at most
    ``max_examples``); ``None`` runs every example. Returns what was explored, with the shrunk
    ``Finding`` (re-run ``reruns`` times) on failure.
    """
    profile = THOROUGH_PROFILE if examples is not None else CI_PROFILE
    bounds = bounds or ScheduleBounds(timeout_scale=ctx.timeout_scale)
    rotation = shape_rotation()
    found = search(
        scenarios(ctx.capabilities, bounds),
        lambda scenario: _run(ctx, scenario),
        lambda outcome: bool(outcome[2]),
        scenario_json,
        seed_value=ctx.seed,
        profile=profile,
        max_examples=examples or max_examples,
        budget=budget,
        shrink_runs=shrink_runs,
        shrink_budget=shrink_budget,
        on_example=None if on_example is None else lambda scenario, outcome: on_example(scenario, outcome[2]),
        # A perturbed failure may be timing-dependent: shrink only to scenarios that fail twice.
        confirm_shrinks=bounds.perturb,
        # A hang waits out the scenario's whole bound: run each hanging candidate once, and only a few.
        hung=lambda outcome: outcome[1].outcome == "hang",
        shrink_hangs=shrink_hangs,
        # The shapes in turn: every racing shape gets its share of a short budget, whatever the seed.
        admit=lambda scenario, index: shape_of(scenario) == rotation[index % len(rotation)],
    )
    exploration = Exploration(
        profile=profile,
        examples=found.examples,
        shrink_runs=found.shrink_runs,
        seconds=found.seconds,
        budget_hit=found.budget_hit,
        seconds_to_find=found.seconds_to_find,
    )
    if found.failing is not None:
        scenario, (expectation, result, violations) = found.failing
        finding = Finding(scenario, expectation, result, violations)
        _rerun(ctx, finding, reruns, deadline=time.monotonic() + RERUN_BUDGET)
        exploration.finding = finding
    return exploration


def replay_command(ctx: CheckContext, scenario: Scenario) -> str:
    """The one shell command that replays ``scenario`` against the same target."""
    target = ctx.target
    parts = ["pytest", f"--strategy={target.strategy}"]
    for key, value in target.options.items():
        if key != "n_runners":  # the scenario sets it
            parts.append(f"--strategy-option={key}={json.dumps(value)}")
    if target.store_factory != DEFAULT_STORE_FACTORY:
        parts.append(f"--store={target.store_factory}")
    if ctx.timeout_scale != 1.0:
        parts.append(f"--conformance-timeout-scale={ctx.timeout_scale}")
    parts += [f"--conformance-seed={ctx.seed}", "--conformance-only", "--conformance-replay"]
    return (
        " ".join(shlex.quote(part) for part in parts) + " " + shlex.quote(scenario_json(scenario)) + " -k P1"
    )


def _report(ctx: CheckContext, finding: Finding, exploration: Exploration | None) -> None:
    rate = f"{finding.reproduced}/{finding.reruns}"
    reproduction = describe_reproduction(finding.reproduced, finding.reruns)
    searched = ""
    figure = f"reproduced {rate}"
    if exploration is not None and exploration.seconds_to_find is not None:
        figure += f"; found after {exploration.examples} scenario(s) in {exploration.seconds_to_find:.1f} s"
    if exploration is not None:
        searched = (
            f"  found after {exploration.examples} scenario(s) of the {exploration.profile} profile, "
            f"shrunk in {exploration.shrink_runs} run(s), {exploration.seconds:.1f} s\n"
        )
    details = (
        f"{searched}"
        f"  {reproduction}\n"
        "  minimal scenario:\n"
        + "\n".join(f"    {line}" for line in scenario_source(finding.scenario).splitlines())
        + "\n  replay:\n    "
        + replay_command(ctx, finding.scenario)
    )
    ctx.fail(
        expected=finding.expectation.describe() + "; every L, R and S invariant holds",
        observed="; ".join(finding.violations),
        figure=figure,
        result=finding.result,
        details=details,
    )


@contract("P1")
def check_random_schedules(ctx: CheckContext) -> None:
    """P1: hypothesis-drawn schedules each match the oracle and keep every L, R and S invariant."""
    options: dict[str, Any] = dict(getattr(ctx, "kit_options", {}) or {})
    replay = options.get("replay")
    if replay:
        scenario = replay if isinstance(replay, Scenario) else scenario_from_json(str(replay))
        expectation, result, violations = _run(ctx, scenario)
        finding = Finding(scenario, expectation, result, violations)
        _rerun(ctx, finding, RERUNS - 1)
        if violations or finding.reproduced:
            if not violations:  # the first run passed, a re-run failed: report that run
                finding.violations = next(v for v in finding.rerun_violations if v)
            finding.reproduced += 1 if violations else 0
            finding.reruns += 1
            _report(ctx, finding, None)
        return
    examples = options.get("examples")
    bounds = ScheduleBounds(timeout_scale=ctx.timeout_scale, perturb=options.get("perturb") in ("p1", "all"))
    if examples:
        exploration = explore(ctx, examples=examples, budget=None, bounds=bounds)
    else:  # the run's profile may give P1 its own budget (conformance.profiles)
        exploration = explore(
            ctx,
            budget=float(options.get("budget", CI_BUDGET)),
            max_examples=int(options.get("max_examples", CI_EXAMPLES)),
            bounds=bounds,
        )
    if exploration.finding is not None:
        _report(ctx, exploration.finding, exploration)
