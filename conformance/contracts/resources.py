"""Checks for section R (resources and leaks): R1-R7.

R1-R5 and R7 read one observation per ending (after a normal return, after an error, after a SIGINT):
the sandbox's before/after snapshots with the settle window, the group's stderr and the processes that
outlived the scenario. The observation is the same for all six contracts, so it is made once per
(target, ending) in this process and shared. R6 repeats ``execute()`` 20 times in one process.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from conformance.checks import CheckContext, contract
from conformance.contracts._engine import describe_outcome, hang_bound, records, start_seconds
from conformance.scenarios import Fault, Scenario, ScenarioResult, Script, Step

__all__: list[str] = []

_ROLLOUTS = 4
_REPEATS = 20
_RSS_TOLERANCE = 32 * 1024 * 1024  # bytes of RSS growth over all repeats (allocator and import noise)
_cache: dict[tuple[Any, ...], ScenarioResult] = {}
_cache_lock = threading.Lock()


def _ending_scenario(ctx: CheckContext, ending: str) -> Scenario:
    work = (
        Step("store", args={"op": "enqueue", "count": _ROLLOUTS}),
        Step("store", args={"op": "wait_all", "timeout": ctx.bound(20.0)}),
        Step("probe"),
    )
    faults: tuple[Fault, ...] = ()
    repeat = 1
    if ending == "after-return":
        tail: tuple[Step, ...] = ()
        repeat = 2  # R3: a second execute() in the same process (same ports, if fixed) must work
    elif ending == "after-error":
        tail = (Step("raise", args={"type": "ScriptedError", "message": "R after-error"}),)
    else:
        tail = (Step("poll"),)
        faults = (Fault("sigint-main", "algorithm probe"),)
    return Scenario(
        f"R-{ending}",
        n_runners=2,
        algorithm=Script(work + tail),
        runners=(Script((Step("store", args={"op": "work"}),)),),
        faults=faults,
        repeat=repeat,
        hang_bound=hang_bound(ctx),
    )


def _observe(ctx: CheckContext) -> ScenarioResult:
    key = (repr(ctx.target), ctx.situation, ctx.timeout_scale, ctx.seed)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        ctx.results.append(cached)
        return cached
    result = ctx.run(_ending_scenario(ctx, ctx.situation))
    expected = {"after-return": "returned", "after-error": "raised", "after-keyboard-interrupt": "raised"}
    if result.outcome != expected[ctx.situation]:
        ctx.fail(
            expected=f"the {ctx.situation} scenario ends with execute() {expected[ctx.situation]}",
            observed=describe_outcome(result),
            result=result,
        )
    with _cache_lock:
        _cache[key] = result
    return result


def _fail_with(ctx: CheckContext, result: ScenarioResult, expected: str, entries: list[str]) -> None:
    if entries:
        ctx.fail(
            expected=expected,
            observed=f"{len(entries)} left behind {ctx.situation.replace('-', ' ')}",
            details="\n".join(f"  - {entry}" for entry in entries),
            result=result,
        )


@contract("R1")
def check_no_thread_leak(ctx: CheckContext) -> None:
    """R1: no thread started during execute() is alive after it returns (no bundle here blocks in sync
    code, so L7's declared stragglers cannot occur: every leftover thread is a leak)."""
    result = _observe(ctx)
    _fail_with(ctx, result, "no thread started by execute() is still alive", list(result.leaks.threads))


@contract("R2")
def check_no_process_leak(ctx: CheckContext) -> None:
    """R2: no child process is alive and none is left a zombie."""
    result = _observe(ctx)
    entries = [*result.leaks.processes, *result.leaks.zombies]
    _fail_with(ctx, result, "no child process alive, none left a zombie", entries)


def _rebind(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as any server would
        try:
            probe.bind((host, port))
            probe.listen(1)
        except OSError as error:
            return f"{host}:{port} cannot be bound again: {error}"
    return None


@contract("R3")
def check_no_fd_or_socket_leak(ctx: CheckContext) -> None:
    """R3: fds and sockets back to baseline; ports listened on can be bound again; a second run works."""
    result = _observe(ctx)
    _fail_with(
        ctx, result, "open fds and sockets return to the baseline", [*result.leaks.fds, *result.leaks.sockets]
    )
    listened = {
        (entry["host"], int(entry["port"]))
        for record in records(result, "probe")
        for entry in record.data.get("listening", [])
    }
    problems = [problem for host, port in sorted(listened) if (problem := _rebind(host, port))]
    _fail_with(ctx, result, "every port the strategy listened on can be bound again at once", problems)
    if ctx.situation == "after-return" and len(result.durations) < 2:
        ctx.fail(
            expected="a second execute() in the same process succeeds",
            observed=f"only {len(result.durations)} run(s) completed ({describe_outcome(result)})",
            result=result,
        )


@contract("R4")
def check_no_ipc_leak(ctx: CheckContext) -> None:
    """R4: no leaked semaphores or shared memory (no resource_tracker warnings), no temp files left."""
    result = _observe(ctx)
    entries = [*result.leaks.ipc, *(f"temp file {path}" for path in result.leaks.temp_files)]
    _fail_with(ctx, result, "no leaked semaphores, shared memory or temp files", entries)


@contract("R5")
def check_no_asyncio_leak(ctx: CheckContext) -> None:
    """R5: no pending-task-destroyed messages, never-awaited coroutines, ResourceWarnings, unraisables."""
    result = _observe(ctx)
    entries = [*result.leaks.asyncio, *result.leaks.warnings]
    _fail_with(ctx, result, "no asyncio leftovers, ResourceWarnings or unraisable exceptions", entries)


@contract("R7")
def check_caller_state_restored(ctx: CheckContext) -> None:
    """R7: signal handlers, start method, current event loop and logging configuration as before."""
    result = _observe(ctx)
    _fail_with(
        ctx,
        result,
        "the caller's process state is as it was before execute()",
        list(result.leaks.caller_state),
    )


@contract("R6")
def check_repeat_stable(ctx: CheckContext) -> None:
    """R6: 20 consecutive execute() calls in one process: no growth in threads, fds, children; RSS bounded."""
    scenario = Scenario(
        "R6",
        n_runners=2,
        algorithm=Script(
            (
                Step("store", args={"op": "enqueue", "count": 2}),
                Step("store", args={"op": "wait_all", "timeout": ctx.bound(20.0)}),
            )
        ),
        runners=(Script((Step("store", args={"op": "work"}),)),),
        repeat=_REPEATS,
        # Each run gets 3 s and the strategy's declared start-up allowance (a cluster placing its
        # runners takes seconds every time); the first run's allowance is in hang_bound already.
        hang_bound=hang_bound(ctx, ctx.bound(3.0) * _REPEATS + start_seconds(ctx) * (_REPEATS - 1)),
    )
    result = ctx.run(scenario)
    if result.outcome != "returned" or len(result.durations) != _REPEATS:
        ctx.fail(
            expected=f"{_REPEATS} consecutive execute() calls return",
            observed=f"run {len(result.durations)} ended: {describe_outcome(result)}",
            result=result,
        )
    counts: list[dict[str, int]] = result.measurements.get("repeat_counts") or []
    if len(counts) < 2:
        ctx.fail(expected="per-run resource counts", observed=f"{len(counts)} recorded", result=result)
    warm, last = counts[0], counts[-1]
    grew = [
        f"{key}: {warm[key]} after run 1, {last[key]} after run {len(counts)}"
        for key in ("threads", "fds", "children")
        if last[key] > warm[key]
    ]
    series = "; ".join(
        f"{key} " + ",".join(str(c[key]) for c in counts) for key in ("threads", "fds", "children")
    )
    if grew:
        ctx.fail(
            expected="no growth in threads, fds or children across repeated execute() calls",
            observed="; ".join(grew),
            details=f"  per run: {series}",
            result=result,
        )
    growth = last["rss"] - warm["rss"]
    if growth > _RSS_TOLERANCE:
        ctx.fail(
            expected=f"RSS growth over {_REPEATS} runs under {_RSS_TOLERANCE // 2**20} MiB",
            observed=f"RSS grew by {growth / 2**20:.1f} MiB from run 1 to run {len(counts)}",
            figure=f"{growth / 2**20:.1f} MiB against a tolerance of {_RSS_TOLERANCE // 2**20} MiB",
            result=result,
        )
