"""Checks for section E (exceptions): E1-E6.

Bundles raise the kit's own ``conformance.bundles.ScriptedError`` (not a builtin, so re-raising the
original type across a process boundary is really tested) with a message unique to the check; the
traceback must reach the caller, recognisable by the kit's raising frame ``_raise_scripted``.
"""

from __future__ import annotations

from conformance.checks import CheckContext, contract
from conformance.contracts._engine import (
    ALL_STARTED,
    ERROR_TYPE,
    POLL,
    bundle_names,
    describe_outcome,
    exception_text,
    expect_raised,
    first,
    hang_bound,
    leak_lines,
    once_all_started,
    records,
    runners_stopped,
)
from conformance.scenarios import Fault, Scenario, ScenarioResult, Script, Step

__all__: list[str] = []

_RAISING_FRAME = "_raise_scripted"
_LEAKS = ("threads", "processes", "zombies", "fds", "sockets", "ipc", "temp_files")


def _raise(message: str, type_name: str = "ScriptedError") -> Step:
    return Step("raise", args={"type": type_name, "message": message})


def scenario_error(ctx: CheckContext, raiser: str, message: str) -> Scenario:
    """``raiser`` fails after a short while; everyone else polls the event."""
    failing = once_all_started(Step("sleep", 0.05), _raise(message))
    runners = tuple(failing if f"runner {i}" == raiser else POLL for i in range(ctx.n_runners))
    return Scenario(
        f"{ctx.contract_id}-{raiser}",
        n_runners=ctx.n_runners,
        algorithm=failing if raiser == "algorithm" else POLL,
        runners=runners,
        faults=(ALL_STARTED,),
        hang_bound=hang_bound(ctx),
    )


def verify_error(ctx: CheckContext, result: ScenarioResult, raiser: str, message: str) -> None:
    expect_raised(ctx, result, ERROR_TYPE, f"the error raised in {raiser}", message)
    if _RAISING_FRAME not in exception_text(result):
        ctx.fail(
            expected="the original traceback (the bundle's raising frame) is attached to the re-raised error",
            observed=f"no frame {_RAISING_FRAME!r} in the traceback, its causes or notes",
            result=result,
        )
    others = [name for name in bundle_names(ctx.n_runners) if name != raiser]
    stopped = {r.bundle for r in records(result) if r.kind in ("saw-stop", "cancelled")}
    missed = [name for name in others if name not in stopped]
    if missed:
        ctx.fail(
            expected=f"an error in {raiser} stops every other bundle",
            observed=f"{', '.join(missed)} never saw the stop nor was cancelled",
            result=result,
        )
    runners_stopped(ctx, result, others)


def _message(ctx: CheckContext, what: str) -> str:
    return f"{ctx.contract_id} {what} failure #{ctx.random.randrange(10**6)}"


@contract("E1")
def check_algorithm_error(ctx: CheckContext) -> None:
    """E1: an algorithm error stops the runners; execute() raises the same type and message, traceback on."""
    message = _message(ctx, "algorithm")
    verify_error(ctx, ctx.run(scenario_error(ctx, "algorithm", message)), "algorithm", message)


@contract("E2")
def check_runner_error(ctx: CheckContext) -> None:
    """E2: the same for an error in a runner (the last one)."""
    message = _message(ctx, "runner")
    raiser = f"runner {ctx.n_runners - 1}"
    verify_error(ctx, ctx.run(scenario_error(ctx, raiser, message)), raiser, message)


@contract("E3")
def check_first_error_wins(ctx: CheckContext) -> None:
    """E3: with several failures the first is raised; later ones are logged or attached, never masking it."""
    first_message = _message(ctx, "first")
    second_message = _message(ctx, "second")
    # runner 1 fails only once runner 0's failure is in the journal, and a moment later, so "first" is
    # unambiguous to any strategy (well within its grace, so runner 1 is not cancelled before it fails).
    second = Script(
        (
            Step("gate", args={"name": "second", "ignore_event": True}),
            Step("sleep", ctx.bound(0.2)),
            _raise(second_message, "ValueError"),
        )
    )
    runners = (once_all_started(_raise(first_message)), second, *([POLL] * (ctx.n_runners - 2)))
    scenario = Scenario(
        "E3",
        n_runners=ctx.n_runners,
        algorithm=POLL,
        runners=runners,
        faults=(ALL_STARTED, Fault("open-gate", "runner 0 exception", open_gate="second")),
        hang_bound=hang_bound(ctx),
    )
    result = ctx.run(scenario)
    expect_raised(ctx, result, ERROR_TYPE, "the first failure (runner 0)", first_message)
    if first(result, "exception", "runner 1") is not None:
        text = exception_text(result) + "\n" + result.stderr
        if second_message not in text:
            ctx.fail(
                expected="the later failure (runner 1's ValueError) is logged or attached to the error",
                observed="it appears neither in the raised error (notes, causes) nor in the log",
                result=result,
            )


@contract("E4")
def check_cleanup_error_no_mask(ctx: CheckContext) -> None:
    """E4: an error raised during cleanup (a runner failing while it stops, after the original error)
    does not replace the original error."""
    message = _message(ctx, "original")
    cleanup_fails = Script((Step("poll"), _raise("cleanup failed", "RuntimeError")))
    scenario = Scenario(
        "E4",
        n_runners=2,
        algorithm=once_all_started(Step("sleep", 0.05), _raise(message)),
        runners=(cleanup_fails, POLL),
        faults=(ALL_STARTED,),
        hang_bound=hang_bound(ctx),
    )
    result = ctx.run(scenario)
    expect_raised(ctx, result, ERROR_TYPE, "the original error, not the cleanup error", message)


def _check_no_leaks(ctx: CheckContext, result: ScenarioResult, why: str) -> None:
    lines = leak_lines(result.leaks, _LEAKS)
    survivors = result.measurements.get("survivors") or []
    if lines or survivors:
        ctx.fail(
            expected=f"{why} leaves nothing behind",
            observed=f"{len(lines) + len(survivors)} leftovers",
            details="\n".join(f"  - {line}" for line in [*lines, *survivors]),
            result=result,
        )


@contract("E5")
def check_startup_error(ctx: CheckContext) -> None:
    """E5: a bundle failing immediately, before the others started their work: no hang, no leak."""
    message = _message(ctx, "startup")
    raiser = "algorithm" if ctx.situation == "algorithm" else "runner 0"
    failing = Script((_raise(message),))
    # The others wait at a gate that never opens: they only leave when they see the stop.
    waiting = Script((Step("gate", args={"name": "never"}),))
    scenario = Scenario(
        f"E5-{ctx.situation}",
        n_runners=2,
        algorithm=failing if raiser == "algorithm" else waiting,
        runners=(failing, waiting) if raiser == "runner 0" else (waiting,),
        hang_bound=hang_bound(ctx),
    )
    result = ctx.run(scenario)
    if result.outcome == "hang":
        ctx.fail(
            expected="no hang after a start-up failure", observed=describe_outcome(result), result=result
        )
    expect_raised(ctx, result, ERROR_TYPE, f"{raiser} failed at once", message)
    _check_no_leaks(ctx, result, "a start-up failure")


@contract("E6")
def check_base_exceptions(ctx: CheckContext) -> None:
    """E6: SystemExit and other BaseExceptions from a bundle are raised by execute(), not swallowed."""
    raiser = "algorithm" if ctx.situation == "algorithm" else "runner 0"
    for step, type_name in (
        (Step("exit", args={"code": 3}), "builtins.SystemExit"),
        (_raise("E6 base", "ScriptedBaseException"), "conformance.bundles.ScriptedBaseException"),
    ):
        failing = once_all_started(Step("sleep", 0.05), step)
        scenario = Scenario(
            f"E6-{ctx.situation}-{type_name.rsplit('.', 1)[1]}",
            n_runners=2,
            algorithm=failing if raiser == "algorithm" else POLL,
            runners=(failing, POLL) if raiser == "runner 0" else (POLL,),
            faults=(ALL_STARTED,),
            hang_bound=hang_bound(ctx),
        )
        result = ctx.run(scenario)
        expect_raised(ctx, result, type_name, f"{type_name} raised in {raiser} is not swallowed")
        runners_stopped(ctx, result, bundle_names(2))
