"""Checks for section L (lifecycle and stop-event synchronisation): L1-L7.

Each check builds a scripted scenario, runs it in the sandbox and reads the journal. The scenario
builders and verifiers of L1-L4 (``scenario_l*``/``verify_l*``) are reused by F3 under each start method.
"""

from __future__ import annotations

from collections import Counter

from conformance.checks import CheckContext, contract
from conformance.contracts._engine import (
    ALL_STARTED,
    POLL,
    bundle_names,
    describe_outcome,
    expect_returned,
    first,
    grace,
    hang_bound,
    once_all_started,
    records,
)
from conformance.scenarios import Fault, Scenario, ScenarioResult, Script, Step

__all__: list[str] = []

_SHORT = once_all_started(Step("sleep", 0.05))  # the algorithm works briefly once all run, then returns


# -- L1 ------------------------------------------------------------------------------------------------


def scenario_l1(ctx: CheckContext) -> Scenario:
    return Scenario(
        "L1",
        n_runners=ctx.n_runners,
        algorithm=_SHORT,
        runners=(POLL,),
        faults=(ALL_STARTED,),
        hang_bound=hang_bound(ctx),
    )


def verify_l1(ctx: CheckContext, result: ScenarioResult) -> None:
    # Wrong worker ids are checked before the outcome: they are the cause of whatever follows.
    starts = records(result, "start")
    if not starts:
        expect_returned(ctx, result, "the algorithm returned and the runners stop when the event is set")
    algorithm_calls = [r for r in starts if r.bundle == "algorithm"]
    if len(algorithm_calls) != 1:
        ctx.fail(
            expected="the algorithm is awaited exactly once",
            observed=f"it started {len(algorithm_calls)} times",
            result=result,
        )
    runner_ids = [r.data.get("worker_id") for r in starts if r.bundle.startswith("runner ")]
    expected_ids = list(range(ctx.n_runners))
    counted = Counter(runner_ids)
    if sorted(runner_ids, key=repr) != expected_ids or any(n > 1 for n in counted.values()):
        ctx.fail(
            expected=f"each runner awaited exactly once with a distinct worker_id in {expected_ids}",
            observed=f"runners were called with worker_id {sorted(runner_ids, key=repr)}",
            result=result,
        )
    wrong_type = [
        r for r in starts if r.bundle.startswith("runner ") and r.data.get("worker_id_type") != "int"
    ]
    if wrong_type:
        ctx.fail(
            expected="worker_id is an int",
            observed=f"{wrong_type[0].bundle} got a {wrong_type[0].data.get('worker_id_type')}",
            result=result,
        )
    expect_returned(ctx, result, "the algorithm returned and the runners stop when the event is set")
    for record in starts:
        if record.data.get("store_is_none") or not record.data.get("event_ok"):
            ctx.fail(
                expected="every bundle gets a store and an event (set/clear/is_set/wait)",
                observed=f"{record.bundle} got store {record.data.get('store_type')} and event "
                f"{record.data.get('event_type')}",
                result=result,
            )


@contract("L1")
def check_bundles_called(ctx: CheckContext) -> None:
    """L1: algorithm once; each runner once with a distinct worker_id in 0..n-1; store and event given."""
    verify_l1(ctx, ctx.run(scenario_l1(ctx)))


# -- L2 ------------------------------------------------------------------------------------------------


def scenario_l2(ctx: CheckContext) -> Scenario:
    return Scenario(
        "L2",
        n_runners=ctx.n_runners,
        algorithm=_SHORT,
        runners=(POLL,),
        faults=(ALL_STARTED,),
        hang_bound=hang_bound(ctx),
    )


def verify_l2(ctx: CheckContext, result: ScenarioResult) -> None:
    expect_returned(ctx, result, "the algorithm returned")
    runners = bundle_names(ctx.n_runners)[1:]
    saw = {r.bundle for r in records(result, "saw-stop")}
    blind = [name for name in runners if name not in saw]
    if blind:
        ctx.fail(
            expected="when the algorithm returns the event is set and every polling runner sees it",
            observed=f"{', '.join(blind)} never saw the event set",
            result=result,
        )
    returned = {r.bundle for r in records(result, "end") if r.detail == "returned"}
    cut = [name for name in runners if name not in returned]
    if cut:
        ctx.fail(
            expected="runners that poll the event return normally",
            observed=f"{', '.join(cut)} did not return normally",
            result=result,
        )
    ends = records(result, "end")
    end = first(result, "execute-end", "kit")
    if not ends or end is None:
        ctx.fail(
            expected="every bundle ends and execute() returns", observed="journal incomplete", result=result
        )
    lag = end.t - max(r.t for r in ends)
    bound = ctx.bound(1.0)
    figure = f"{lag:.3f} s against a bound of {bound:.3f} s"
    if lag > bound:
        ctx.fail(
            expected="execute() returns within 1 s of the last bundle's return",
            observed=f"it returned {lag:.3f} s after the last bundle",
            figure=figure,
            result=result,
        )
    ctx.measure(f"{figure} from the last bundle's return")


@contract("L2")
def check_normal_completion(ctx: CheckContext) -> None:
    """L2: the algorithm's return sets the event, polling runners return, execute() returns None in 1 s."""
    verify_l2(ctx, ctx.run(scenario_l2(ctx)))


# -- L3 ------------------------------------------------------------------------------------------------


def scenario_l3(ctx: CheckContext) -> Scenario:
    # The algorithm waits until runner 0 has returned (the kit opens its gate from the journal), then
    # watches the event for a while: it must stay clear, and nobody else may be stopped.
    watch = ctx.bound(0.3)
    algorithm = Script((Step("gate", args={"name": "runner-0-returned"}), Step("poll", watch)))
    return Scenario(
        "L3",
        n_runners=max(2, ctx.n_runners),
        algorithm=algorithm,
        runners=(Script((Step("return"),)), *([POLL] * (max(2, ctx.n_runners) - 1))),
        faults=(Fault("open-gate", "runner 0 returned", open_gate="runner-0-returned"),),
        hang_bound=hang_bound(ctx),
    )


def verify_l3(ctx: CheckContext, result: ScenarioResult) -> None:
    expect_returned(ctx, result, "the algorithm returned after runner 0")
    opened = first(result, "gate-open", "algorithm")
    if opened is None:
        ctx.fail(
            expected="a runner returning normally does not set the event",
            observed="the algorithm saw the event set while it waited for runner 0 to return",
            result=result,
        )
    algorithm_end = first(result, "end", "algorithm")
    if first(result, "poll-timeout", "algorithm") is None or algorithm_end is None:
        ctx.fail(
            expected="after runner 0 returned, the event stays clear and the algorithm keeps running",
            observed="the algorithm saw the event set (or was stopped) after runner 0 returned",
            result=result,
        )
    early = [
        r.bundle
        for r in records(result)
        if r.bundle not in ("algorithm", "runner 0", "kit")
        and r.kind in ("saw-stop", "cancelled", "end")
        and r.t < algorithm_end.t
    ]
    if early:
        ctx.fail(
            expected="a runner's return does not stop the other runners",
            observed=f"{', '.join(sorted(set(early)))} stopped before the algorithm returned",
            result=result,
        )


@contract("L3")
def check_runner_return_is_local(ctx: CheckContext) -> None:
    """L3: a runner returning normally does not set the event nor stop the algorithm or other runners."""
    verify_l3(ctx, ctx.run(scenario_l3(ctx)))


# -- L4 ------------------------------------------------------------------------------------------------

_L4_EVIDENCE_TURNS = 25
"""Turns a watcher must have taken on its loop after ``set()`` returned, without seeing the event, before
a lag past L4's bound is the strategy's: half the polls it makes in the bound on an idle machine.

A lag alone is elapsed time, and on a loaded machine a good strategy's waiter can be held up past the
bound by the scheduler. A watcher that kept polling ``is_set()`` (or kept its loop turning while blocked
in ``wait()``) that many times after the set, and still did not see it, was running: the event did not
reach it. A ``wait()`` that sleeps in 2 s ticks leaves its loop turning ~200 times on an idle machine and
still dozens on a machine loaded 10 times over."""


def scenario_l4(ctx: CheckContext, setter: str) -> Scenario:
    """``setter`` ("algorithm" or "runner 0") sets the event once every bundle runs; the others watch it,
    alternately by polling ``is_set()`` and by blocking in ``wait()``."""
    n = max(2, ctx.n_runners)
    set_script = Script((Step("gate", args={"name": "all-started", "ignore_event": True}), Step("set_event")))
    watchers = [POLL, Script((Step("wait_event"),))]
    runners = []
    for index in range(n):
        if setter == f"runner {index}":
            runners.append(set_script)
        else:
            runners.append(watchers[index % 2])
    algorithm = set_script if setter == "algorithm" else POLL
    return Scenario(
        f"L4-{setter}",
        n_runners=n,
        algorithm=algorithm,
        runners=tuple(runners),
        faults=(Fault("open-gate", "all started", open_gate="all-started"),),
        hang_bound=hang_bound(ctx),
    )


def verify_l4(ctx: CheckContext, result: ScenarioResult, setter: str) -> None:
    fired = first(result, "set-event", setter)
    if fired is None:
        ctx.fail(expected=f"{setter} sets the event", observed="it never got to set it", result=result)
    bound = ctx.bound(0.5)
    returned = first(result, "set-returned", setter)
    set_at = returned.t if returned is not None else fired.t
    lags = {}
    turns = {}
    for name in bundle_names(result.scenario.n_runners):
        if name == setter:
            continue
        seen = [r for r in records(result, "saw-stop", name) if r.t >= fired.t]
        if not seen:
            ctx.fail(
                expected=f"event.set() in {setter} is seen by every other bundle",
                observed=f"{name} never saw it ({describe_outcome(result)})",
                result=result,
            )
        lags[name] = seen[0].t - fired.t
        turns[name] = sum(1 for t in seen[0].data.get("ticks", ()) if set_at < t < seen[0].t)
    late = [name for name in lags if lags[name] > bound and turns[name] >= _L4_EVIDENCE_TURNS]
    worst = max(late or lags, key=lambda name: lags[name])
    measured = f"{lags[worst]:.3f} s ({worst}) against a bound of {bound:.3f} s"
    if late:
        ctx.fail(
            expected=f"event.set() in {setter} is seen by every other bundle, in any process, within 0.5 s",
            observed=", ".join(
                f"{name} after {lag:.3f} s ({turns[name]} turns of its loop after the set)"
                for name, lag in lags.items()
            ),
            figure=measured,
            result=result,
        )
    if lags[worst] > bound:  # past the bound, but its loop hardly ran: the machine held it up
        ctx.measure(
            f"{measured}, held up by the machine: {worst} took {turns[worst]} turns of its loop after "
            f"the set (fewer than the {_L4_EVIDENCE_TURNS} that show a watcher running without seeing it)"
        )


@contract("L4")
def check_stop_propagates(ctx: CheckContext) -> None:
    """L4: a set() in any bundle is seen by every other bundle (is_set() and wait()) within 0.5 s."""
    setter = "algorithm" if ctx.situation == "set-by-algorithm" else "runner 0"
    verify_l4(ctx, ctx.run(scenario_l4(ctx, setter)), setter)


# -- L5 ------------------------------------------------------------------------------------------------


@contract("L5")
def check_event_protocol(ctx: CheckContext) -> None:
    """L5: wait(timeout) False on timeout and True once set; set() idempotent; clear() works; asyncio-safe."""
    scenario = Scenario(
        "L5",
        n_runners=1,
        algorithm=Script((Step("event_protocol"),)),
        runners=(POLL,),
        hang_bound=hang_bound(ctx),
    )
    result = ctx.run(scenario)
    report = first(result, "event-protocol", "algorithm")
    if report is None:
        ctx.fail(
            expected="the algorithm exercises the event protocol",
            observed=f"it did not finish ({describe_outcome(result)})",
            result=result,
        )
    broken = [f for f in report.data.get("findings", []) if not f.get("ok")]
    if broken:
        ctx.fail(
            expected="; ".join(f["check"] for f in broken),
            observed="; ".join(f["observed"] for f in broken),
            result=result,
        )
    expect_returned(ctx, result, "the algorithm returned after the protocol checks")


# -- L6 ------------------------------------------------------------------------------------------------


@contract("L6")
def check_cancel_after_grace(ctx: CheckContext) -> None:
    """L6: a bundle ignoring the event is cancelled after the grace period, its finally runs, execute()
    returns within grace + 2 s."""
    declared = grace(ctx)
    stubborn = Script((Step("ignore_event", ctx.bound(60.0) + declared),))
    scenario = Scenario(
        "L6",
        n_runners=2,
        algorithm=_SHORT,
        runners=(stubborn, POLL),
        faults=(ALL_STARTED,),
        hang_bound=hang_bound(ctx, ctx.bound(60.0)),
    )
    result = ctx.run(scenario)
    if result.outcome in ("hang", "crashed"):
        ctx.fail(
            expected=f"the stubborn runner is cancelled after the {declared:g} s grace",
            observed=describe_outcome(result),
            result=result,
        )
    if first(result, "cancelled", "runner 0") is None:
        ctx.fail(
            expected="the runner ignoring the event receives CancelledError after the grace period",
            observed="it was never cancelled",
            result=result,
        )
    if first(result, "finally-ran", "runner 0") is None:
        ctx.fail(expected="its finally blocks run", observed="no finally-ran record", result=result)
    expect_returned(ctx, result, "cancelling a bundle after the grace period is not an error")
    stop = first(result, "end", "algorithm")
    end = first(result, "execute-end", "kit")
    assert stop is not None and end is not None
    took = end.t - stop.t
    bound = declared + ctx.bound(2.0)
    if took > bound:
        ctx.fail(
            expected=f"execute() returns within grace ({declared:g} s) + 2 s of the stop",
            observed=f"it returned {took:.3f} s after the algorithm returned",
            figure=f"{took:.3f} s against a bound of {bound:.3f} s",
            result=result,
        )
    cancelled = first(result, "cancelled", "runner 0")
    assert cancelled is not None
    if cancelled.t - stop.t < declared * 0.5:
        ctx.fail(
            expected=f"the runner is cancelled after the declared grace period ({declared:g} s)",
            observed=f"it was cancelled {cancelled.t - stop.t:.3f} s after the stop",
            result=result,
        )


# -- L7 ------------------------------------------------------------------------------------------------


@contract("L7")
def check_blocking_bundle(ctx: CheckContext) -> None:
    """L7: a bundle stuck in blocking code does not hang execute(): a process strategy escalates and
    returns within its bounds; a thread strategy returns within its join bound, names the straggler,
    and is reported as a declared limitation."""
    caps = ctx.capabilities
    declared = grace(ctx)
    can_cancel = not ctx.limited  # a strategy that cannot cancel blocking code has its own, looser bound
    join = float(caps.get("join_seconds", 5.0))
    terminate = float(caps.get("terminate_seconds", 2.0))
    stuck_for = ctx.bound(30.0) + declared + join + 2 * terminate
    scenario = Scenario(
        "L7",
        n_runners=2,
        algorithm=_SHORT,
        runners=(Script((Step("block", stuck_for),)), POLL),
        faults=(ALL_STARTED,),
        hang_bound=hang_bound(ctx, stuck_for),
        settle=0.5,
    )
    result = ctx.run(scenario)
    if result.outcome in ("hang", "crashed"):
        ctx.fail(
            expected="a bundle stuck in blocking code does not hang execute()",
            observed=describe_outcome(result),
            result=result,
        )
    stop = first(result, "end", "algorithm")
    end = first(result, "execute-end", "kit")
    assert stop is not None and end is not None
    took = end.t - stop.t
    if can_cancel:
        bound = declared + 2 * terminate + ctx.bound(2.0)
        label = f"grace {declared:g} s + SIGINT/SIGTERM escalation 2 x {terminate:g} s + 2 s"
    else:
        bound = declared + join + ctx.bound(2.0)
        label = f"grace {declared:g} s + join {join:g} s + 2 s"
    if took > bound:
        ctx.fail(
            expected=f"execute() returns within its declared bounds ({label})",
            observed=f"it returned {took:.3f} s after the algorithm returned",
            figure=f"{took:.3f} s against a bound of {bound:.3f} s",
            result=result,
        )
    others = [r for r in records(result, "end", "runner 1")]
    if not others or others[0].detail != "returned":
        ctx.fail(
            expected="the stuck bundle does not break the others: runner 1 returns normally",
            observed=f"runner 1 ended with {others[0].detail if others else 'nothing'}",
            result=result,
        )
    if can_cancel:
        leaked = [*result.leaks.processes, *result.leaks.zombies]
        if leaked:
            ctx.fail(
                expected="the escalation leaves no process behind",
                observed="; ".join(leaked),
                result=result,
            )
        return
    expect_returned(ctx, result, "a straggler left behind is logged, not raised")
    unblocked = first(result, "unblocked", "runner 0")
    if unblocked is not None and unblocked.t <= end.t:
        # Measured from the algorithm's end the bound can look met when the blocked bundle also held up
        # the algorithm (one shared loop): execute() really waited for the blocking call to finish.
        start_record = first(result, "execute-start", "kit")
        took_all = end.t - (start_record.t if start_record is not None else 0.0)
        ctx.fail(
            expected=f"execute() returns within its join bound ({label}), leaving the blocked bundle behind",
            observed=f"execute() returned only after runner 0's blocking call ended ({took_all:.3f} s after "
            "it started)",
            figure=f"{took_all:.3f} s against a bound of {bound:.3f} s",
            result=result,
        )
    start = first(result, "start", "runner 0")
    assert start is not None
    straggler = start.thread
    if straggler not in result.stderr and "runner 0" not in result.stderr:
        ctx.fail(
            expected=f"the straggler is logged by name ({straggler!r})",
            observed="no log line names it",
            details=f"  stderr of the sandbox:\n{result.stderr[-2000:]}",
            result=result,
        )
    ctx.declare_limitation(
        f"a bundle blocked in sync code cannot be stopped; execute() returned {took:.2f} s after the stop "
        f"(bound {bound:.2f} s) leaving thread {straggler!r} behind",
    )
