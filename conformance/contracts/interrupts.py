"""Checks for section K (KeyboardInterrupt): K1-K5.

K1/K2 raise ``KeyboardInterrupt`` inside a bundle. K3/K4 deliver SIGINT from outside (to the process
that called ``execute()``, or to its whole process group as a terminal's Ctrl+C does) at four named
moments, each pinned by a gate: before any bundle started (bundles are held at their prologue until the
signal is out), while all run, after the algorithm returned with shutdown under way (a runner holds at a
gate until the signal is out), and with the event already set. K5 sends a second SIGINT once the
strategy visibly reacted to the first.
"""

from __future__ import annotations

from conformance.checks import CheckContext, contract
from conformance.contracts._engine import (
    ALL_STARTED,
    POLL,
    bundle_names,
    describe_outcome,
    expect_raised,
    first,
    grace,
    hang_bound,
    leak_lines,
    once_all_started,
    records,
    runners_stopped,
)
from conformance.scenarios import Fault, Scenario, ScenarioResult, Script, Step

__all__: list[str] = []

_KI = "builtins.KeyboardInterrupt"
_LEFT_BEHIND = (
    "threads",
    "processes",
    "zombies",
    "fds",
    "sockets",
    "ipc",
    "temp_files",
    "asyncio",
    "caller_state",
)


def _nothing_left(ctx: CheckContext, result: ScenarioResult, why: str) -> None:
    lines = leak_lines(result.leaks, _LEFT_BEHIND)
    if lines:
        ctx.fail(
            expected=f"{why} leaves nothing behind (R1-R5, R7 hold)",
            observed=f"{len(lines)} leftovers",
            details="\n".join(f"  - {line}" for line in lines),
            result=result,
        )


def _check_ki_in_bundle(ctx: CheckContext, raiser: str) -> None:
    names = bundle_names(ctx.n_runners)
    ki = once_all_started(Step("sleep", 0.05), Step("keyboard_interrupt"))
    runners = tuple(ki if f"runner {i}" == raiser else POLL for i in range(ctx.n_runners))
    scenario = Scenario(
        f"{ctx.contract_id}-{raiser}",
        n_runners=ctx.n_runners,
        algorithm=ki if raiser == "algorithm" else POLL,
        runners=runners,
        faults=(ALL_STARTED,),
        hang_bound=hang_bound(ctx),
    )
    result = ctx.run(scenario)
    expect_raised(ctx, result, _KI, f"KeyboardInterrupt raised in {raiser}, neither swallowed nor replaced")
    others = [name for name in names if name != raiser]
    stopped = {r.bundle for r in records(result) if r.kind in ("saw-stop", "cancelled")}
    missed = [name for name in others if name not in stopped]
    if missed:
        ctx.fail(
            expected=f"KeyboardInterrupt in {raiser} sets the event and every other bundle stops",
            observed=f"{', '.join(missed)} never saw the stop nor was cancelled",
            result=result,
        )
    runners_stopped(ctx, result, others)
    raised = first(result, "exception", raiser)
    end = first(result, "execute-end", "kit")
    if raised is not None and end is not None:
        took = end.t - raised.t
        bound = grace(ctx) + ctx.bound(2.0)
        if took > bound:
            ctx.fail(
                expected="execute() stops promptly after the KeyboardInterrupt (cooperative bundles)",
                observed=f"it raised {took:.3f} s later",
                figure=f"{took:.3f} s against grace + 2 s = {bound:.3f} s",
                result=result,
            )


@contract("K1")
def check_ki_in_algorithm(ctx: CheckContext) -> None:
    """K1: KeyboardInterrupt in the algorithm sets the event, stops all runners, is raised by execute()."""
    _check_ki_in_bundle(ctx, "algorithm")


@contract("K2")
def check_ki_in_runner(ctx: CheckContext) -> None:
    """K2: the same when a runner (the last one) raises KeyboardInterrupt, in a thread or a process."""
    _check_ki_in_bundle(ctx, f"runner {ctx.n_runners - 1}")


def _sigint_scenario(ctx: CheckContext, action: str, moment: str) -> Scenario:
    n = 2
    name = f"{ctx.contract_id}-{moment}"
    if moment == "before-start":
        return Scenario(
            name,
            n_runners=n,
            algorithm=POLL,
            runners=(POLL,),
            faults=(Fault(action, "before start"),),  # type: ignore[arg-type]
            hang_bound=hang_bound(ctx),
        )
    if moment == "while-running":
        return Scenario(
            name,
            n_runners=n,
            algorithm=POLL,
            runners=(POLL,),
            faults=(Fault(action, "all started"),),  # type: ignore[arg-type]
            hang_bound=hang_bound(ctx),
        )
    if moment == "during-shutdown":
        # The algorithm returns; runner 0 sees the stop and holds at a gate, so shutdown is under way
        # (the strategy waits for it) when the signal lands; the gate opens right after.
        held = Script((Step("poll"), Step("gate", args={"name": "shutdown", "ignore_event": True})))
        return Scenario(
            name,
            n_runners=n,
            algorithm=once_all_started(Step("sleep", 0.02)),
            runners=(held, POLL),
            faults=(ALL_STARTED, Fault(action, "gate shutdown", open_gate="shutdown")),  # type: ignore[arg-type]
            hang_bound=hang_bound(ctx),
        )
    if moment == "event-set":
        setter = once_all_started(
            Step("set_event"), Step("gate", args={"name": "event-set", "ignore_event": True})
        )
        return Scenario(
            name,
            n_runners=n,
            algorithm=setter,
            runners=(POLL,),
            faults=(ALL_STARTED, Fault(action, "gate event-set", open_gate="event-set")),  # type: ignore[arg-type]
            hang_bound=hang_bound(ctx),
        )
    raise ValueError(f"unknown moment {moment!r}")


def _check_sigint(ctx: CheckContext, action: str) -> None:
    result = ctx.run(_sigint_scenario(ctx, action, ctx.situation))
    target = "the process calling execute()" if action == "sigint-main" else "the whole process group"
    fault = first(result, "fault", "kit")
    if fault is None:
        ctx.fail(
            expected=f"SIGINT delivered to {target} at '{ctx.situation}'",
            observed=f"execute() ended before the moment was reached ({describe_outcome(result)})",
            result=result,
        )
    expect_raised(ctx, result, _KI, f"SIGINT to {target} at '{ctx.situation}'")
    end = first(result, "execute-end", "kit")
    assert end is not None
    took = end.t - fault.t
    bound = ctx.bound(1.0)
    figure = f"{took:.3f} s against a bound of {bound:.3f} s"
    if took > bound:
        ctx.fail(
            expected=f"execute() raises KeyboardInterrupt within 1 s of SIGINT to {target}",
            observed=f"it raised {took:.3f} s after the signal",
            figure=figure,
            result=result,
        )
    ctx.measure(figure)  # a pass says its margin: a bound met by a hair is a flake waiting to happen
    _nothing_left(ctx, result, "the interrupted execute()")
    if action == "sigint-group":
        survivors = result.measurements.get("survivors") or []
        if survivors:
            ctx.fail(
                expected="after Ctrl+C to the group no child survives",
                observed="; ".join(survivors),
                result=result,
            )


@contract("K3")
def check_sigint_main(ctx: CheckContext) -> None:
    """K3: SIGINT to the main process at each moment: KeyboardInterrupt within 1 s, nothing left behind."""
    _check_sigint(ctx, "sigint-main")


@contract("K4")
def check_sigint_group(ctx: CheckContext) -> None:
    """K4: SIGINT to the whole process group (terminal Ctrl+C): as K3, and no child survives."""
    _check_sigint(ctx, "sigint-group")


@contract("K5")
def check_second_sigint(ctx: CheckContext) -> None:
    """K5: a second SIGINT during shutdown forces a faster shutdown (no grace wait), nothing left behind."""
    declared = grace(ctx)
    stubborn = Script((Step("ignore_event", ctx.bound(60.0) + declared),))
    scenario = Scenario(
        "K5",
        n_runners=2,
        algorithm=POLL,
        runners=(stubborn, POLL),
        faults=(Fault("sigint-main", "all started", repeat=2),),
        hang_bound=hang_bound(ctx, ctx.bound(60.0)),
    )
    result = ctx.run(scenario)
    expect_raised(ctx, result, _KI, "two SIGINTs")
    faults = records(result, "fault", "kit")
    end = first(result, "execute-end", "kit")
    assert end is not None and faults
    last = faults[-1]
    took = end.t - last.t
    bound = ctx.bound(1.0)
    figure = f"{took:.3f} s against a bound of {bound:.3f} s"
    if len(faults) >= 2 and took > bound:
        ctx.fail(
            expected="a second SIGINT skips the grace period: execute() raises within 1 s of it",
            observed=f"it raised {took:.3f} s after the second SIGINT (declared grace {declared:g} s)",
            figure=figure,
            result=result,
        )
    if len(faults) < 2 and end.t - faults[0].t > bound:
        ctx.fail(
            expected="a second SIGINT is possible during shutdown",
            observed="the second SIGINT never went out, yet shutdown took longer than 1 s",
            result=result,
        )
    _nothing_left(ctx, result, "a doubly interrupted execute()")
    if len(faults) >= 2:
        ctx.measure(f"{figure} after the second SIGINT")
