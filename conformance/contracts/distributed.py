"""Checks for section D (runners on other hosts): D1-D5 on network-namespace test hosts.

Each check places the strategy's sides with its ``host_sides`` (``conformance.host_runs``): the
algorithm side on host 0, a runner side on each other host. n/a names the reason where namespaces
cannot be made; a strategy that runs on many hosts without ``host_sides`` fails saying what to declare.
Bounds are the catalogue's (scaled by ``--conformance-timeout-scale``) plus what the strategy declares
(``grace_seconds``, ``host_loss_seconds``, ``partition_seconds``, ``late_store_seconds``) as built for
section D: with its declared ``host_test_options`` under the user's options (``conformance.host_options``;
the plugin hands the checks that target and those capabilities).

Where a scenario's end stands on another D contract, it waits for it only that contract's bound: D2, D3
and D5 wait for the runner sides to end within D1's bound after the algorithm side's ``execute()``
ended, and D3's long partition for the algorithm side's run to end within D2's bound after the cut.
Past it the item is reported ``blocked by D1`` (or ``D2``), naming what was seen, instead of waiting out
the 60 s hang bound: that contract's own items give the verdict.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

from conformance.checks import CheckContext, contract
from conformance.contracts._engine import ERROR_TYPE, POLL
from conformance.host_runs import HostRun, require_hosts
from conformance.scenarios import JournalRecord, Script, Step
from conformance.verdicts import Blocked

__all__: list[str] = []

_HANG = 60.0  # seconds (scaled): only a real hang reaches it
_WORK = Script((Step("store", args={"op": "work"}),))


def _hang(ctx: CheckContext, extra: float = 0.0) -> float:
    return ctx.bound(_HANG) + extra


def _started(host: int, bundle: str) -> Any:
    return lambda r: r.bundle == f"h{host} {bundle}" and r.kind == "start"


def _fail_run(ctx: CheckContext, run: HostRun, *, expected: str, observed: str, figure: str = "") -> None:
    ctx.fail(
        expected=expected,
        observed=observed,
        figure=figure,
        details="  timeline across hosts:\n"
        + "\n".join("    " + line for line in run.timeline().splitlines())
        + "\n"
        + run.logs()
        + "\n  stacks of the processes still running:\n"
        + run.stacks(),
    )


def _start_all(ctx: CheckContext, run: HostRun, runner_hosts: list[int], *, history: bool = False) -> None:
    """The algorithm side on host 0, then (once it listens) a runner side on each of ``runner_hosts``
    (started ahead: built beside the algorithm side, released into ``execute()`` once it listens)."""
    run.start(0, "algorithm", history=history)
    for host in runner_hosts:
        run.start(host, "runner", ahead=True)
    try:
        run.wait_listening(_hang(ctx))
    except TimeoutError as error:
        _fail_run(ctx, run, expected="the algorithm side listens on its {port}", observed=str(error))
    for host in runner_hosts:
        run.release(host)


# -- D1 ---------------------------------------------------------------------------------------------------

_D1_ALGORITHM = {
    "after-return": Script((Step("gate", args={"name": "go"}),)),
    "after-error": Script(
        (Step("gate", args={"name": "go"}), Step("raise", args={"type": ERROR_TYPE, "message": "D1 stop"}))
    ),
    "after-keyboard-interrupt": POLL,
}


@contract("D1")
def check_remote_stop(ctx: CheckContext) -> None:
    """D1: the algorithm returns, raises or is interrupted: every runner-side process on every other host
    has exited within 2 s plus the declared grace, and none is left on any host."""
    sides = require_hosts(ctx)
    grace = float(ctx.capabilities["grace_seconds"])
    with HostRun(ctx, sides, 3, algorithm=_D1_ALGORITHM[ctx.situation], runner=POLL) as run:
        _start_all(ctx, run, [1, 2])
        for host in (1, 2):
            if run.wait_record(_started(host, "runner 0"), _hang(ctx), f"runner on host {host}") is None:
                _fail_run(ctx, run, expected=f"a runner starts on host {host}", observed="none started")
        if ctx.situation == "after-keyboard-interrupt":
            stopped_at = time.monotonic()
            run.processes[0].send_signal(signal.SIGINT)
            how = "the SIGINT to the algorithm side"
        else:
            run.open_gate(0, "go")
            end = run.wait_record(
                lambda r: r.bundle == "h0 algorithm" and r.kind == "end", _hang(ctx), "algorithm end"
            )
            if end is None:
                _fail_run(
                    ctx, run, expected="the algorithm ends once its gate opens", observed="it never ended"
                )
            assert end is not None
            stopped_at = end.t
            how = "the algorithm's end"
        bound = ctx.bound(2.0) + grace
        # The side's execute() returns once its runner processes have returned and been reaped: that is
        # the contract's "return". Its interpreter's own exit (the kit's process) is not counted, but it
        # must leave nothing running on the host.
        exits = {host: run.wait_empty(host, bound + _hang(ctx)) for host in (1, 2)}
        stragglers = [host for host, t in exits.items() if t is None]
        if stragglers:
            _fail_run(
                ctx,
                run,
                expected="no process is left on any runner host",
                observed=f"processes still run on host(s) {stragglers}",
            )
        ended = {h: run.result(h) for h in (1, 2)}
        for host, result in ended.items():
            if result is None:
                _fail_run(
                    ctx,
                    run,
                    expected=f"the runner side on host {host} ends through execute()",
                    observed="its process ended without execute() returning or raising",
                )
        returned = {h: float(result["ended"]) - stopped_at for h, result in ended.items() if result}
        took = max(returned.values())
        figure = f"{took:.3f} s from {how} to the last runner side's return against {bound:.3f} s"
        late = {h: t for h, t in returned.items() if t > bound}
        if late:
            _fail_run(
                ctx,
                run,
                expected=f"every runner side on hosts 1 and 2 returns within 2 s + grace {grace:g} s",
                observed=", ".join(f"host {h}: {t:.3f} s" for h, t in late.items()),
                figure=figure,
            )
        algorithm = run.wait_side(0, _hang(ctx))
        if algorithm is None or run.wait_empty(0, _hang(ctx)) is None:
            _fail_run(ctx, run, expected="the algorithm side ends", observed="it still runs", figure=figure)
        polls = _after(run.journal(), stopped_at + bound, prefix=("h1 ", "h2 "))
        if polls:
            _fail_run(
                ctx,
                run,
                expected="no runner keeps working after the stop",
                observed=f"{len(polls)} runner records after the bound: {polls[0].bundle} {polls[0].kind}",
                figure=figure,
            )
    ctx.measure(figure)


def _after(records: list[JournalRecord], t: float, prefix: tuple[str, ...]) -> list[JournalRecord]:
    return [r for r in records if r.t > t and r.bundle.startswith(prefix)]


def _runner_sides_end(ctx: CheckContext, run: HostRun, hosts: list[int], algorithm: dict[str, Any]) -> None:
    """The runner sides on ``hosts`` once the algorithm side's ``execute()`` has ended (``algorithm``: its
    result). That they return within D1's bound (2 s + grace) is D1's contract: a side still running
    past it (and a margin for its interpreter's exit) makes the scenario wait on D1's defect, so it is
    reported as blocked by D1 instead of waiting out the hang bound. One that returned in time is waited
    for to its exit as before."""
    grace = float(ctx.capabilities["grace_seconds"])
    ended = float(algorithm.get("ended", time.monotonic()))
    known = ended + ctx.bound(2.0) + grace + ctx.bound(2.0)
    for host in hosts:
        run.wait_side(host, max(0.0, known - time.monotonic()))
        if run.processes[host].poll() is not None:
            continue  # ended (what it wrote is the caller's to judge)
        result = run.result(host)
        if result is None or float(result["ended"]) - ended > ctx.bound(2.0) + grace:
            raise Blocked(
                f"blocked by D1 (remote-stop): the runner side on host {host} still ran "
                f"{time.monotonic() - ended:.3f} s after the algorithm side's execute() ended "
                f"(D1: every runner side returns within 2 s + grace {grace:g} s)"
            )
        run.wait_side(host, _hang(ctx))


# -- D4 ---------------------------------------------------------------------------------------------------


@contract("D4")
def check_late_store(ctx: CheckContext) -> None:
    """D4: a runner side started before the store is reachable waits up to the declared bound, then fails
    with an error naming host and port, leaving nothing running on its host."""
    sides = require_hosts(ctx)
    declared = float(ctx.capabilities["late_store_seconds"])
    bound = declared + ctx.bound(2.0)
    with HostRun(ctx, sides, 2, algorithm=POLL, runner=_WORK) as run:
        address = run.hosts.address(0)
        run.start(1, "runner")
        side = run.wait_record(lambda r: r.bundle == "h1 side" and r.kind == "execute", _hang(ctx), "execute")
        if side is None:
            _fail_run(ctx, run, expected="the runner side calls execute()", observed="it never did")
        assert side is not None
        # Past the bound the verdict is known: wait no longer than that from execute().
        gone = run.wait_empty(1, max(0.0, side.t + bound + ctx.bound(1.0) - time.monotonic()))
        took = (gone if gone is not None else time.monotonic()) - side.t
        figure = f"{took:.3f} s from execute() to the last process on host 1 against {bound:.3f} s"
        ctx.measure(figure)
        if gone is None or took > bound:
            ctx.hung = gone is None  # it never gave up: every D scenario would wait for it (prerequisites)
            _fail_run(
                ctx,
                run,
                expected=f"the runner side waits at most late_store_seconds={declared:g} s for the store, "
                "then fails",
                observed="it still ran" if gone is None else f"it ended after {took:.3f} s",
                figure=figure,
            )
        result = run.result(1)
        if result is None or result.get("outcome") != "raised":
            _fail_run(
                ctx,
                run,
                expected="execute() on the runner side raises an error",
                observed="it ended without execute() ending"
                if result is None
                else f"execute() {result['outcome']}",
                figure=figure,
            )
        assert result is not None
        message = str(result.get("message", ""))
        if address not in message or str(run.port) not in message:
            _fail_run(
                ctx,
                run,
                expected=f"the error names the store's host {address} and port {run.port}",
                observed=f"{result.get('type')}: {message}",
                figure=figure,
            )


# -- D5 ---------------------------------------------------------------------------------------------------


def _status_from(run: HostRun, src: int, authorization: str | None) -> str:
    """The status line the algorithm side answers a store request from host ``src`` with."""
    header = f"Authorization: {authorization}\r\n" if authorization is not None else ""
    request = (
        f"POST /v1/query_rollouts HTTP/1.1\r\nHost: {run.hosts.address(0)}:{run.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n{header}\r\n{{}}"
    ).encode()
    sock = run.hosts.connect(src, run.hosts.address(0), run.port, ctx_timeout := 10.0)
    try:
        sock.settimeout(ctx_timeout)
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    finally:
        sock.close()
    return answer.split(b"\r\n", 1)[0].decode(errors="replace")


@contract("D5")
def check_authenticated(ctx: CheckContext) -> None:
    """D5: beyond loopback the store refuses requests without the right credential (401), a side without
    credentials never listens beyond loopback, and the credential appears in no output, error or repr."""
    sides = require_hosts(ctx)
    algorithm = Script(
        (
            Step("store", args={"op": "enqueue", "count": 2}),
            Step("store", args={"op": "wait_all", "timeout": _hang(ctx)}),
        )
    )
    with HostRun(ctx, sides, 3, algorithm=algorithm, runner=_WORK) as run:
        # A side started by someone without the credential, on host 2: built now, run once the others end.
        run.start(2, "algorithm", credentials=False, ahead=True)
        _start_all(ctx, run, [1])
        refusals = {
            "no credential": _status_from(run, 2, None),
            "a wrong credential": _status_from(run, 2, f"Bearer {'x' * len(run.token)}"),
        }
        for what, status in refusals.items():
            if " 401 " not in f"{status} ":
                _fail_run(
                    ctx,
                    run,
                    expected=f"a request from host 2 with {what} is refused with 401",
                    observed=f"the store answered {status!r}",
                )
        ctx.measure(
            "requests from a third host without / with a wrong credential: " + ", ".join(refusals.values())
        )
        algorithm_side = run.wait_side(0, _hang(ctx))
        if algorithm_side is None:
            _fail_run(ctx, run, expected="the side on host 0 ends", observed="it still runs")
        assert algorithm_side is not None
        _runner_sides_end(ctx, run, [1], algorithm_side)
        run.release(2)
        deadline = time.monotonic() + _hang(ctx)
        while run.processes[2].poll() is None and time.monotonic() < deadline:
            if run.hosts.reachable(1, 2, run.port, within=0.2):
                _fail_run(
                    ctx,
                    run,
                    expected="a side without credentials refuses to listen beyond loopback",
                    observed=f"it accepts connections from host 1 at {run.hosts.address(2)}:{run.port}",
                )
        if run.processes[2].poll() is None:
            _fail_run(ctx, run, expected="the side without credentials refuses to start", observed="it runs")
        refused = run.result(2) or {}
        ctx.measure(f"a side without credentials: {refused.get('type')}: {refused.get('message', '')[:120]}")
        texts = {f"host {h} output": run.output(h) for h in (0, 1, 2)}
        for host in (0, 1, 2):
            result = run.result(host) or {}
            for key in ("message", "traceback", "repr"):
                texts[f"host {host} {key}"] = str(result.get(key, ""))
        leaked = [where for where, text in texts.items() if run.token in text]
        if leaked:
            _fail_run(
                ctx,
                run,
                expected="the credential appears in no log, error or repr",
                observed="it appears in " + ", ".join(leaked),
            )


# -- D2 and D3: what the store's history says ------------------------------------------------------------

_RETRY = {"max_attempts": 3, "retry_condition": ["failed", "unresponsive", "timeout"]}
_GIVEN_UP = {"failed", "unresponsive", "timeout"}


def _history_problems(run: HostRun, history: list[dict[str, Any]], *, all_done: bool) -> list[str]:
    """What the algorithm side's store and the journals say was lost or completed twice."""
    problems = []
    completed = Counter(r.detail for r in run.journal() if r.kind == "completed")
    problems += [f"rollout {rid} completed {n} times by runners" for rid, n in completed.items() if n > 1]
    for rollout in history:
        rid, statuses = rollout["rollout_id"], [a["status"] for a in rollout["attempts"]]
        if statuses.count("succeeded") > 1:
            problems.append(f"rollout {rid} has {statuses.count('succeeded')} succeeded attempts: {statuses}")
        if "running" in statuses or "preparing" in statuses:
            problems.append(f"rollout {rid} still has an attempt held by nobody: {statuses}")
        if all_done and rollout["status"] != "succeeded":
            problems.append(f"rollout {rid} ended {rollout['status']} (attempts {statuses})")
    return problems


def _holder(host: int, hold: bool) -> Script:
    """A runner that claims one rollout and holds it until the stop (``hold``), or works them all."""
    if not hold:
        return _WORK
    return Script((Step("store", args={"op": "dequeue"}), Step("poll")))


# -- D2 ---------------------------------------------------------------------------------------------------


@contract("D2")
def check_host_loss(ctx: CheckContext) -> None:
    """D2: a runner host lost while a runner there holds a rollout (its processes killed, or first cut
    off and then killed: a machine that vanished): within the declared bound its attempt is given up
    and the rollout requeued; execute() follows the declared policy; nothing lost, nothing done twice."""
    sides = require_hosts(ctx)
    declared = float(ctx.capabilities["host_loss_seconds"])
    policy = str(ctx.capabilities["host_loss_policy"])
    bound = declared + ctx.bound(2.0)
    count = 3
    algorithm = Script(
        (
            Step("store", args={"op": "enqueue", "count": count, "config": _RETRY}),
            Step("store", args={"op": "wait_all", "timeout": bound + _hang(ctx)}),
        )
    )
    with HostRun(ctx, sides, 3, algorithm=algorithm, runner=_WORK) as run:
        run.start(0, "algorithm", history=True)
        # Both runner sides are built beside the algorithm side; host 2's runner works only once host 1
        # holds a claim (its gate), so that host 1 gets one.
        run.start(1, "runner", runner=_holder(1, hold=True), ahead=True)
        run.start(2, "runner", runner=Script((Step("gate", args={"name": "work"}), *_WORK.steps)), ahead=True)
        try:
            run.wait_listening(_hang(ctx))
        except TimeoutError as error:
            _fail_run(ctx, run, expected="the algorithm side listens on its {port}", observed=str(error))
        if run.wait_record(lambda r: r.kind == "enqueued", _hang(ctx), "enqueued") is None:
            _fail_run(ctx, run, expected="the algorithm enqueues its rollouts", observed="it never did")
        run.release(1)
        run.release(2)
        held = run.wait_record(
            lambda r: r.bundle == "h1 runner 0" and r.kind == "dequeued" and r.detail != "none",
            _hang(ctx),
            "a claim on host 1",
        )
        if held is None:
            _fail_run(ctx, run, expected="the runner on host 1 claims a rollout", observed="it claimed none")
        assert held is not None
        run.open_gate(2, "work")
        others = run.wait_record(
            lambda r: r.bundle == "h2 runner 0" and r.kind == "completed", _hang(ctx), "work on host 2"
        )
        if others is None:
            _fail_run(ctx, run, expected="the runner on host 2 works", observed="it completed nothing")
        if ctx.situation == "silent":
            run.hosts.cut(1)
        lost_at = time.monotonic()
        run.hosts.kill_host(1)
        # Given up and requeued: the runner on host 2 redoes it (carry on), or the stop reaches it (raise).
        seen = run.wait_record(
            lambda r: (
                r.t > lost_at
                and r.bundle == "h2 runner 0"
                and ((r.kind == "completed" and r.detail == held.detail) or r.kind == "saw-stop")
            ),
            bound + ctx.bound(1.0),  # past the bound the verdict is known: no need to wait longer
            "the lost rollout given up",
        )
        took = (seen.t if seen is not None else time.monotonic()) - lost_at
        what = "redone on host 2" if seen is not None and seen.kind == "completed" else "the stop on host 2"
        figure = f"{took:.3f} s from the loss of host 1 to {what} against {bound:.3f} s"
        if seen is None or took > bound:
            _fail_run(
                ctx,
                run,
                expected=f"host 1's attempt is given up within host_loss_seconds={declared:g} s (+2 s)",
                observed="it never was" if seen is None else f"it took {took:.3f} s",
                figure=figure,
            )
        ctx.measure(figure)
        algorithm_side = run.wait_side(0, _hang(ctx) + bound)
        if algorithm_side is None:
            _fail_run(ctx, run, expected="the algorithm side ends", observed="it still runs", figure=figure)
        assert algorithm_side is not None
        _runner_sides_end(ctx, run, [2], algorithm_side)
        address = run.hosts.address(1)
        message = str(algorithm_side.get("message", ""))
        if policy == "raise" and (
            algorithm_side["outcome"] != "raised"
            or address not in message
            or not any(name in message for name in ("runner-0", "runner 0"))
        ):
            _fail_run(
                ctx,
                run,
                expected=f"execute() raises an error naming host 1 ({address}) and its runner (policy raise)",
                observed=f"execute() {algorithm_side['outcome']}: {message}",
                figure=figure,
            )
        if policy == "carry-on" and algorithm_side["outcome"] != "returned":
            _fail_run(
                ctx,
                run,
                expected="execute() carries on with the other hosts and returns (policy carry-on)",
                observed=f"execute() {algorithm_side['outcome']}: {message}",
                figure=figure,
            )
        history = algorithm_side.get("history", [])
        problems = _history_problems(run, history, all_done=policy == "carry-on")
        lost = next((r for r in history if r["rollout_id"] == held.detail), None)
        if lost is None or not lost["attempts"] or lost["attempts"][0]["status"] not in _GIVEN_UP:
            problems.append(f"host 1's attempt of {held.detail} was not given up: {lost}")
        if len(history) != count:
            problems.append(f"the store holds {len(history)} rollouts, {count} were enqueued")
        if problems:
            _fail_run(
                ctx,
                run,
                expected="nothing lost, nothing completed twice (the store's history)",
                observed="; ".join(problems),
                figure=figure,
            )


# -- D3 ---------------------------------------------------------------------------------------------------

_SHORT_ROLLOUTS = 6
# Spans are the writes a double application shows in (the store keeps each one it is given), so each
# pause, where the cut most likely lands, is followed by one: the first write into the cut is a span.
_ONE_AT_A_TIME = (
    Step("store", args={"op": "dequeue"}),
    *(step for _ in range(3) for step in (Step("sleep", 0.1), Step("store", args={"op": "add_span"}))),
    Step("store", args={"op": "complete"}),
)
_STEADY = Script((*(_ONE_AT_A_TIME * _SHORT_ROLLOUTS), Step("poll")))


@contract("D3")
def check_partition(ctx: CheckContext) -> None:
    """D3: a runner host cut off for half the declared tolerance, mid-work, then healed: the run
    completes with no write applied twice (the store holds exactly the spans the runner wrote). Cut
    for good: that runner side exits with an error naming the unreachable address, and the algorithm
    side sees a host loss (D2)."""
    sides = require_hosts(ctx)
    tolerance = float(ctx.capabilities["partition_seconds"])
    declared = float(ctx.capabilities["host_loss_seconds"])
    short = ctx.situation == "short"
    count = _SHORT_ROLLOUTS if short else 1
    config = _RETRY if short else {"max_attempts": 1}
    algorithm = Script(
        (
            Step("store", args={"op": "enqueue", "count": count, "config": config}),
            Step("store", args={"op": "wait_all", "timeout": declared + _hang(ctx)}),
        )
    )
    runner = _STEADY if short else _holder(1, hold=True)
    with HostRun(ctx, sides, 2, algorithm=algorithm, runner=runner) as run:
        run.start(0, "algorithm", history=True)
        run.start(1, "runner", ahead=True)
        try:
            run.wait_listening(_hang(ctx))
        except TimeoutError as error:
            _fail_run(ctx, run, expected="the algorithm side listens on its {port}", observed=str(error))
        if run.wait_record(lambda r: r.kind == "enqueued", _hang(ctx), "enqueued") is None:
            _fail_run(ctx, run, expected="the algorithm enqueues its rollouts", observed="it never did")
        run.release(1)
        kind = "completed" if short else "dequeued"
        if run.wait_record(lambda r: r.bundle == "h1 runner 0" and r.kind == kind, _hang(ctx), kind) is None:
            _fail_run(ctx, run, expected="the runner on host 1 works", observed=f"it never {kind} a rollout")
        if short:
            _short_partition(ctx, run, tolerance)
        else:
            _long_partition(ctx, run, declared)


def _short_partition(ctx: CheckContext, run: HostRun, tolerance: float) -> None:
    cut = tolerance / 2
    run.hosts.cut(1)
    cut_at = time.monotonic()
    time.sleep(cut)  # the fault itself: how long the link stays down
    run.hosts.restore(1)
    figure = f"a {time.monotonic() - cut_at:.3f} s partition against a tolerance of {tolerance:.3f} s"
    ctx.measure(figure)
    results = {0: run.wait_side(0, _hang(ctx) + tolerance)}
    if results[0] is not None:
        _runner_sides_end(ctx, run, [1], results[0])
    results[1] = run.wait_side(1, _hang(ctx) + tolerance)
    for host, result in results.items():
        if result is None or result.get("outcome") != "returned":
            _fail_run(
                ctx,
                run,
                expected=f"the side on host {host} survives the short partition and returns",
                observed="it still runs"
                if result is None
                else f"execute() {result.get('outcome')}: {result.get('message', '')}",
                figure=figure,
            )
    history = (results[0] or {}).get("history", [])
    problems = _history_problems(run, history, all_done=True)
    written = Counter(r.detail for r in run.journal() if r.kind == "span")
    for rollout in history:
        stored, sent = rollout.get("spans", 0), written[rollout["rollout_id"]]
        if stored != sent:
            problems.append(
                f"rollout {rollout['rollout_id']}: {sent} spans written, the store holds {stored}"
            )
    if problems:
        _fail_run(
            ctx,
            run,
            expected="every rollout completed once, no write applied twice",
            observed="; ".join(problems),
            figure=figure,
        )


def _long_partition(ctx: CheckContext, run: HostRun, declared: float) -> None:
    address = f"{run.hosts.address(0)}:{run.port}"
    bound = declared + ctx.bound(2.0)
    run.hosts.cut(1)
    cut_at = time.monotonic()
    gone = run.wait_empty(1, bound + _hang(ctx))
    took = (gone if gone is not None else time.monotonic()) - cut_at
    figure = f"the cut-off runner side ended {took:.3f} s after the cut, against {bound:.3f} s"
    ctx.measure(figure)
    runner = run.result(1)
    if gone is None or took > bound or runner is None:
        _fail_run(
            ctx,
            run,
            expected="the runner side cut off for good exits with an error",
            observed="it still runs" if gone is None else f"it ended after {took:.3f} s: {runner}",
            figure=figure,
        )
    assert runner is not None
    if runner.get("outcome") != "raised" or address not in str(runner.get("message", "")):
        _fail_run(
            ctx,
            run,
            expected=f"its error names the unreachable address {address}",
            observed=f"execute() {runner.get('outcome')}: {runner.get('message', '')}",
            figure=figure,
        )
    # The algorithm side's part is D2's: its run ends (the rollout given up, or the run stopped) within
    # D2's bound from the cut. Past it (and a margin to act on the loss) that is known: D3's own part has
    # passed, and waiting out the algorithm's hang bound would only delay the verdict D2 gives.
    gave_up = run.wait_record(
        lambda r: r.t > cut_at and r.bundle == "h0 algorithm" and r.kind in ("waited", "end"),
        max(0.0, cut_at + bound + ctx.bound(2.0) - time.monotonic()),
        "the algorithm side's give-up",
    )
    if gave_up is None:
        raise Blocked(
            f"blocked by D2 (host-loss): the runner side cut off for good exited as D3 expects ({figure}), "
            f"but the algorithm side's run had not ended {time.monotonic() - cut_at:.3f} s after the cut: "
            f"the cut-off runner's attempt was not given up within host_loss_seconds={declared:g} s (+2 s)"
        )
    algorithm_side = run.wait_side(0, _hang(ctx) + bound)
    history = (algorithm_side or {}).get("history", [])
    attempts = [a["status"] for rollout in history for a in rollout["attempts"]]
    if not attempts or attempts[0] not in _GIVEN_UP:
        _fail_run(
            ctx,
            run,
            expected="the algorithm side gives up the cut-off runner's attempt (D2)",
            observed=f"its attempts ended {attempts}",
            figure=figure,
        )
