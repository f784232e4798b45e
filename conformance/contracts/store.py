"""Checks for section S (store interaction): S1 exactly-once, S2 writes-visible, S3 caller-store-updated,
S4 store-fault, S5 slow-store, S6 unmanaged-store.

Every scenario runs in the sandbox with the kit's scripted bundles: the algorithm enqueues rollouts and
waits for them, runners claim and complete them (``work``), and the journal records who did what. Store
faults and latency go through the bundles' store proxy (``StoreFault``); S3 and S6 also read the store the
sandbox passed to ``execute()`` (``Scenario.inspect_caller_store``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from typing import Any

from conformance.checks import CheckContext, contract
from conformance.scenarios import JournalRecord, Scenario, ScenarioResult, Script, Step, StoreFault
from conformance.target import resolve_strategy_class

__all__: list[str] = []

_ROLLOUTS = 24  # enough for several runners to contend on every dequeue


def _records(result: ScenarioResult, kind: str, bundle: str | None = None) -> list[JournalRecord]:
    return [r for r in result.journal if r.kind == kind and (bundle is None or r.bundle == bundle)]


def _enqueued(result: ScenarioResult) -> list[str]:
    return [rid for record in _records(result, "enqueued", "algorithm") for rid in record.data.get("ids", [])]


def _caller_store(result: ScenarioResult) -> dict[str, Any]:
    """What the sandbox reported of the store it passed to execute() (``Scenario.inspect_caller_store``)."""
    described = result.caller_store or result.measurements.get("caller_store") or {}
    if not described:
        ready = _records(result, "sandbox-ready", "kit")
        if ready and "store_id" in ready[0].data:  # identity only, no snapshot: enough for S6
            data = ready[0].data
            described = {"type": data.get("store_type"), "id": data["store_id"], "pid": ready[0].pid}
    return dict(described)


def _describe_outcome(result: ScenarioResult) -> str:
    if result.outcome == "raised" and result.exception is not None:
        return f"execute() raised {result.exception.type_name}: {result.exception.message}"
    if result.outcome == "hang":
        return f"execute() hung (killed after the {result.scenario.hang_bound:g} s hang bound)"
    if result.outcome == "crashed":
        return f"the scenario process crashed (exit status {result.exit_status})"
    return f"execute() {result.outcome}"


def _expect_returned(ctx: CheckContext, result: ScenarioResult, what: str) -> None:
    if result.outcome != "returned":
        ctx.fail(
            expected=f"execute() returns None ({what})", observed=_describe_outcome(result), result=result
        )


def _producer_consumer(
    ctx: CheckContext, name: str, *, count: int = _ROLLOUTS, then: Iterable[Step] = ()
) -> Scenario:
    """The algorithm enqueues ``count`` rollouts, waits for all of them, then runs ``then``; runners work."""
    wait = Step("store", args={"op": "wait_all", "timeout": ctx.bound(20.0)})
    algorithm = Script((Step("store", args={"op": "enqueue", "count": count}), wait, *then))
    return Scenario(
        name=name,
        n_runners=ctx.n_runners,
        algorithm=algorithm,
        runners=(Script((Step("store", args={"op": "work"}),)),),
        hang_bound=ctx.bound(60.0),
    )


def _check_all_waited(ctx: CheckContext, result: ScenarioResult, count: int) -> None:
    waited = _records(result, "waited", "algorithm")
    if not waited:
        ctx.fail(
            expected="the algorithm's wait_for_rollouts returns", observed="no 'waited' record", result=result
        )
    statuses = waited[-1].data.get("statuses", {})
    done = [rid for rid, status in statuses.items() if status == "succeeded"]
    if len(done) != count:
        ctx.fail(
            expected=f"wait_for_rollouts, called by the algorithm while it runs, sees all {count} "
            "rollouts succeeded",
            observed=f"it saw {len(done)} succeeded of {count} ({dict(Counter(statuses.values()))})",
            figure=f"{len(done)}/{count} rollouts visible as succeeded",
            result=result,
        )


@contract("S1")
def check_exactly_once(ctx: CheckContext) -> None:
    """S1: every enqueued rollout is completed exactly once, over all runners, under concurrency."""
    result = ctx.run(_producer_consumer(ctx, "S1"))
    _expect_returned(ctx, result, "all rollouts processed")
    enqueued = _enqueued(result)
    if len(enqueued) != _ROLLOUTS:
        ctx.fail(
            expected=f"the algorithm enqueues {_ROLLOUTS} rollouts",
            observed=f"{len(enqueued)} enqueued",
            result=result,
        )
    completions = Counter(record.detail for record in _records(result, "completed"))
    lost = [rid for rid in enqueued if completions[rid] == 0]
    duplicated = {rid: n for rid, n in completions.items() if n > 1}
    foreign = [rid for rid in completions if rid not in set(enqueued)]
    if lost or duplicated or foreign:
        by_runner = Counter(record.bundle for record in _records(result, "completed"))
        ctx.fail(
            expected="each enqueued rollout dequeued and completed exactly once across all runners",
            observed=f"lost {lost[:5]}{'...' if len(lost) > 5 else ''} ({len(lost)}), "
            f"duplicated {dict(list(duplicated.items())[:5])} ({len(duplicated)}), "
            f"never enqueued {foreign[:5]}",
            figure=f"{sum(completions.values())} completions of {len(enqueued)} rollouts; "
            f"per runner {dict(by_runner)}",
            result=result,
        )
    _check_all_waited(ctx, result, _ROLLOUTS)


@contract("S2")
def check_writes_visible(ctx: CheckContext) -> None:
    """S2: runners' status updates and spans are visible to the running algorithm (wait_for_rollouts)."""
    count = 8
    result = ctx.run(_producer_consumer(ctx, "S2", count=count, then=(Step("store", args={"op": "query"}),)))
    _expect_returned(ctx, result, "the algorithm saw every rollout complete")
    _check_all_waited(ctx, result, count)
    queried = _records(result, "queried", "algorithm")
    statuses = queried[-1].data.get("statuses", []) if queried else []
    if Counter(statuses).get("succeeded", 0) < count:
        ctx.fail(
            expected=f"query_rollouts from the algorithm shows the {count} rollouts succeeded",
            observed=f"statuses {dict(Counter(statuses))}",
            result=result,
        )


@contract("S3")
def check_caller_store_updated(ctx: CheckContext) -> None:
    """S3: with ``shares_caller_store``, the store passed to execute() holds every write afterwards."""
    count = 6
    scenario = dataclasses.replace(
        _producer_consumer(ctx, "S3", count=count, then=(Step("store", args={"op": "add_resources"}),)),
        inspect_caller_store=True,
    )
    result = ctx.run(scenario)
    _expect_returned(ctx, result, "the caller's store then inspected")
    caller = _caller_store(result)
    if "snapshot" not in caller and "error" not in caller:
        raise RuntimeError(
            "kit error: the sandbox did not describe the caller's store (inspect_caller_store)"
        )
    if "error" in caller:
        ctx.fail(
            expected="the store passed to execute() is readable after execute() returns",
            observed=f"reading it failed: {caller['error']}",
            result=result,
        )
    held = {r["rollout_id"]: r for r in caller["snapshot"]["rollouts"]}
    problems = []
    for rid in _enqueued(result):
        entry = held.get(rid)
        if entry is None:
            problems.append(f"{rid} missing")
        elif entry["status"] != "succeeded":
            problems.append(f"{rid} status {entry['status']}")
        elif entry["spans"] < 1:
            problems.append(f"{rid} has no span")
    published = [r.detail for r in _records(result, "resources", "algorithm")]
    if published and caller["snapshot"]["latest_resources_id"] != published[-1]:
        problems.append(
            f"latest resources {caller['snapshot']['latest_resources_id']!r}, "
            f"the algorithm published {published[-1]!r}"
        )
    if problems:
        ctx.fail(
            expected=f"the caller's store ({caller['type']}) holds every rollout succeeded with its spans, "
            "and the published resources",
            observed="; ".join(problems[:8]) + (f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""),
            figure=f"{len(held)} rollouts in the caller's store",
            result=result,
        )


_FAULT_TYPE = "ConnectionError"


@contract("S4")
def check_store_fault(ctx: CheckContext) -> None:
    """S4: a store call that raises in a bundle behaves as E1/E2: everything stops, the error is raised."""
    if ctx.situation == "in-algorithm":
        bundle, method = "algorithm", "enqueue_rollout"
        algorithm = Script((Step("store", args={"op": "enqueue", "count": 1}), Step("poll", seconds=0)))
    else:
        bundle, method = "runner 0", "dequeue_rollout"
        algorithm = Script((Step("store", args={"op": "enqueue", "count": 4}), Step("poll", seconds=0)))
    scenario = Scenario(
        name=f"S4-{ctx.situation}",
        n_runners=ctx.n_runners,
        algorithm=algorithm,
        runners=(Script((Step("store", args={"op": "work"}),)),),
        store_faults=(StoreFault(bundle=bundle, method=method, call=1, raises=_FAULT_TYPE),),
        hang_bound=ctx.bound(30.0 + float(ctx.capabilities["grace_seconds"])),
    )
    result = ctx.run(scenario)
    injected = _records(result, "store-fault", bundle)
    if not injected:
        ctx.fail(
            expected=f"{bundle} calls store.{method} (fault injected)",
            observed="the call never happened",
            result=result,
        )
    exception = result.exception
    if result.outcome != "raised" or exception is None:
        ctx.fail(
            expected=f"execute() raises the injected {_FAULT_TYPE} from store.{method} in {bundle}",
            observed=_describe_outcome(result),
            result=result,
        )
    if exception.type_name.rsplit(".", 1)[-1] != _FAULT_TYPE or f"store.{method}" not in exception.message:
        ctx.fail(
            expected=f"{_FAULT_TYPE}('injected fault in store.{method} call 1') re-raised as is",
            observed=f"{exception.type_name}: {exception.message}",
            result=result,
        )
    started = {r.bundle for r in _records(result, "start")}
    ended = {r.bundle for r in _records(result, "end")}
    still = sorted(started - ended)
    if still:
        ctx.fail(
            expected="every bundle that started has ended",
            observed=f"no end for {', '.join(still)}",
            result=result,
        )


@contract("S5")
def check_slow_store(ctx: CheckContext) -> None:
    """S5: store latency (seeded, at chosen calls of every bundle) causes no deadlock; bounds still hold."""
    count = 12
    faults = [
        StoreFault(bundle="algorithm", method="enqueue_rollout", call=1, delay=0.2),
        StoreFault(bundle="algorithm", method="wait_for_rollouts", call=1, delay=0.3),
    ]
    for worker in range(ctx.n_runners):
        for method, calls in (("dequeue_rollout", 40), ("update_attempt", 4), ("add_span", 4)):
            for call in sorted(ctx.random.sample(range(1, calls + 1), 2)):
                faults.append(
                    StoreFault(
                        bundle=f"runner {worker}",
                        method=method,
                        call=call,
                        delay=round(ctx.random.uniform(0.05, 0.3), 3),
                    )
                )
    max_delay = max(fault.delay for fault in faults)
    scenario = dataclasses.replace(_producer_consumer(ctx, "S5", count=count), store_faults=tuple(faults))
    result = ctx.run(scenario)
    _expect_returned(ctx, result, f"with {len(faults)} slow store calls")
    _check_all_waited(ctx, result, count)
    algorithm_end = max((r.t for r in _records(result, "end", "algorithm")), default=None)
    last_end = max((r.t for r in _records(result, "end")), default=None)
    if algorithm_end is not None and last_end is not None:
        bound = ctx.bound(1.0) + max_delay
        if last_end - algorithm_end > bound:
            ctx.fail(
                expected="runners stop within 1 s (plus one injected delay) of the algorithm's return",
                observed="the last bundle ended late",
                figure=f"{last_end - algorithm_end:.3f} s > bound {bound:.3f} s",
                result=result,
            )


@contract("S6")
def check_unmanaged_store(ctx: CheckContext) -> None:
    """S6: with ``managed_store=False`` bundles receive the caller's store object (the object itself in
    the caller's process, an object of the caller's store type elsewhere), not a wrapper."""
    options = {**ctx.target.options, "n_runners": ctx.n_runners, "managed_store": False}
    try:  # construction is side-effect free (G1 checks it); a refusal here is the contract's failure
        resolve_strategy_class(ctx.target.strategy)(**options)
    except (TypeError, ValueError) as error:
        ctx.fail(
            expected="the strategy accepts managed_store=False (supports_unmanaged_store is declared True "
            "or left at its strictest default)",
            observed=f"construction with managed_store=False raised {type(error).__name__}: {error}",
        )
    target = dataclasses.replace(ctx.target, options=options)
    scenario = dataclasses.replace(_producer_consumer(ctx, "S6", count=2), inspect_caller_store=True)
    result = ctx.run(scenario, target=target)
    _expect_returned(ctx, result, "with managed_store=False")
    caller = _caller_store(result)
    if "id" not in caller:
        raise RuntimeError(
            "kit error: the sandbox did not describe the caller's store (inspect_caller_store)"
        )
    wrong = []
    for record in _records(result, "start"):
        store_type, store_id = record.data.get("store_type"), record.data.get("store_id")
        if record.pid == caller["pid"] and store_id != caller["id"]:
            wrong.append(
                f"{record.bundle} (same process) got {store_type} id={store_id}, not the caller's object"
            )
        elif store_type != caller["type"]:
            wrong.append(f"{record.bundle} (pid {record.pid}) got {store_type}")
    if wrong:
        ctx.fail(
            expected=f"every bundle receives the caller's store object ({caller['type']} id={caller['id']} "
            f"in pid {caller['pid']})",
            observed="; ".join(wrong),
            result=result,
        )
