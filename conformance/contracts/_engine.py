"""Shared vocabulary of the engine's checks (sections L, K, E, R, F): scripts, journal queries, verdict text.

Only the protocol is assumed of a strategy: what a check knows comes from the journal the scripted
bundles wrote, the outcome of ``execute()`` and the sandbox's snapshots.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from conformance.checks import CheckContext
from conformance.scenarios import Fault, JournalRecord, LeakReport, ScenarioResult, Script, Step

__all__ = [
    "ALL_STARTED",
    "ERROR_TYPE",
    "POLL",
    "bundle_names",
    "describe_outcome",
    "exception_text",
    "expect_raised",
    "expect_returned",
    "first",
    "grace",
    "hang_bound",
    "leak_lines",
    "once_all_started",
    "records",
    "runners_stopped",
    "start_seconds",
]

ERROR_TYPE = "conformance.bundles.ScriptedError"  # a non-builtin type: re-raising it proves fidelity
POLL = Script((Step("poll"),))  # a cooperative bundle: polls the event until it is set
ALL_STARTED = Fault("open-gate", "all started", open_gate="all-started")
"""Opens gate ``all-started`` once every bundle journaled its start (put it in the scenario's faults)."""


def once_all_started(*steps: Step) -> Script:
    """A script that waits until every bundle runs (gate ``all-started``, see ``ALL_STARTED``), then runs
    ``steps``: what a contract says about "the others" needs the others to be running, whatever the
    strategy's start-up time."""
    return Script((Step("gate", args={"name": "all-started", "ignore_event": True}), *steps))


def records(
    result: ScenarioResult, kind: str | None = None, bundle: str | None = None
) -> list[JournalRecord]:
    return [
        record
        for record in result.journal
        if (kind is None or record.kind == kind) and (bundle is None or record.bundle == bundle)
    ]


def first(result: ScenarioResult, kind: str, bundle: str | None = None) -> JournalRecord | None:
    found = records(result, kind, bundle)
    return found[0] if found else None


def bundle_names(n_runners: int) -> list[str]:
    return ["algorithm", *(f"runner {i}" for i in range(n_runners))]


def grace(ctx: CheckContext) -> float:
    """The strategy's declared grace period (seconds), as declared: not scaled."""
    return float(ctx.capabilities.get("grace_seconds", 2.0))


def start_seconds(ctx: CheckContext) -> float:
    """The strategy's declared start-up allowance per ``execute()`` (``start_seconds``), as declared."""
    return float(ctx.capabilities.get("start_seconds", 0.0))


def hang_bound(ctx: CheckContext, extra: float = 0.0) -> float:
    """A generous hang bound for ``Scenario.hang_bound``: far beyond every contract bound, so only a
    real hang reaches it.

    The sandbox multiplies ``Scenario.hang_bound`` by the timeout scale; the strategy's declared
    grace/terminate/join/start seconds and ``extra`` (seconds of real time some bundle legitimately runs)
    must not shrink with it, so they are divided by the scale here. A scenario of several runs adds
    ``start_seconds(ctx)`` per further run to ``extra`` itself (R6).
    """
    caps = ctx.capabilities
    declared = float(caps.get("grace_seconds", 2.0)) + 2 * float(caps.get("terminate_seconds", 2.0))
    declared += float(caps.get("join_seconds", 5.0)) + start_seconds(ctx)
    return 20.0 + (declared + extra) / ctx.timeout_scale


def describe_outcome(result: ScenarioResult) -> str:
    if result.outcome == "raised" and result.exception is not None:
        return f"execute() raised {result.exception.type_name}: {result.exception.message}"
    if result.outcome == "hang":
        return f"execute() hung: killed after the {result.scenario.hang_bound:g} s hang bound"
    if result.outcome == "crashed":
        return f"the process calling execute() died (exit status {result.exit_status})"
    return "execute() returned"


def expect_returned(ctx: CheckContext, result: ScenarioResult, why: str) -> None:
    if result.outcome != "returned":
        ctx.fail(expected=f"execute() returns ({why})", observed=describe_outcome(result), result=result)
    value = result.measurements.get("returned_value")
    if value is not None:
        ctx.fail(expected="execute() returns None", observed=f"it returned {value}", result=result)


def expect_raised(
    ctx: CheckContext, result: ScenarioResult, type_name: str, why: str, message: str | None = None
) -> None:
    """``execute()`` raised exactly ``type_name`` (qualified) and, if given, with ``message``."""
    info = result.exception
    if result.outcome != "raised" or info is None or info.type_name != type_name:
        ctx.fail(
            expected=f"execute() raises {type_name} ({why})", observed=describe_outcome(result), result=result
        )
    if message is not None and info.message != message:
        ctx.fail(
            expected=f"execute() raises {type_name} with the message {message!r}",
            observed=f"message {info.message!r}",
            result=result,
        )


def exception_text(result: ScenarioResult) -> str:
    """Everything the raised exception carries: messages, notes and tracebacks along its cause chain."""
    parts: list[str] = []
    info = result.exception
    while info is not None:
        parts.extend([info.type_name, info.message, *info.notes, info.traceback])
        info = info.cause
    return "\n".join(parts)


def runners_stopped(ctx: CheckContext, result: ScenarioResult, names: Iterable[str]) -> None:
    """Each named bundle that started also ended (returned, raised or was cancelled)."""
    started = {record.bundle for record in records(result, "start")}
    ended = {record.bundle for record in records(result, "end")}
    missing = [name for name in names if name in started and name not in ended]
    if missing:
        ctx.fail(
            expected="every bundle stops",
            observed=f"{', '.join(missing)} started but never ended",
            result=result,
        )


def leak_lines(report: LeakReport, fields: Iterable[str]) -> list[str]:
    lines: list[str] = []
    for name in fields:
        entries: Any = getattr(report, name)
        lines.extend(f"{name}: {entry}" for entry in entries)
    return lines
