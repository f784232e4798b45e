"""Checks for section F (faults in process strategies): F1-F4, n/a when ``uses_processes`` is False.

F1 kills a worker with SIGKILL (its pid read from the journal), F2 occupies the listen address the
strategy is configured with, F3 replays L1-L4 and E1 under a given start method, F4 kills the process
that called ``execute()`` and watches how long its workers outlive it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import re
import socket
from typing import Any

from conformance.checks import CheckContext, contract
from conformance.contracts import exceptions, lifecycle
from conformance.contracts._engine import (
    POLL,
    bundle_names,
    describe_outcome,
    first,
    hang_bound,
    leak_lines,
    records,
    runners_stopped,
)
from conformance.scenarios import Fault, Scenario, Script, Step

__all__: list[str] = []

_LEAKS = ("threads", "processes", "zombies", "fds", "sockets", "ipc", "temp_files")


@contract("F1")
def check_worker_killed(ctx: CheckContext) -> None:
    """F1: a worker killed with SIGKILL mid-run: execute() raises an error naming the worker and its exit
    status within 2 s; the others stop; nothing is left behind."""
    victim = ctx.n_runners - 1
    scenario = Scenario(
        "F1",
        n_runners=ctx.n_runners,
        algorithm=POLL,
        runners=(POLL,),
        faults=(Fault("sigkill-worker", "all started", worker=victim),),
        hang_bound=hang_bound(ctx),
    )
    result = ctx.run(scenario)
    fault = first(result, "fault", "kit")
    if fault is None:
        ctx.fail(expected="the worker is killed mid-run", observed=describe_outcome(result), result=result)
    pid = fault.data.get("pid")
    if result.outcome != "raised" or result.exception is None:
        ctx.fail(
            expected=f"execute() raises an error naming runner {victim} (pid {pid}) and its exit status",
            observed=describe_outcome(result),
            result=result,
        )
    text = f"{result.exception.message}\n" + "\n".join(result.exception.notes)
    names_worker = str(pid) in text or re.search(rf"(worker|runner)\D{{0,12}}\b{victim}\b", text, re.I)
    names_status = re.search(r"-9\b|SIGKILL|signal 9|\bkilled\b", text, re.I)
    if not (names_worker and names_status):
        ctx.fail(
            expected=f"the error names the worker (runner {victim} or pid {pid}) and its exit status "
            "(SIGKILL/-9)",
            observed=f"{result.exception.type_name}: {result.exception.message}",
            result=result,
        )
    end = first(result, "execute-end", "kit")
    assert end is not None
    took = end.t - fault.t
    bound = ctx.bound(2.0)
    if took > bound:
        ctx.fail(
            expected="execute() raises within 2 s of the worker's death",
            observed=f"it raised {took:.3f} s after the SIGKILL",
            figure=f"{took:.3f} s against a bound of {bound:.3f} s",
            result=result,
        )
    others = [name for name in bundle_names(ctx.n_runners) if name != f"runner {victim}"]
    runners_stopped(ctx, result, others)
    lines = leak_lines(result.leaks, _LEAKS) + list(result.measurements.get("survivors") or [])
    if lines:
        ctx.fail(
            expected="nothing is left behind after a worker died",
            observed=f"{len(lines)} leftovers",
            details="\n".join(f"  - {line}" for line in lines),
            result=result,
        )


def _listen_parameters(strategy_class: Any) -> tuple[str | None, str | None, str | None]:
    """(host parameter, port parameter, "host:port" address parameter) the constructor accepts."""
    try:
        parameters = inspect.signature(strategy_class).parameters
    except (TypeError, ValueError):
        return None, None, None
    names = list(parameters)
    port = next((n for n in names if n == "port" or n.endswith("_port")), None)
    host = next((n for n in names if n == "host" or n.endswith("_host")), None)
    address = next((n for n in names if n in ("address", "listen", "bind", "listen_address")), None)
    return host, port, address


@contract("F2")
def check_port_in_use(ctx: CheckContext) -> None:
    """F2: a listen address already taken gives a clear error naming host and port, before any worker is
    spawned, with nothing left behind."""
    from conformance.target import resolve_strategy_class

    host_param, port_param, address_param = _listen_parameters(resolve_strategy_class(ctx.target.strategy))
    if port_param is None and address_param is None:
        # Known only once the constructor is inspected (no capability declares a listen address).
        ctx.not_applicable(
            "uses_processes",
            "the strategy takes no listen address (no port/host or address constructor parameter)",
        )
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        host, port = taken.getsockname()
        options = dict(ctx.target.options)
        if port_param is not None:
            options[port_param] = port
            if host_param is not None:
                options[host_param] = host
        else:
            assert address_param is not None
            options[address_param] = f"{host}:{port}"
        target = dataclasses.replace(ctx.target, options=options)
        # The algorithm returns at once: a strategy that wrongly goes ahead is seen returning, not hanging.
        scenario = Scenario(
            "F2",
            n_runners=2,
            algorithm=Script((Step("sleep", 0.05),)),
            runners=(POLL,),
            hang_bound=hang_bound(ctx),
        )
        result = ctx.run(scenario, target=target)
    if result.outcome != "raised" or result.exception is None:
        ctx.fail(
            expected=f"execute() raises a clear error: {host}:{port} is in use",
            observed=describe_outcome(result),
            result=result,
        )
    text = f"{result.exception.message}\n" + "\n".join(result.exception.notes)
    if str(port) not in text or host not in text:
        ctx.fail(
            expected=f"the error names host {host} and port {port}",
            observed=f"{result.exception.type_name}: {result.exception.message}",
            result=result,
        )
    started = records(result, "start")
    if started:
        ctx.fail(
            expected="the error comes before any worker is spawned",
            observed=f"{', '.join(sorted({r.bundle for r in started}))} started first",
            result=result,
        )
    lines = leak_lines(result.leaks, _LEAKS) + list(result.measurements.get("survivors") or [])
    if lines:
        ctx.fail(
            expected="nothing is left behind",
            observed=f"{len(lines)} leftovers",
            details="\n".join(f"  - {line}" for line in lines),
            result=result,
        )


def _accepts(strategy_class: Any, parameter: str) -> bool:
    """Whether the strategy's constructor takes ``parameter`` by name."""
    try:
        parameters = inspect.signature(strategy_class).parameters
    except (TypeError, ValueError):
        return False
    return parameter in parameters


@contract("F3")
def check_start_methods(ctx: CheckContext) -> None:
    """F3: L1-L4 and E1 pass under the start method of the situation (planned n/a where the strategy
    does not declare it or the platform lacks it: the catalogue entry requires it per situation).

    L1 and L2 share one run (their scenarios are the same); L4 runs with a runner as the setter, the
    case where the stop has to cross from a worker to the others.
    """
    method = ctx.situation
    from conformance.target import resolve_strategy_class

    options = dict(ctx.target.options)
    if _accepts(resolve_strategy_class(ctx.target.strategy), "start_method"):
        # A strategy with its own start_method option ignores the process-wide default: name it too.
        options["start_method"] = method
    target = dataclasses.replace(ctx.target, start_method=method, options=options)
    ctx.n_runners = 2
    result = ctx.run(
        dataclasses.replace(lifecycle.scenario_l1(ctx), name=f"F3-{method}-L1-L2"), target=target
    )
    lifecycle.verify_l1(ctx, result)
    lifecycle.verify_l2(ctx, result)
    result = ctx.run(dataclasses.replace(lifecycle.scenario_l3(ctx), name=f"F3-{method}-L3"), target=target)
    lifecycle.verify_l3(ctx, result)
    scenario = dataclasses.replace(lifecycle.scenario_l4(ctx, "runner 0"), name=f"F3-{method}-L4")
    lifecycle.verify_l4(ctx, ctx.run(scenario, target=target), "runner 0")
    message = f"F3 {method} E1 failure"
    scenario = dataclasses.replace(
        exceptions.scenario_error(ctx, "algorithm", message), name=f"F3-{method}-E1"
    )
    exceptions.verify_error(ctx, ctx.run(scenario, target=target), "algorithm", message)


@contract("F4")
def check_parent_death(ctx: CheckContext) -> None:
    """F4: if the process calling execute() dies (SIGKILL), no worker outlives it by more than 2 s."""
    scenario = Scenario(
        "F4",
        n_runners=2,
        algorithm=POLL,
        runners=(POLL,),
        faults=(Fault("sigkill-parent", "all started"),),
        hang_bound=hang_bound(ctx),
    )
    result = ctx.run(scenario)
    if first(result, "fault", "kit") is None:
        ctx.fail(expected="the parent is killed mid-run", observed=describe_outcome(result), result=result)
    orphans: dict[str, float | None] = result.measurements.get("orphans") or {}
    bound = ctx.bound(2.0)
    late = {pid: took for pid, took in orphans.items() if took is None or took > bound}
    if late:
        shown = ", ".join(
            f"pid {pid} " + ("still alive at the end of the watch" if took is None else f"after {took:.3f} s")
            for pid, took in late.items()
        )
        worst = max((took for took in late.values() if took is not None), default=None)
        ctx.fail(
            expected="no worker outlives the killed parent by more than 2 s",
            observed=shown,
            figure=(f"{worst:.3f} s" if worst is not None else "unbounded")
            + f" against a bound of {bound:.3f} s",
            result=result,
        )
