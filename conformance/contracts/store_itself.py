"""Checks for section T (the store itself): T1 state-machine, T2 exactly-once-claim, T3 retry-policy,
T4 wait, T5 values, T6 resources, T7 spans.

Each runs once per access path (``in-process``, ``threaded``, ``http``, ``ipc``) in a sandbox of its own
(``store_job``): the store is built by the user's factory and called only through the path, by the
check's body and by concurrent clients in threads and, on ``http`` and ``ipc``, in processes. What a
check knows of the store is what the interface returns; nothing of its internals. Time is real (the kit
cannot inject a clock into a foreign store): liveness bounds are a fraction of a second, hang bounds
many seconds, and every bound scales with ``--conformance-timeout-scale``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from conformance.store_job import StoreRun, store_contract
from conformance.store_paths import Client

__all__: list[str] = []

_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


# -- shared vocabulary ----------------------------------------------------------------------------------


def _dump(model: Any) -> Any:
    return None if model is None else model.model_dump()


async def _rollout_state(store: Any, rollout_id: str) -> dict[str, Any]:
    """The rollout and its attempts as plain data, to compare before and after a refused call."""
    return {
        "rollout": _dump(await store.get_rollout_by_id(rollout_id)),
        "attempts": [_dump(attempt) for attempt in await store.query_attempts(rollout_id)],
    }


def _missing_words(message: str, words: Sequence[str]) -> list[str]:
    return [word for word in words if word not in message]


def _short(items: Sequence[str], limit: int = 6) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; ... ({len(items) - limit} more)" if len(items) > limit else "")


def _lines(items: Sequence[str]) -> str:
    return "\n".join(f"    {item}" for item in items)


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


# -- T1 state-machine -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Illegal:
    """An illegal status change, what it must name, and the rollout whose state must not move."""

    label: str
    call: Callable[[], Awaitable[Any]]
    rollout_id: str
    names: tuple[str, ...]  # ids and both states the error must name


@store_contract("T1")
async def _state_machine(run: StoreRun) -> None:
    """T1: the documented transitions work; illegal ones raise ValueError naming ids and both states and
    leave the rollout and its attempts as they were."""
    s = run.store
    wrong: list[str] = []

    async def expect(label: str, rollout_id: str, status: str, attempts: list[str]) -> None:
        run.step(f"reading back after {label}")
        state = await _rollout_state(s, rollout_id)
        rollout = state["rollout"] or {}
        seen = [attempt["status"] for attempt in state["attempts"]]
        if rollout.get("status") != status or seen != attempts:
            wrong.append(
                f"{label}: expected rollout {status!r} with attempts {attempts}, "
                f"got {rollout.get('status')!r} with {seen}"
            )
        if status in _TERMINAL and rollout.get("end_time") is None:
            wrong.append(f"{label}: the rollout is {status!r} but has no end_time")

    async def claim(label: str) -> tuple[str, str]:
        run.step(f"enqueue and dequeue ({label})")
        rollout = await s.enqueue_rollout({"case": label})
        await expect(f"enqueue_rollout ({label})", rollout.rollout_id, "queuing", [])
        attempted = await s.dequeue_rollout()
        if attempted is None or attempted.rollout_id != rollout.rollout_id:
            run.fail(
                expected="dequeue_rollout hands out the one queued rollout",
                observed=f"it returned {None if attempted is None else attempted.rollout_id!r} "
                f"instead of {rollout.rollout_id!r}",
            )
        if attempted.status != "preparing" or attempted.attempt.status != "preparing":
            wrong.append(
                f"dequeue_rollout ({label}): returned rollout {attempted.status!r}, attempt "
                f"{attempted.attempt.status!r}; expected both 'preparing'"
            )
        if attempted.attempt.sequence_id != 1:
            wrong.append(
                f"dequeue_rollout ({label}): first attempt has sequence_id {attempted.attempt.sequence_id}"
            )
        await expect(f"dequeue_rollout ({label})", rollout.rollout_id, "preparing", ["preparing"])
        return rollout.rollout_id, attempted.attempt.attempt_id

    # Legal transitions, along the documented machine.
    done_r, done_a = await claim("succeeded")
    run.step("update_attempt(status='running')")
    await s.update_attempt(done_r, done_a, status="running")
    await expect("update_attempt running", done_r, "running", ["running"])
    run.step("update_attempt(status='succeeded')")
    await s.update_attempt(done_r, done_a, status="succeeded")
    await expect("update_attempt succeeded", done_r, "succeeded", ["succeeded"])

    beat_r, beat_a = await claim("heartbeat")
    run.step("update_attempt(last_heartbeat_time=...)")
    await s.update_attempt(beat_r, beat_a, last_heartbeat_time=time.time())
    await expect("a heartbeat", beat_r, "running", ["running"])

    failed_r, failed_a = await claim("failed")
    run.step("update_attempt(status='failed') with the default config")
    await s.update_attempt(failed_r, failed_a, status="failed")
    await expect("update_attempt failed (max_attempts=1)", failed_r, "failed", ["failed"])

    run.step("update_rollout(status='cancelled') on a queued rollout")
    cancelled = await s.enqueue_rollout({"case": "cancelled"})
    await s.update_rollout(cancelled.rollout_id, status="cancelled")
    await expect("update_rollout cancelled", cancelled.rollout_id, "cancelled", [])

    finished_r, finished_a = await claim("finished")
    await s.update_attempt(finished_r, finished_a, status="running")
    run.step("update_rollout(status='succeeded') on a running rollout")
    await s.update_rollout(finished_r, status="succeeded")
    attempts = await s.query_attempts(finished_r)
    rollout = await s.get_rollout_by_id(finished_r)
    if rollout is None or rollout.status != "succeeded" or attempts[-1].status in ("preparing", "running"):
        wrong.append(
            "update_rollout succeeded on a running rollout: expected the rollout 'succeeded' and its "
            f"attempt ended, got {None if rollout is None else rollout.status!r} with attempt "
            f"{attempts[-1].status!r}"
        )

    run.step("start_rollout")
    started = await s.start_rollout({"case": "started"})
    await expect("start_rollout", started.rollout_id, "preparing", ["preparing"])
    run.step("start_attempt on a queued rollout")
    queued = await s.enqueue_rollout({"case": "start_attempt"})
    await s.start_attempt(queued.rollout_id)
    await expect("start_attempt on a queued rollout", queued.rollout_id, "preparing", ["preparing"])
    run.step("dequeue_rollout with nothing queued")
    leftover = await s.dequeue_rollout()
    if leftover is not None:
        wrong.append(
            f"dequeue_rollout handed out {leftover.rollout_id!r} although every rollout was claimed, "
            "cancelled or started without queuing"
        )

    # Illegal transitions: refused, named, and nothing changes.
    illegal = [
        _Illegal(
            "update_rollout succeeded -> running",
            lambda: s.update_rollout(done_r, status="running"),
            done_r,
            (done_r, "succeeded", "running"),
        ),
        _Illegal(
            "update_rollout failed -> queuing",
            lambda: s.update_rollout(failed_r, status="queuing"),
            failed_r,
            (failed_r, "failed", "queuing"),
        ),
        _Illegal(
            "update_rollout cancelled -> succeeded",
            lambda: s.update_rollout(cancelled.rollout_id, status="succeeded"),
            cancelled.rollout_id,
            (cancelled.rollout_id, "cancelled", "succeeded"),
        ),
        _Illegal(
            "start_attempt on a succeeded rollout",
            lambda: s.start_attempt(done_r),
            done_r,
            (done_r, "succeeded", "preparing"),
        ),
        _Illegal(
            "update_attempt succeeded -> failed",
            lambda: s.update_attempt(done_r, done_a, status="failed"),
            done_r,
            (done_r, done_a, "succeeded", "failed"),
        ),
        _Illegal(
            "update_attempt failed -> running",
            lambda: s.update_attempt(failed_r, failed_a, status="running"),
            failed_r,
            (failed_r, failed_a, "failed", "running"),
        ),
        _Illegal(
            "update_attempt running -> preparing",
            lambda: s.update_attempt(beat_r, beat_a, status="preparing"),
            beat_r,
            (beat_r, beat_a, "running", "preparing"),
        ),
    ]
    refused_badly: list[str] = []
    for case in illegal:
        run.step(f"reading the state before {case.label}")
        before = await _rollout_state(s, case.rollout_id)
        run.step(case.label)
        try:
            await case.call()
        except ValueError as error:
            missing = _missing_words(str(error), case.names)
            if missing:
                refused_badly.append(f"{case.label}: the error does not name {missing}: {error}")
        except Exception as error:
            refused_badly.append(f"{case.label}: raised {_error_text(error)} instead of ValueError")
        else:
            refused_badly.append(f"{case.label}: accepted")
        run.step(f"reading the state after {case.label}")
        after = await _rollout_state(s, case.rollout_id)
        if after != before:
            refused_badly.append(f"{case.label}: changed the rollout: {_state_diff(before, after)}")
    if refused_badly or wrong:
        run.fail(
            expected="legal transitions land in the documented states; each illegal one raises ValueError "
            "naming the ids and both states, and changes nothing",
            observed=_short(refused_badly + wrong),
            figure=f"{len(refused_badly)} of {len(illegal)} illegal transitions mishandled, "
            f"{len(wrong)} legal ones wrong",
            details="  every problem:\n" + _lines(refused_badly + wrong),
        )


def _state_diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    changes = []
    for key in ("status", "end_time", "input", "metadata"):
        old, new = (before["rollout"] or {}).get(key), (after["rollout"] or {}).get(key)
        if old != new:
            changes.append(f"rollout {key} {old!r} -> {new!r}")
    old_attempts = [(a["status"], a["end_time"]) for a in before["attempts"]]
    new_attempts = [(a["status"], a["end_time"]) for a in after["attempts"]]
    if old_attempts != new_attempts:
        changes.append(f"attempts {old_attempts} -> {new_attempts}")
    return ", ".join(changes) or "some field changed"


# -- T2 exactly-once-claim ---------------------------------------------------------------------------------

_CLAIM_ROLLOUTS = 120
_CLAIM_THREADS = 4
_CLAIM_PROCESSES = 2


def _fails_first_attempt(index: int) -> bool:
    return index % 4 == 0


async def _claim_until_done(store: Any, rollout_ids: list[str], settle: float) -> dict[str, Any]:
    """A client: dequeue until every rollout is terminal; fail the first attempt of every fourth one."""
    claims: list[tuple[str, int, str]] = []
    idle_since: float | None = None
    while True:
        attempted = await store.dequeue_rollout()
        if attempted is None:
            # Statuses by query, not by wait_for_rollouts: T2 must not hinge on T4.
            rollouts = await store.query_rollouts(rollout_ids=rollout_ids)
            if all(rollout.status in _TERMINAL for rollout in rollouts):
                return {"claims": claims, "gave_up": False}
            now = time.monotonic()
            idle_since = idle_since or now
            if now - idle_since > settle:  # others may still requeue; past this, something is lost
                return {"claims": claims, "gave_up": True}
            await asyncio.sleep(0.002)
            continue
        idle_since = None
        sequence = attempted.attempt.sequence_id
        claims.append((attempted.rollout_id, sequence, attempted.attempt.attempt_id))
        index = attempted.input["index"]
        failed = _fails_first_attempt(index) and sequence == 1
        await store.update_attempt(
            attempted.rollout_id, attempted.attempt.attempt_id, status="failed" if failed else "succeeded"
        )


@store_contract("T2", process_clients=_CLAIM_PROCESSES)
async def _exactly_once_claim(run: StoreRun) -> None:
    """T2: many clients dequeue at once; every rollout is handed to exactly the attempts its outcomes
    imply, one at a time, and none twice."""
    from agentlightning.types import RolloutConfig

    s = run.store
    config = RolloutConfig(max_attempts=2, retry_condition=["failed"])
    run.step(f"enqueueing {_CLAIM_ROLLOUTS} rollouts")
    ids = [
        (await s.enqueue_rollout({"index": index}, config=config)).rollout_id
        for index in range(_CLAIM_ROLLOUTS)
    ]
    where = run.spread(_CLAIM_THREADS + (_CLAIM_PROCESSES if run.in_processes else 0))
    clients = [Client(_claim_until_done, (ids, run.bound(5.0)), w) for w in where]
    run.step(f"{len(clients)} clients dequeueing concurrently")
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as possible: claims really interleave
    try:
        outcomes = await run.clients(clients)
    finally:
        sys.setswitchinterval(interval)
    errors = [f"client {o.index} ({o.where}): {_error_text(o.error)}" for o in outcomes if o.error]
    if errors:
        run.fail(
            expected="every client's dequeue_rollout/update_attempt calls succeed",
            observed=_short(errors),
            details="  tracebacks:\n" + _lines([o.traceback for o in outcomes if o.error]),
        )
    claims = [tuple(claim) for o in outcomes for claim in o.value["claims"]]
    per_attempt = Counter((rid, seq) for rid, seq, _ in claims)
    twice = {f"{rid} attempt {seq}": n for (rid, seq), n in per_attempt.items() if n > 1}
    attempt_ids = Counter(aid for _, _, aid in claims)
    shared_ids = [aid for aid, n in attempt_ids.items() if n > 1]
    per_rollout = Counter(rid for rid, _, _ in claims)
    expected = {rid: 2 if _fails_first_attempt(index) else 1 for index, rid in enumerate(ids)}
    wrong_count = {rid: per_rollout[rid] for rid in ids if per_rollout[rid] != expected[rid]}
    foreign = sorted(set(per_rollout) - set(ids))
    run.step("reading the final statuses")
    final = {r.rollout_id: r.status for r in await s.query_rollouts(rollout_ids=ids)}
    unfinished = {rid: final.get(rid) for rid in ids if final.get(rid) != "succeeded"}
    leftover = await s.dequeue_rollout()
    problems = []
    if twice:
        problems.append(f"handed out twice: {dict(list(twice.items())[:5])}")
    if shared_ids:
        problems.append(f"attempt ids handed out to two claims: {shared_ids[:5]}")
    if wrong_count:
        problems.append(
            f"{len(wrong_count)} rollouts claimed a wrong number of times "
            f"(rollout: claims, expected 1, or 2 for every fourth): {dict(list(wrong_count.items())[:5])}"
        )
    if foreign:
        problems.append(f"rollouts never enqueued were handed out: {foreign[:5]}")
    if unfinished:
        problems.append(
            f"{len(unfinished)} rollouts not succeeded at the end: {dict(list(unfinished.items())[:5])}"
        )
    if leftover is not None:
        problems.append(f"dequeue_rollout still hands out {leftover.rollout_id!r} after every rollout ended")
    if any(o.value["gave_up"] for o in outcomes):
        problems.append("clients found the queue empty while rollouts were not terminal (lost)")
    if problems:
        by_client = Counter(o.where for o in outcomes for _ in o.value["claims"])
        run.fail(
            expected=f"each of {_CLAIM_ROLLOUTS} rollouts handed to one attempt at a time across "
            f"{len(clients)} concurrent clients: nothing lost, nothing handed out twice",
            observed=_short(problems),
            figure=f"{len(claims)} claims for {sum(expected.values())} expected attempts; "
            f"claims by {dict(by_client)}",
        )


# -- T3 retry-policy ------------------------------------------------------------------------------------

_TIMEOUT = 0.2  # seconds (scaled): an attempt's timeout_seconds in T3
_SILENCE = 0.3  # seconds (scaled): unresponsive_seconds; heartbeats come six times as often
_DETECTION = 5.0  # seconds (scaled) past a deadline within which the store must have ended the attempt

# What the runner does with each attempt: report an outcome, hold it silently (a worker that is gone),
# or send heartbeats for two silence windows and then go quiet.
_REPORTS = {"fail": "failed", "succeed": "succeeded", "report-timeout": "timeout"}


@dataclass(frozen=True)
class _RetryCase:
    name: str
    config: dict[str, Any]
    plan: tuple[str, ...]  # one action per attempt: fail, succeed, report-timeout, hold, beat


def _retry_cases(timeout: float, silence: float) -> list[_RetryCase]:
    return [
        _RetryCase(
            "failed-retried-to-the-end", {"max_attempts": 3, "retry_condition": ["failed"]}, ("fail",) * 3
        ),
        _RetryCase(
            "failed-then-succeeded", {"max_attempts": 3, "retry_condition": ["failed"]}, ("fail", "succeed")
        ),
        _RetryCase("failed-not-in-condition", {"max_attempts": 3, "retry_condition": ["timeout"]}, ("fail",)),
        _RetryCase("failed-default-config", {}, ("fail",)),
        _RetryCase(
            "reported-timeout-retried",
            {"max_attempts": 2, "retry_condition": ["timeout"]},
            ("report-timeout", "succeed"),
        ),
        _RetryCase(
            "timed-out-twice",
            {"timeout_seconds": timeout, "max_attempts": 2, "retry_condition": ["timeout"]},
            ("hold", "hold"),
        ),
        _RetryCase(
            "timed-out-then-succeeded",
            {"timeout_seconds": timeout, "max_attempts": 2, "retry_condition": ["timeout"]},
            ("hold", "succeed"),
        ),
        _RetryCase(
            "timed-out-not-in-condition",
            {"timeout_seconds": timeout, "max_attempts": 3, "retry_condition": ["failed"]},
            ("hold",),
        ),
        _RetryCase(
            "silent-after-heartbeats-retried",
            {"unresponsive_seconds": silence, "max_attempts": 2, "retry_condition": ["unresponsive"]},
            ("beat", "succeed"),
        ),
        _RetryCase(
            "silent-not-in-condition",
            {"unresponsive_seconds": silence, "max_attempts": 2, "retry_condition": ["failed"]},
            ("hold",),
        ),
    ]


def _expected_attempts(case: _RetryCase) -> tuple[list[str], str]:
    """The attempt statuses and final rollout status the RolloutConfig implies for the case's plan."""
    config = case.config
    statuses: list[str] = []
    for sequence, action in enumerate(case.plan, start=1):
        if action in _REPORTS:
            status = _REPORTS[action]
        elif action == "beat" or "timeout_seconds" not in config:
            status = "unresponsive"
        else:
            status = "timeout"
        statuses.append(status)
        if status == "succeeded":
            return statuses, "succeeded"
        if not (status in config.get("retry_condition", []) and sequence < config.get("max_attempts", 1)):
            return statuses, "failed"
    raise AssertionError(f"{case.name}: the plan ends before the rollout does")


async def _heartbeats(store: Any, rollout_id: str, attempt_id: str, every: float, lasting: float) -> None:
    end = time.monotonic() + lasting
    while time.monotonic() < end:
        await store.update_attempt(rollout_id, attempt_id, last_heartbeat_time=time.time())
        await asyncio.sleep(every)


@store_contract("T3")
async def _retry_policy(run: StoreRun) -> None:
    """T3: one runner (the body) works ten rollouts whose configs and outcomes cover each retry rule;
    every rollout must end with exactly the attempts its RolloutConfig implies."""
    from agentlightning.types import RolloutConfig

    s = run.store
    timeout, silence = run.bound(_TIMEOUT), run.bound(_SILENCE)
    cases = _retry_cases(timeout, silence)
    by_id: dict[str, _RetryCase] = {}
    run.step("enqueueing one rollout per retry case")
    for case in cases:
        rollout = await s.enqueue_rollout({"case": case.name}, config=RolloutConfig(**case.config))
        by_id[rollout.rollout_id] = case
    claims: dict[str, list[int]] = {rid: [] for rid in by_id}
    unplanned: list[str] = []
    beats: list[asyncio.Task[None]] = []
    pending = set(by_id)
    loop = asyncio.get_running_loop()
    patience = run.bound(2 * _SILENCE * 3 + _DETECTION * 2)  # every case's longest chain, and then some
    deadline = loop.time() + patience
    try:
        while pending and loop.time() < deadline:
            run.step("dequeue_rollout")
            attempted = await s.dequeue_rollout()
            if attempted is None:
                # Polled by query, not by wait_for_rollouts: T3 must not hinge on T4.
                run.step("query_rollouts (polling for the store to end held attempts)")
                rollouts = await s.query_rollouts(rollout_ids=sorted(pending))
                pending -= {rollout.rollout_id for rollout in rollouts if rollout.status in _TERMINAL}
                await asyncio.sleep(0.02)
                continue
            rid, aid = attempted.rollout_id, attempted.attempt.attempt_id
            sequence = attempted.attempt.sequence_id
            claims.setdefault(rid, []).append(sequence)
            known = by_id.get(rid)
            plan = known.plan if known is not None else ()
            action = plan[sequence - 1] if 0 < sequence <= len(plan) else "unplanned"
            label = known.name if known is not None else rid
            run.step(f"acting on {label} attempt {sequence}: {action}")
            if action in _REPORTS:
                await s.update_attempt(rid, aid, status=_REPORTS[action])
            elif action == "beat":
                beats.append(asyncio.create_task(_heartbeats(s, rid, aid, silence / 6, 2 * silence)))
            elif action == "unplanned":
                unplanned.append(f"{label}: attempt {sequence} handed out")
                await s.update_attempt(rid, aid, status="failed")  # ends it, so the run goes on
    finally:
        for beat in beats:
            beat.cancel()
        beat_errors = [
            _error_text(error)
            for error in await asyncio.gather(*beats, return_exceptions=True)
            if isinstance(error, Exception)
        ]
    problems = list(unplanned)
    if beat_errors:
        problems.append(f"heartbeats of a live attempt were refused: {beat_errors[0]}")
    figures: list[str] = []
    for rid, case in by_id.items():
        run.step(f"reading the attempts of {case.name}")
        expected_statuses, expected_final = _expected_attempts(case)
        attempts = await s.query_attempts(rid)
        rollout = await s.get_rollout_by_id(rid)
        statuses = [attempt.status for attempt in attempts]
        final = None if rollout is None else rollout.status
        if rid in pending:
            held = [f"attempt {a.sequence_id} {a.status!r}" for a in attempts]
            problems.append(
                f"{case.name}: still {final!r} ({', '.join(held)}) after {patience:g} s "
                f"(config {case.config}): an attempt stays claimed by a worker that is gone"
            )
            continue
        if statuses != expected_statuses or final != expected_final:
            problems.append(
                f"{case.name} (config {case.config}): attempts {statuses}, rollout {final!r}; "
                f"expected {expected_statuses}, {expected_final!r}"
            )
            continue
        for attempt, action in zip(attempts, case.plan, strict=False):
            if action not in ("hold", "beat") or attempt.end_time is None:
                continue
            lived = attempt.end_time - attempt.start_time
            floor = (
                2 * silence if action == "beat" else timeout if "timeout_seconds" in case.config else silence
            )
            figures.append(f"{case.name} #{attempt.sequence_id}: {lived:.2f} s")
            if lived < floor - 0.05:
                problems.append(
                    f"{case.name}: attempt {attempt.sequence_id} ended {attempt.status!r} "
                    f"after {lived:.3f} s, before its {floor:.2f} s were up"
                    + (" (heartbeats must keep it alive)" if action == "beat" else "")
                )
    if problems:
        run.fail(
            expected="each rollout retried or ended exactly as its RolloutConfig says (max_attempts, "
            f"retry_condition); timed-out ({timeout:g} s) and silent ({silence:g} s) attempts ended by "
            "the store within the hang bound",
            observed=_short(problems),
            figure="attempt lifetimes (held or silent): " + (", ".join(figures) or "none ended"),
            details="  every problem:\n" + _lines(problems),
        )


# -- T4 wait ----------------------------------------------------------------------------------------------

_WAKE_BOUND = 0.05  # seconds (scaled): the catalogue's wake-up bound, held by the median
_WAKE_ROUNDS = 12
_WAKE_INTERVAL = 0.08  # seconds between completions: the waiter re-arms well within it
_WAIT_TIMEOUT = 0.25  # seconds (scaled): the timeout the check asks wait_for_rollouts to honour
_TICK = 0.005  # seconds between ticks of the loop watchdog
_LOOP_BLOCK_BOUND = 0.2  # seconds (scaled): the longest tick gap allowed while a wait is pending


async def _complete_on_schedule(
    store: Any, work: list[tuple[str, str]], delay: float, interval: float
) -> list[float]:
    """A client: succeed each (rollout, attempt) at ``delay + i * interval``; when each call began."""
    start = time.monotonic() + delay
    began = []
    for index, (rollout_id, attempt_id) in enumerate(work):
        await asyncio.sleep(max(0.0, start + index * interval - time.monotonic()))
        began.append(time.monotonic())
        await store.update_attempt(rollout_id, attempt_id, status="succeeded")
    return began


class _Ticker:
    """Ticks on the caller's loop every ``_TICK`` s; the longest gap shows whether the loop was blocked."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(_TICK)
            now = time.monotonic()
            self.gaps.append(now - last)
            last = now

    def __enter__(self) -> _Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()


@store_contract("T4", process_clients=1)
async def _wait(run: StoreRun) -> None:
    """T4: the returned set, the timeout, the loop, and the wake-up latency of wait_for_rollouts."""
    s = run.store
    problems: list[str] = []
    figures: list[str] = []

    async def claimed(label: str) -> tuple[str, str]:
        rollout = await s.enqueue_rollout({"case": label})
        attempted = await s.dequeue_rollout()
        if attempted is None or attempted.rollout_id != rollout.rollout_id:
            run.fail(
                expected="dequeue_rollout hands out the one queued rollout",
                observed=f"it returned {None if attempted is None else attempted.rollout_id!r}",
            )
        return rollout.rollout_id, attempted.attempt.attempt_id

    run.step("claiming the rollouts of the wake-up rounds")
    work = [await claimed(f"wake {index}") for index in range(_WAKE_ROUNDS)]
    run.step("preparing rollouts in every state")
    succeeded, succeeded_a = await claimed("succeeded")
    await s.update_attempt(succeeded, succeeded_a, status="succeeded")
    failed, failed_a = await claimed("failed")
    await s.update_attempt(failed, failed_a, status="failed")
    preparing, _ = await claimed("preparing")
    running, running_a = await claimed("running")
    await s.update_attempt(running, running_a, status="running")
    queued = (await s.enqueue_rollout({"case": "queued"})).rollout_id
    cancelled = (await s.enqueue_rollout({"case": "cancelled"})).rollout_id
    await s.update_rollout(cancelled, status="cancelled")
    terminal = {succeeded, failed, cancelled}
    asked = [succeeded, failed, preparing, running, queued, cancelled]
    run.random.shuffle(asked)

    # The terminal subset, in the order asked, after the timeout: never early, never much later.
    timeout = run.bound(_WAIT_TIMEOUT)
    run.step(f"wait_for_rollouts on 3 terminal and 3 live rollouts, timeout {timeout:g} s")
    with _Ticker() as ticker:
        began = time.monotonic()
        got = await s.wait_for_rollouts(rollout_ids=asked, timeout=timeout)
        waited = time.monotonic() - began
    expected = [rid for rid in asked if rid in terminal]
    returned = [rollout.rollout_id for rollout in got]
    if returned != expected:
        problems.append(f"returned {returned} for terminal {expected} (asked {asked})")
    live = [f"{r.rollout_id} {r.status!r}" for r in got if r.status not in _TERMINAL]
    if live:
        problems.append(f"returned rollouts that are not terminal: {live}")
    if not timeout - 0.02 <= waited <= timeout + run.bound(1.0):
        problems.append(f"a wait with timeout {timeout:g} s took {waited:.3f} s")
    figures.append(f"timeout {timeout:g} s honoured in {waited:.3f} s")
    gap = max(ticker.gaps, default=waited)
    figures.append(f"longest loop stall during the wait {gap * 1000:.0f} ms")
    if gap > run.bound(_LOOP_BLOCK_BOUND):
        problems.append(
            f"the caller's loop was blocked {gap:.3f} s during a {timeout:g} s wait "
            f"(bound {run.bound(_LOOP_BLOCK_BOUND):g} s)"
        )

    run.step("wait_for_rollouts on terminal rollouts only")
    began = time.monotonic()
    got = await s.wait_for_rollouts(rollout_ids=sorted(terminal), timeout=run.bound(5.0))
    waited = time.monotonic() - began
    if [r.rollout_id for r in got] != sorted(terminal) or waited > run.bound(1.0):
        problems.append(
            f"waiting on rollouts already terminal returned {[r.rollout_id for r in got]} "
            f"after {waited:.3f} s (expected all of them at once)"
        )
    run.step("wait_for_rollouts with timeout 0")
    got = await s.wait_for_rollouts(rollout_ids=asked, timeout=0)
    if [r.rollout_id for r in got] != expected:
        problems.append(f"timeout=0 returned {[r.rollout_id for r in got]}, expected {expected}")
    run.step("wait_for_rollouts on an unknown id")
    unknown = "no-such-rollout-t4"
    try:
        await s.wait_for_rollouts(rollout_ids=[queued, unknown], timeout=0)
    except ValueError as error:
        if unknown not in str(error):
            problems.append(f"the error for an unknown id does not name it: {error}")
    except Exception as error:
        problems.append(f"an unknown id raised {_error_text(error)} instead of ValueError")
    else:
        problems.append("an unknown id was accepted")

    # Wake-up latency: another client completes one rollout at a time on a schedule; this loop waits
    # for each in turn. A lost wake-up shows as a wait that runs to its timeout.
    where = run.spread(1)[0]
    completer = asyncio.ensure_future(
        run.clients([Client(_complete_on_schedule, (work, 0.15, _WAKE_INTERVAL), where)])
    )
    woke: list[float] = []
    lost: list[str] = []
    round_timeout = run.bound(1.0)
    for index, (rollout_id, _) in enumerate(work):
        run.step(f"waiting for wake-up round {index}")
        got = await s.wait_for_rollouts(rollout_ids=[rollout_id], timeout=round_timeout)
        woke.append(time.monotonic())
        if [r.rollout_id for r in got] != [rollout_id]:
            lost.append(rollout_id)
            if len(lost) > _WAKE_ROUNDS // 2:
                break  # the median is lost already; do not sit out every timeout
    run.step("collecting the completing client")
    (outcome,) = await completer
    if outcome.error is not None:
        run.fail(
            expected="the completing client's update_attempt calls succeed",
            observed=_error_text(outcome.error),
            details="  traceback:\n" + _lines([outcome.traceback]),
        )
    latencies = sorted(max(0.0, w - b) for w, b in zip(woke, outcome.value, strict=False))
    median = statistics.median(latencies)
    bound = run.bound(_WAKE_BOUND)
    figures.insert(
        0,
        f"median wake-up {median * 1000:.1f} ms over {len(latencies)} transitions by a {outcome.where} "
        f"client (bound {bound * 1000:.0f} ms), max {latencies[-1] * 1000:.1f} ms, {len(lost)} lost",
    )
    if median > bound:
        problems.insert(
            0,
            f"wait_for_rollouts woke {median * 1000:.0f} ms (median) after another client's transition"
            + (f"; {len(lost)} waits ran to their {round_timeout:g} s timeout" if lost else ""),
        )

    # The caller's loop keeps turning while a wait is pending on a live rollout.
    run.step("a pending wait with a ticker on the caller's loop")
    with _Ticker() as ticker:
        began = time.monotonic()
        await s.wait_for_rollouts(rollout_ids=[running], timeout=2 * timeout)
        waited = time.monotonic() - began
    gap = max(ticker.gaps, default=waited)
    if gap > run.bound(_LOOP_BLOCK_BOUND):
        problems.append(f"the caller's loop was blocked {gap:.3f} s during a pending wait")
    if problems:
        run.fail(
            expected="wait_for_rollouts returns exactly the terminal rollouts in the order asked, wakes "
            f"within {bound * 1000:.0f} ms of the transition, honours its timeout, and never blocks "
            "the caller's loop",
            observed=_short(problems),
            figure="; ".join(figures),
        )


# -- T5 values --------------------------------------------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"next": value}
    return value


_RICH: dict[str, Any] = {
    "text": 'naïve café, 東京, émoji \U0001f680, NUL \x00, tab \t, quote " and backslash \\',
    "astral": "\U00010348\U0001f600",
    "numbers": [0, -1, 2**53 + 1, 2**63 - 1, 1.5, 0.1, -2.5e-8, 1e300],
    "flags": [True, False, None],
    "empty": [{}, [], ""],
    "keys": {"": "empty key", "with space": 1, "ünï": 2, "1": "a digit, as a string"},
    "nested": _nested(16),
    "long": "x" * 65536,
}
"""A valid value that exercises what JSON carries: Unicode beyond the BMP, NUL, big ints, floats, empty
containers and keys, nesting, a 64 KiB string."""

_POISONS: tuple[tuple[str, Any], ...] = (
    ("a lone surrogate", "\ud800"),
    ("NaN", float("nan")),
    ("bytes", b"\x00\xff"),
    ("300-deep nesting", _nested(300)),
    ("a non-str key", {1: "one"}),
)


def _canonical(value: Any) -> str | None:
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return None


def _same_value(written: Any, read: Any) -> bool:
    """Equal, and of the same JSON types (``1`` is not ``1.0`` nor ``True``)."""
    return bool(written == read) and _canonical(written) == _canonical(read) is not None


def _scribble(value: Any, depth: int = 0) -> None:
    """Mutate every container reachable from ``value`` (a model, dict or list) in place."""
    if depth > 40:
        return
    if hasattr(value, "model_fields"):
        for name in type(value).model_fields:
            _scribble(getattr(value, name), depth + 1)
    elif isinstance(value, dict):
        for item in list(value.values()):
            _scribble(item, depth + 1)
        value["scribbled by the caller"] = True
    elif isinstance(value, list):
        for item in value:
            _scribble(item, depth + 1)
        value.append("scribbled by the caller")


async def _everything(store: Any, resources_ids: Sequence[str]) -> dict[str, Any]:
    """Every rollout, attempt, span and resources snapshot the store shows, as plain data."""
    rollouts = await store.query_rollouts()
    state: dict[str, Any] = {"rollouts": [_dump(r) for r in rollouts]}
    for rollout in rollouts:
        state[f"attempts {rollout.rollout_id}"] = [
            _dump(a) for a in await store.query_attempts(rollout.rollout_id)
        ]
        state[f"spans {rollout.rollout_id}"] = [
            _dump(span) for span in await store.query_spans(rollout.rollout_id)
        ]
    state["latest resources"] = _dump(await store.get_latest_resources())
    for resources_id in resources_ids:
        state[f"resources {resources_id}"] = _dump(await store.get_resources_by_id(resources_id))
    return state


def _differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [key for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


def _span(rollout_id: str, attempt_id: str, name: str, attributes: dict[str, Any] | None = None) -> Any:
    from agentlightning.types import Span

    return Span(
        rollout_id=rollout_id, attempt_id=attempt_id, span_id=name, name=name, attributes=attributes or {}
    )


@store_contract("T5")
async def _values(run: StoreRun) -> None:
    """T5: rich values read back equal; outputs are copies; each poison write is refused naming the field,
    changes nothing, and leaves every read working."""
    import copy

    s = run.store
    problems: list[str] = []
    resources_ids: list[str] = []

    # Round trip of a valid value through every write and every read.
    run.step("writing the valid value everywhere")
    rollout = await s.enqueue_rollout(copy.deepcopy(_RICH), metadata=copy.deepcopy(_RICH))
    rid = rollout.rollout_id
    attempted = await s.dequeue_rollout()
    if attempted is None or attempted.rollout_id != rid:
        run.fail(
            expected="dequeue_rollout hands out the one queued rollout", observed=f"it returned {attempted!r}"
        )
    aid = attempted.attempt.attempt_id
    attempt = await s.update_attempt(rid, aid, metadata=copy.deepcopy(_RICH))
    span = await s.add_span(_span(rid, aid, "rich", copy.deepcopy(_RICH)))
    resources = await s.add_resources(copy.deepcopy(_RICH))
    resources_ids.append(resources.resources_id)
    run.step("reading the valid value back")
    got = await s.get_rollout_by_id(rid)
    reads: list[tuple[str, Any]] = [
        ("enqueue_rollout().input", rollout.input),
        ("enqueue_rollout().metadata", rollout.metadata),
        ("dequeue_rollout().input", attempted.input),
        ("get_rollout_by_id().input", None if got is None else got.input),
        ("get_rollout_by_id().metadata", None if got is None else got.metadata),
        ("query_rollouts()[0].input", (await s.query_rollouts(rollout_ids=[rid]))[0].input),
        ("update_attempt().metadata", attempt.metadata),
        ("get_latest_attempt().metadata", getattr(await s.get_latest_attempt(rid), "metadata", None)),
        ("add_span().attributes", span.attributes),
        ("query_spans()[0].attributes", (await s.query_spans(rid))[0].attributes),
        ("add_resources().resources", resources.resources),
        ("get_latest_resources().resources", getattr(await s.get_latest_resources(), "resources", None)),
        (
            "get_resources_by_id().resources",
            getattr(await s.get_resources_by_id(resources.resources_id), "resources", None),
        ),
    ]
    unequal = [label for label, value in reads if not _same_value(_RICH, value)]
    if unequal:
        problems.append(f"a valid value read back different through {', '.join(unequal)}")

    # Copies: scribbling on what the store returned, or on what the caller wrote, changes nothing.
    run.step("a reference snapshot before scribbling")
    reference = await _everything(s, resources_ids)
    written = {"list": [1, 2], "inner": {"k": "v"}}
    metadata = {"inner": {"k": "v"}}
    copied = await s.enqueue_rollout(written, metadata=metadata)
    attributes = {"inner": {"k": "v"}}
    kept_span = _span(rid, aid, "aliased", attributes)
    await s.add_span(kept_span)
    named = {"model": {"name": "m"}}
    kept_resources = await s.add_resources(named)
    resources_ids.append(kept_resources.resources_id)
    reference = await _everything(s, resources_ids)
    _scribble(written)
    _scribble(metadata)
    _scribble(attributes)
    _scribble(named)
    if _differences(reference, await _everything(s, resources_ids)):
        problems.append(
            "changing the caller's own dicts after the write changed the store: "
            + ", ".join(_differences(reference, await _everything(s, resources_ids)))
        )
        reference = await _everything(s, resources_ids)
    readers: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("get_rollout_by_id", lambda: s.get_rollout_by_id(copied.rollout_id)),
        ("query_rollouts", s.query_rollouts),
        ("wait_for_rollouts", lambda: s.wait_for_rollouts(rollout_ids=[rid, copied.rollout_id], timeout=0)),
        ("query_attempts", lambda: s.query_attempts(rid)),
        ("get_latest_attempt", lambda: s.get_latest_attempt(rid)),
        ("query_spans", lambda: s.query_spans(rid)),
        ("get_latest_resources", s.get_latest_resources),
        ("get_resources_by_id", lambda: s.get_resources_by_id(kept_resources.resources_id)),
        ("update_rollout", lambda: s.update_rollout(copied.rollout_id, metadata={"inner": {"k": "v"}})),
        ("update_attempt", lambda: s.update_attempt(rid, aid, metadata=copy.deepcopy(_RICH))),
        ("enqueue_rollout", lambda: s.enqueue_rollout({"fresh": [1]}, metadata={"fresh": {"k": 1}})),
        ("dequeue_rollout", s.dequeue_rollout),
        ("add_span", lambda: s.add_span(_span(rid, aid, "fresh", {"fresh": {"k": 1}}))),
        ("add_resources", lambda: s.add_resources({"fresh": {"k": 1}})),
    ]
    leaked = []
    for label, read in readers:
        run.step(f"scribbling on what {label} returned")
        returned = await read()
        if label == "add_resources":
            resources_ids.append(returned.resources_id)
        state = await _everything(s, resources_ids)
        _scribble(returned)
        after = await _everything(s, resources_ids)
        if after != state:
            leaked.append(f"{label} ({', '.join(_differences(state, after))})")
    if leaked:
        problems.append("mutating what these returned changed the store: " + "; ".join(leaked))

    # Poison: refused with ValueError naming the field, nothing changed, every read still works.
    run.step("preparing the poison writes")
    target = await s.enqueue_rollout({"poison": "target"})
    sites: list[tuple[str, str, Callable[[Any], Awaitable[Any]]]] = [
        ("enqueue_rollout(input=...)", "input", s.enqueue_rollout),
        ("enqueue_rollout(metadata=...)", "metadata", lambda p: s.enqueue_rollout("ok", metadata={"bad": p})),
        ("start_rollout(input=...)", "input", s.start_rollout),
        ("update_rollout(input=...)", "input", lambda p: s.update_rollout(target.rollout_id, input=p)),
        (
            "update_rollout(metadata=...)",
            "metadata",
            lambda p: s.update_rollout(target.rollout_id, metadata={"bad": p}),
        ),
        (
            "update_attempt(metadata=...)",
            "metadata",
            lambda p: s.update_attempt(rid, aid, metadata={"bad": p}),
        ),
        ("add_span(attributes=...)", "attributes", lambda p: s.add_span(_poisoned_span(rid, aid, p))),
        ("add_resources(...)", "resources", lambda p: s.add_resources({"bad": p})),
    ]
    refused_badly: list[str] = []
    mishandled: set[str] = set()
    for poison_name, poison in _POISONS:
        for site, field, write in sites:
            label = f"{site} with {poison_name}"
            run.step(f"a snapshot before {label}")
            try:
                before = await _everything(s, resources_ids)
            except Exception as error:
                refused_badly.append(f"after the writes before {label}, reading failed: {_error_text(error)}")
                break
            run.step(label)
            flagged = len(refused_badly)
            try:
                await write(poison)
            except ValueError as error:
                if field not in str(error):
                    refused_badly.append(f"{label}: the error does not name {field!r}: {error}")
            except Exception as error:
                refused_badly.append(f"{label}: raised {_error_text(error)} instead of ValueError")
            else:
                refused_badly.append(f"{label}: accepted")
            run.step(f"every read after {label}")
            try:
                after = await _everything(s, resources_ids)
            except Exception as error:
                refused_badly.append(f"{label}: a read failed afterwards: {_error_text(error)}")
                break
            changed = _differences(before, after)
            if changed:
                refused_badly.append(f"{label}: changed {', '.join(changed)}")
            if len(refused_badly) > flagged:
                mishandled.add(label)
        else:
            continue
        break
    if refused_badly:
        problems.append(f"{len(mishandled) or 1} poison writes mishandled: " + _short(refused_badly, 4))
    if problems:
        run.fail(
            expected="valid values read back equal whatever the path; what the store returns is a copy, "
            "and so is what it keeps; a lone surrogate, NaN, bytes, 300-deep nesting or a non-str key is "
            "refused with ValueError naming the field, changes nothing, and every read still works",
            observed=_short(problems, 3),
            figure=f"{len(mishandled)} of {len(_POISONS) * len(sites)} poison writes mishandled",
            details="  every problem:\n" + _lines([*problems, *refused_badly]),
        )


def _poisoned_span(rollout_id: str, attempt_id: str, poison: Any) -> Any:
    # Span validates on construction; a caller can still put anything in its attributes afterwards.
    span = _span(rollout_id, attempt_id, "poisoned")
    span.attributes["bad"] = poison
    return span


# -- T6 resources ------------------------------------------------------------------------------------------

_WRITERS = 3
_WRITES = 8
_READS = 40


async def _add_snapshots(store: Any, writer: int, count: int) -> list[tuple[str, float]]:
    """A client: publish ``count`` snapshots; their (id, create_time) in order."""
    added = []
    for index in range(count):
        update = await store.add_resources({"writer": writer, "n": index})
        added.append((update.resources_id, update.create_time))
    return added


async def _read_latest(store: Any, count: int) -> list[tuple[str, float]]:
    """A client: read the latest snapshot ``count`` times; (id, create_time) of each read."""
    seen = []
    for _ in range(count):
        latest = await store.get_latest_resources()
        if latest is not None:
            seen.append((latest.resources_id, latest.create_time))
        await asyncio.sleep(0)
    return seen


@store_contract("T6", process_clients=_WRITERS + 1)
async def _resources(run: StoreRun) -> None:
    """T6: every add is a new, later version and becomes the latest; old versions stay readable."""
    s = run.store
    problems: list[str] = []
    run.step("get_latest_resources on an empty store")
    if (empty := await s.get_latest_resources()) is not None:
        problems.append(f"a fresh store has latest resources {empty.resources_id!r}")
    contents = [{"model": "v1"}, {"model": "v2"}, {"model": "v1"}, {"model": "v3", "extra": [1, 2]}]
    updates = []
    for index, content in enumerate(contents):
        run.step(f"add_resources #{index + 1} {content}")
        update = await s.add_resources(content)
        updates.append(update)
        latest = await s.get_latest_resources()
        if latest is None or latest.resources_id != update.resources_id or latest.resources != content:
            problems.append(
                f"after add #{index + 1} ({update.resources_id}, {content}) the latest is "
                f"{None if latest is None else (latest.resources_id, latest.resources)}"
            )
    ids = [update.resources_id for update in updates]
    if len(set(ids)) != len(ids):
        problems.append(f"adds returned ids {ids}: an add did not create a new version")
    times = [update.create_time for update in updates]
    if times != sorted(times):
        problems.append(f"create_time went backwards across adds: {times}")
    for index, (update, content) in enumerate(zip(updates, contents, strict=True)):
        run.step(f"get_resources_by_id of add #{index + 1}")
        again = await s.get_resources_by_id(update.resources_id)
        if again is None or (again.resources_id, again.resources, again.create_time) != (
            update.resources_id,
            content,
            update.create_time,
        ):
            problems.append(f"version {update.resources_id} reads back as {_dump(again)}")
    if (ghost := await s.get_resources_by_id("no-such-resources-t6")) is not None:
        problems.append(f"an unknown id returned {ghost.resources_id!r}")

    run.step(f"{_WRITERS} writers and a reader at once")
    where = run.spread(_WRITERS + 1)
    clients = [Client(_add_snapshots, (writer, _WRITES), where[writer]) for writer in range(_WRITERS)]
    clients.append(Client(_read_latest, (_READS,), where[_WRITERS]))
    outcomes = await run.clients(clients)
    errors = [f"client {o.index} ({o.where}): {_error_text(o.error)}" for o in outcomes if o.error]
    if errors:
        run.fail(expected="every client's resources calls succeed", observed=_short(errors))
    added = [entry for outcome in outcomes[:_WRITERS] for entry in outcome.value]
    for outcome in outcomes[:_WRITERS]:
        stamps = [stamp for _, stamp in outcome.value]
        if stamps != sorted(stamps):
            problems.append(f"writer {outcome.index}'s versions went backwards: {stamps}")
    if len({rid for rid, _ in added}) != len(added):
        problems.append("concurrent adds returned the same id twice")
    seen = outcomes[_WRITERS].value
    stamps = [stamp for _, stamp in seen]
    if stamps != sorted(stamps):
        problems.append(f"a reader saw the latest version go backwards: {stamps}")
    order = [rid for index, (rid, _) in enumerate(seen) if index == 0 or seen[index - 1][0] != rid]
    if len(order) != len(set(order)):
        problems.append(f"a reader saw an older latest again: {order}")
    latest = await s.get_latest_resources()
    newest = max(stamp for _, stamp in added)
    if latest is None or latest.create_time != newest:
        problems.append(
            f"after the concurrent adds the latest is {_dump(latest)}, not a version created last ({newest})"
        )
    if problems:
        run.fail(
            expected="every add_resources is a new version no older than the previous one and becomes the "
            "latest; get_latest_resources never goes back; every version stays readable by id",
            observed=_short(problems),
            figure=f"{len(updates) + len(added)} versions added, "
            f"{len(seen)} latest reads by a concurrent reader",
        )


# -- T7 spans ----------------------------------------------------------------------------------------------

_SPAN_WRITERS = 3
_SPANS_EACH = 10


async def _add_spans(store: Any, rollout_id: str, attempt_id: str, writer: int, count: int) -> list[int]:
    """A client: add ``count`` spans (sequence id left to the store); the sequence ids it was given."""
    given = []
    for index in range(count):
        span = await store.add_span(_span(rollout_id, attempt_id, f"w{writer}-{index}"))
        given.append(span.sequence_id)
    return given


@store_contract("T7", process_clients=_SPAN_WRITERS)
async def _spans(run: StoreRun) -> None:
    """T7: spans only on existing attempts; sequence ids increasing per attempt; reads in order."""
    from agentlightning.types import RolloutConfig

    s = run.store
    problems: list[str] = []
    run.step("claiming a rollout with two attempts")
    rollout = await s.enqueue_rollout(
        {"case": "spans"}, config=RolloutConfig(max_attempts=2, retry_condition=["failed"])
    )
    rid = rollout.rollout_id
    first = await s.dequeue_rollout()
    if first is None or first.rollout_id != rid:
        run.fail(
            expected="dequeue_rollout hands out the one queued rollout", observed=f"it returned {first!r}"
        )
    first_a = first.attempt.attempt_id

    run.step("adding spans with sequence ids left to the store")
    given = [(await s.add_span(_span(rid, first_a, f"first-{i}"))).sequence_id for i in range(5)]
    if given != sorted(set(given)) or not all(isinstance(seq, int) and seq > 0 for seq in given):
        problems.append(f"spans added in turn to one attempt got sequence ids {given}")
    await s.update_attempt(rid, first_a, status="failed")
    second = await s.dequeue_rollout()
    if second is None or second.rollout_id != rid:
        run.fail(expected="the failed attempt's rollout is handed out again", observed=f"got {second!r}")
    second_a = second.attempt.attempt_id
    run.step("adding spans with explicit sequence ids out of order")
    for sequence in (5, 3, 9, 1):
        span = _span(rid, second_a, f"explicit-{sequence}")
        span.sequence_id = sequence
        await s.add_span(span)
    run.step("query_spans by rollout, attempt and latest")
    every = await s.query_spans(rid)
    by_first = await s.query_spans(rid, first_a)
    latest = await s.query_spans(rid, "latest")
    first_seqs = [span.sequence_id for span in by_first]
    latest_seqs = [span.sequence_id for span in latest]
    if [span.span_id for span in by_first] != [f"first-{i}" for i in range(5)] or first_seqs != given:
        problems.append(
            f"query_spans(attempt 1) returned {[(sp.span_id, sp.sequence_id) for sp in by_first]}"
        )
    if latest_seqs != [1, 3, 5, 9] or any(span.attempt_id != second_a for span in latest):
        problems.append(f"query_spans('latest') returned sequence ids {latest_seqs} (expected [1, 3, 5, 9])")
    if [(sp.attempt_id, sp.sequence_id) for sp in every] != [(first_a, q) for q in given] + [
        (second_a, q) for q in (1, 3, 5, 9)
    ]:
        problems.append(
            "query_spans(rollout) is not attempt by attempt in sequence order: "
            f"{[(sp.attempt_id[-6:], sp.sequence_id) for sp in every]}"
        )

    run.step("spans on attempts that do not exist")
    other = await s.enqueue_rollout({"case": "other"})
    before = {key: [_dump(span) for span in await s.query_spans(key)] for key in (rid, other.rollout_id)}
    refusals = [
        ("an unknown rollout", _span("no-such-rollout-t7", first_a, "ghost-1"), "no-such-rollout-t7"),
        ("an unknown attempt", _span(rid, "no-such-attempt-t7", "ghost-2"), "no-such-attempt-t7"),
        ("another rollout's attempt", _span(other.rollout_id, first_a, "ghost-3"), first_a),
    ]
    for label, ghost, named in refusals:
        run.step(f"add_span on {label}")
        try:
            await s.add_span(ghost)
        except ValueError as error:
            if named not in str(error):
                problems.append(f"a span on {label} was refused without naming {named!r}: {error}")
        except Exception as error:
            problems.append(f"a span on {label} raised {_error_text(error)} instead of ValueError")
        else:
            problems.append(f"a span on {label} was accepted")
    after = {key: [_dump(span) for span in await s.query_spans(key)] for key in (rid, other.rollout_id)}
    if after != before or await s.query_spans("no-such-rollout-t7"):
        problems.append("a refused span changed what query_spans returns")

    run.step(f"{_SPAN_WRITERS} clients adding spans to one attempt at once")
    where = run.spread(_SPAN_WRITERS)
    clients = [Client(_add_spans, (rid, second_a, w, _SPANS_EACH), where[w]) for w in range(_SPAN_WRITERS)]
    outcomes = await run.clients(clients)
    errors = [f"client {o.index} ({o.where}): {_error_text(o.error)}" for o in outcomes if o.error]
    if errors:
        run.fail(expected="every client's add_span calls succeed", observed=_short(errors))
    for outcome in outcomes:
        if outcome.value != sorted(set(outcome.value)):
            problems.append(f"client {outcome.index} got sequence ids out of order: {outcome.value}")
    assigned = [seq for outcome in outcomes for seq in outcome.value]
    if len(set(assigned)) != len(assigned) or set(assigned) & {1, 3, 5, 9}:
        duplicated = sorted(seq for seq, n in Counter([*assigned, 1, 3, 5, 9]).items() if n > 1)
        problems.append(f"concurrent spans of one attempt share sequence ids {duplicated[:8]}")
    final = await s.query_spans(rid, second_a)
    sequences = [span.sequence_id for span in final]
    if sequences != sorted(sequences) or len(final) != 4 + len(assigned):
        problems.append(
            f"query_spans returned {len(final)} spans (expected {4 + len(assigned)}), sequence ids "
            f"{'in' if sequences == sorted(sequences) else 'out of'} order"
        )
    if problems:
        run.fail(
            expected="spans attach only to existing attempts (ValueError naming the id otherwise, nothing "
            "stored), get increasing sequence ids per attempt, and come back in order",
            observed=_short(problems),
            figure=f"{len(given) + 4 + len(assigned)} spans on 2 attempts, {len(refusals)} refusals tried",
        )
