"""Check for section P: P1 random-schedules.

Hypothesis draws turn-based schedules (``conformance.schedules``) for the strategy's declared
capabilities; each one runs in the sandbox and ``conformance.oracle`` judges it against the outcome the
scenario implies and the invariants every run keeps. Everything random comes from the kit's seed:
hypothesis runs derandomised with ``@seed(ctx.seed)``, no example database, no deadline.

Profiles: ``conformance-ci`` (default) stops generating after ``CI_BUDGET`` seconds or ``CI_EXAMPLES``
examples, whichever comes first; ``conformance-thorough`` (``--conformance-examples N``) runs N examples
with no time budget. A failure is shrunk (bounded: ``SHRINK_RUNS`` runs, ``SHRINK_BUDGET`` seconds) to a
minimal scenario, printed as pasteable Python with the one command that replays it
(``--conformance-replay``), and re-run ``RERUNS`` times (fewer past ``RERUN_BUDGET`` seconds: a hang
costs its whole bound) to say how often it reproduces; one that never reproduces is reported as
timing-dependent, still as a failure.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings

from conformance.checks import CheckContext, contract
from conformance.oracle import Expectation, expect, judge
from conformance.scenarios import Scenario, ScenarioResult
from conformance.schedules import (
    ScheduleBounds,
    scenario_from_json,
    scenario_json,
    scenario_source,
    scenarios,
)
from conformance.target import DEFAULT_STORE_FACTORY

__all__ = [
    "CI_BUDGET",
    "CI_EXAMPLES",
    "CI_PROFILE",
    "RERUNS",
    "RERUN_BUDGET",
    "SHRINK_BUDGET",
    "SHRINK_RUNS",
    "THOROUGH_PROFILE",
    "Exploration",
    "Finding",
    "explore",
    "replay_command",
]

CI_PROFILE = "conformance-ci"
THOROUGH_PROFILE = "conformance-thorough"
CI_EXAMPLES = 150
CI_BUDGET = 45.0  # seconds of generation; shrinking and re-runs come on top only when something fails
SHRINK_RUNS = 150
SHRINK_BUDGET = 45.0  # seconds of shrinking at most; the smallest failure so far is kept
RERUNS = 3
RERUN_BUDGET = 30.0  # seconds: re-runs past it are skipped (the report says how many ran)

settings.register_profile(
    CI_PROFILE,
    max_examples=CI_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
    print_blob=False,
    verbosity=Verbosity.quiet,
)
settings.register_profile(THOROUGH_PROFILE, parent=settings.get_profile(CI_PROFILE), max_examples=500)


class _Violated(AssertionError):
    """Raised inside the hypothesis property so that hypothesis shrinks the scenario."""


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


@contextlib.contextmanager
def _private_hypothesis_home() -> Iterator[None]:
    """Point hypothesis' storage at a private temporary directory while P1 explores.

    ``database=None`` keeps examples out of the user's project, but hypothesis also caches the constants
    of local modules under its home directory (``.hypothesis/constants`` in the current directory);
    P1 must write nothing into a user's project, so that home is ours for the duration.
    """
    try:
        from hypothesis import configuration
    except ImportError:  # pragma: no cover - hypothesis without a configurable home
        yield
        return
    setter = getattr(configuration, "set_hypothesis_home_dir", None)
    if setter is None:  # pragma: no cover
        yield
        return
    previous = configuration.storage_directory(intent_to_write=False).home_directory
    home = tempfile.mkdtemp(prefix="conformance-p1-hypothesis-")
    setter(home)
    try:
        yield
    finally:
        setter(previous)
        shutil.rmtree(home, ignore_errors=True)


def explore(
    ctx: CheckContext,
    *,
    examples: int | None = None,
    budget: float | None = CI_BUDGET,
    bounds: ScheduleBounds | None = None,
    reruns: int = RERUNS,
    shrink_runs: int = SHRINK_RUNS,
    shrink_budget: float = SHRINK_BUDGET,
    on_example: Callable[[Scenario, list[str]], None] | None = None,
) -> Exploration:
    """Run P1's property against ``ctx.target``: ``examples`` scenarios (thorough) or the CI profile.

    ``budget`` (seconds) stops generating new scenarios once spent (the CI profile); ``None`` runs every
    example. Returns what was explored, with the shrunk ``Finding`` (re-run ``reruns`` times) on failure.
    """
    profile = THOROUGH_PROFILE if examples is not None else CI_PROFILE
    config = settings(settings.get_profile(profile), max_examples=examples or CI_EXAMPLES)
    bounds = bounds or ScheduleBounds(timeout_scale=ctx.timeout_scale)
    exploration = Exploration(profile=profile)
    cache: dict[str, tuple[Expectation, ScenarioResult, list[str]]] = {}
    failing: list[tuple[Scenario, Expectation, ScenarioResult, list[str]]] = []
    started = time.monotonic()
    shrink_started: list[float] = []

    def body(scenario: Scenario) -> None:
        key = scenario_json(scenario)
        outcome = cache.get(key)
        if outcome is None:
            if not failing:
                if budget is not None and time.monotonic() - started > budget:
                    exploration.budget_hit = True
                    return  # the CI budget is spent: the rest of the examples are not run
                exploration.examples += 1
            else:
                if not shrink_started:
                    shrink_started.append(time.monotonic())
                spent = time.monotonic() - shrink_started[0]
                if exploration.shrink_runs >= shrink_runs or spent > shrink_budget:
                    return  # shrinking budget spent: keep the smallest failure found so far
                exploration.shrink_runs += 1
            outcome = cache[key] = _run(ctx, scenario)
            if on_example is not None:
                on_example(scenario, outcome[2])
        expectation, result, violations = outcome
        if violations:
            failing.append((scenario, expectation, result, violations))
            raise _Violated("\n".join(violations))

    property_test = settings(config)(seed(ctx.seed)(given(scenarios(ctx.capabilities, bounds))(body)))
    try:
        with _private_hypothesis_home():
            property_test()
    except Exception:
        # The property failed (possibly reported by hypothesis as flaky, when the minimal scenario did not
        # fail again on its final replay): the smallest failure recorded is the finding either way.
        if not failing:
            raise
    exploration.seconds = time.monotonic() - started
    if failing:
        scenario, expectation, result, violations = failing[-1]
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
    if finding.timing_dependent:
        reproduction = (
            f"reproduced {rate} re-runs: TIMING-DEPENDENT (the schedule failed once and did not fail again; "
            "the failure is real, the interleaving that triggers it is rare)"
        )
    else:
        reproduction = f"reproduced {rate} re-runs of the minimal scenario"
    searched = ""
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
        figure=f"reproduced {rate}",
        result=finding.result,
        details=details,
    )


@contract("P1", situations=("default",))
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
    exploration = explore(ctx, examples=examples, budget=None if examples else CI_BUDGET)
    if exploration.finding is not None:
        _report(ctx, exploration.finding, exploration)
