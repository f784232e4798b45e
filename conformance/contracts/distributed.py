"""Checks for section D (runners on other hosts): D1-D5 on network-namespace test hosts.

Each check places the strategy's sides with its ``host_sides`` (``conformance.host_runs``): the
algorithm side on host 0, a runner side on each other host. n/a names the reason where namespaces
cannot be made; a strategy that runs on many hosts without ``host_sides`` fails saying what to declare.
Bounds are the catalogue's (scaled by ``--conformance-timeout-scale``) plus what the strategy declares
(``grace_seconds``, ``host_loss_seconds``, ``partition_seconds``, ``late_store_seconds``).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from conformance.checks import CheckContext, contract
from conformance.contracts._engine import ERROR_TYPE, POLL
from conformance.host_runs import HostRun, require_hosts
from conformance.scenarios import JournalRecord, Script, Step

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
        + run.logs(),
    )


def _start_all(ctx: CheckContext, run: HostRun, runner_hosts: list[int], *, history: bool = False) -> None:
    """The algorithm side on host 0, then (once it listens) a runner side on each of ``runner_hosts``."""
    run.start(0, "algorithm", history=history)
    try:
        run.wait_listening(_hang(ctx))
    except TimeoutError as error:
        _fail_run(ctx, run, expected="the algorithm side listens on its {port}", observed=str(error))
    for host in runner_hosts:
        run.start(host, "runner")


# -- D1 ---------------------------------------------------------------------------------------------------

_D1_ALGORITHM = {
    "after-return": Script((Step("gate", args={"name": "go"}),)),
    "after-error": Script(
        (Step("gate", args={"name": "go"}), Step("raise", args={"type": ERROR_TYPE, "message": "D1 stop"}))
    ),
    "after-keyboard-interrupt": POLL,
}


@contract("D1", situations=tuple(_D1_ALGORITHM))
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
        exits = {host: run.wait_empty(host, bound + _hang(ctx)) for host in (1, 2)}
        late = {h: t for h, t in exits.items() if t is None or t - stopped_at > bound}
        took = max((t if t is not None else time.monotonic()) - stopped_at for t in exits.values())
        figure = f"{took:.3f} s from {how} to the last runner host's last process against {bound:.3f} s"
        if late:
            _fail_run(
                ctx,
                run,
                expected=f"every runner-side process on hosts 1 and 2 exits within 2 s + grace {grace:g} s",
                observed=", ".join(
                    f"host {h}: " + ("still running" if t is None else f"{t - stopped_at:.3f} s")
                    for h, t in late.items()
                ),
                figure=figure,
            )
        algorithm = run.wait_side(0, _hang(ctx))
        if algorithm is None or run.wait_empty(0, _hang(ctx)) is None:
            _fail_run(ctx, run, expected="the algorithm side ends", observed="it still runs", figure=figure)
        ended = {h: run.result(h) for h in (1, 2)}
        for host, result in ended.items():
            if result is None:
                _fail_run(
                    ctx,
                    run,
                    expected=f"the runner side on host {host} ends through execute()",
                    observed="its process ended without execute() returning or raising",
                    figure=figure,
                )
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
        gone = run.wait_empty(1, bound + _hang(ctx))
        side = next((r for r in run.journal() if r.bundle == "h1 side" and r.kind == "execute"), None)
        if side is None:
            _fail_run(ctx, run, expected="the runner side calls execute()", observed="it never did")
        assert side is not None
        took = (gone if gone is not None else time.monotonic()) - side.t
        figure = f"{took:.3f} s from execute() to the last process on host 1 against {bound:.3f} s"
        ctx.measure(figure)
        if gone is None or took > bound:
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
        for host in (0, 1):
            if run.wait_side(host, _hang(ctx)) is None:
                _fail_run(ctx, run, expected=f"the side on host {host} ends", observed="it still runs")
        # A side started by someone without the credential, on host 2.
        run.start(2, "algorithm", credentials=False)
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
