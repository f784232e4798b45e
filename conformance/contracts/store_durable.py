"""T8 durable: the store's owner is SIGKILLed at points the kit chooses; reopened, the store holds every
acknowledged write and no partial one, and the attempts in flight are then recovered by T3's policy.

Planned only for stores declaring ``durable: True`` (``plan.py`` makes it ``n/a`` otherwise). For each kill
point of ``conformance.store_crash`` (between claim and completion, during a burst of small writes, during
large commits) a child process owns a fresh store, writes through the check's access path and journals
every call and acknowledgement; the kit kills it at its handshake, reopens the store in the sandbox with
the factory and the store's own ``reopen_options()``, and compares. Then it claims and completes whatever
is left: every rollout must finish, no completed one may be handed out again, and every attempt the dead
owner held must have been ended by the store (``unresponsive`` after the short window the child gave it).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from conformance.store_crash import KILL_POINTS, MAX_ATTEMPTS, read_log
from conformance.store_job import StoreRun, store_contract
from conformance.target import build_store, make_target

__all__: list[str] = []

_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_ACTIVE = frozenset({"preparing", "running"})
_SILENCE = 0.3  # seconds (scaled): the liveness window of every attempt the child claims
_RECOVERY_BOUND = 15.0  # seconds (scaled) for the reopened store to let every rollout finish
_HANDSHAKE_BOUND = 30.0  # seconds (scaled) for the child to reach its kill point


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


async def _line(stream: Any, bound: float) -> str:
    return str(await asyncio.wait_for(asyncio.to_thread(stream.readline), bound)).rstrip("\n")


async def _kill_at(run: StoreRun, point: str, directory: str) -> tuple[dict[str, Any], str]:
    """Run the child to ``point`` and SIGKILL it there: its reopen options and the ack log's path."""
    target = run.job.target
    log = os.path.join(directory, "acks.log")
    spec = {
        "factory": target.store_factory,
        "options": dict(target.store_options),
        "path": run.job.path,
        "thread_safe": bool(run.capabilities["thread_safe"]),
        "point": point,
        "kill_after": run.random.randint(8, 40),
        "log": log,
        "silence": _SILENCE * run.scale,
    }
    # TMPDIR: a factory's temporary store lands in the check's directory, removed with it.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(entry for entry in sys.path if entry), TMPDIR=directory)
    stderr_path = os.path.join(directory, "stderr")
    with open(stderr_path, "w", encoding="utf-8") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "conformance.store_crash", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    reopen: dict[str, Any] | None = None
    try:
        wanted = "claimed" if point == "claimed" else "burst"
        while True:
            try:
                line = await _line(child.stdout, run.bound(_HANDSHAKE_BOUND))
            except asyncio.TimeoutError:
                line = "(no handshake within the bound)"
            if line.startswith("open "):
                reopen = json.loads(line[len("open ") :])
                continue
            if line == wanted:
                break
            if line == "claimed":  # the set-up is done; the burst's handshake comes next
                continue
            with open(stderr_path, encoding="utf-8") as handle:
                tail = handle.read()[-3000:]
            run.fail(
                expected=f"the store's owner reaches the kill point {point!r} and is killed there",
                observed=f"it stopped before ({line or 'its stdout closed'}); its stderr:\n{tail}",
            )
    finally:
        child.kill()  # SIGKILL: no close(), no atexit, no flush of anything not already committed
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert reopen is not None
    return reopen, log


async def _settled(store: Any, rid: str) -> tuple[Any, list[Any]]:
    """A rollout and its attempts as of one moment: the store's own liveness sweep may end an attempt
    between two reads, and ending the latest attempt always moves its rollout on, so a rollout that reads
    the same before and after its attempts were read was not changed in between."""
    for _ in range(20):
        before = await store.get_rollout_by_id(rid)
        attempts = await store.query_attempts(rid)
        after = await store.get_rollout_by_id(rid)
        if before == after:
            break
    return after, attempts


async def _compare(store: Any, records: list[dict[str, Any]]) -> list[str]:
    """What the reopened store must hold: every ack, and nothing partial or from nowhere."""
    problems: list[str] = []
    rollouts = {r.rollout_id: r for r in await store.query_rollouts()}
    attempts: dict[str, Any] = {}
    for rid in rollouts:
        rollouts[rid], attempts[rid] = await _settled(store, rid)
    for ack in (record for record in records if record["kind"] == "ack"):
        op, rid = ack["op"], str(ack.get("rid", ""))
        if op == "enqueue":
            rollout = rollouts.get(rid)
            if rollout is None:
                problems.append(f"acknowledged enqueue of {rid} is missing")
            elif _canonical(rollout.input) != _canonical(ack["input"]):
                problems.append(f"rollout {rid} has input {rollout.input!r}, not the acknowledged one")
        elif op == "claim":
            if ack["aid"] not in {a.attempt_id for a in attempts.get(rid, [])}:
                problems.append(f"acknowledged claim {ack['aid']} of {rid} is missing")
        elif op == "span":
            spans = await store.query_spans(rid, ack["aid"]) if rid in rollouts else []
            if not any(s.span_id == ack["span"] and s.sequence_id == ack["seq"] for s in spans):
                problems.append(
                    f"acknowledged span {ack['span']} (sequence {ack['seq']}) of {ack['aid']} is missing"
                )
        elif op == "complete":
            statuses = {a.attempt_id: a.status for a in attempts.get(rid, [])}
            rollout = rollouts.get(rid)
            if statuses.get(ack["aid"]) != "succeeded" or rollout is None or rollout.status != "succeeded":
                shown = rollout.status if rollout is not None else "missing"
                problems.append(
                    f"acknowledged completion of {rid} is lost: rollout {shown}, attempt "
                    f"{statuses.get(ack['aid'], 'missing')}"
                )
        elif op == "resources":
            update = await store.get_resources_by_id(ack["id"])
            if update is None or _canonical(update.resources) != _canonical(ack["value"]):
                problems.append(f"acknowledged resources {ack['id']} are missing or changed")
    invoked = {_canonical(record["input"]) for record in records if record["op"] == "enqueue"}
    for rid, rollout in rollouts.items():
        if _canonical(rollout.input) not in invoked:
            problems.append(f"rollout {rid} with input {rollout.input!r} was never enqueued")
        mine = attempts[rid]
        active = [a.attempt_id for a in mine if a.status in _ACTIVE]
        if rollout.status in _ACTIVE and (not mine or mine[-1].status not in _ACTIVE):
            problems.append(f"rollout {rid} is {rollout.status} without an active attempt (a partial claim)")
        if rollout.status not in _ACTIVE and active:
            problems.append(f"rollout {rid} is {rollout.status} but attempts {active} are still active")
        ids = {a.attempt_id for a in mine}
        strays = [s.span_id for s in await store.query_spans(rid) if s.attempt_id not in ids]
        if strays:
            problems.append(f"spans {strays} of rollout {rid} belong to no attempt")
    return problems


async def _recover(run: StoreRun, store: Any, records: list[dict[str, Any]]) -> tuple[list[str], int]:
    """Finish everything the dead owner left (claims and completions); T3 must end its attempts."""
    problems: list[str] = []
    completed = {r["rid"] for r in records if r["kind"] == "ack" and r["op"] == "complete"}
    held = {
        r["aid"]: r["rid"]
        for r in records
        if r["kind"] == "ack" and r["op"] == "claim" and r["rid"] not in completed
    }
    claims = 0
    deadline = run.loop.time() + run.bound(_RECOVERY_BOUND)
    while True:
        attempted = await store.dequeue_rollout()
        if attempted is not None:
            claims += 1
            if attempted.rollout_id in completed:
                problems.append(
                    f"rollout {attempted.rollout_id}, completed before the kill, was handed out again"
                )
            await store.update_attempt(attempted.rollout_id, attempted.attempt.attempt_id, status="succeeded")
            continue
        rollouts = await store.query_rollouts()
        if all(r.status in _TERMINAL for r in rollouts):
            break
        if run.loop.time() > deadline:
            stuck = sorted(f"{r.rollout_id}:{r.status}" for r in rollouts if r.status not in _TERMINAL)
            problems.append(
                f"{len(stuck)} rollouts not finished {run.bound(_RECOVERY_BOUND):g} s after reopening "
                f"(attempts of the dead owner not ended by the store?): {stuck[:6]}"
            )
            return problems, claims
        await asyncio.sleep(0.02)
    for aid, rid in held.items():
        statuses = {a.attempt_id: a.status for a in await store.query_attempts(rid)}
        if statuses.get(aid) in _ACTIVE:
            problems.append(f"attempt {aid} held by the dead owner is still {statuses[aid]}")
    for rollout in await store.query_rollouts():
        if rollout.status == "succeeded":
            continue
        tried = [a.status for a in await store.query_attempts(rollout.rollout_id)]
        if len(tried) < MAX_ATTEMPTS:  # the child's config retries every failure up to MAX_ATTEMPTS
            problems.append(f"rollout {rollout.rollout_id} ended {rollout.status} after attempts {tried}")
    return problems, claims


@store_contract("T8")
async def _durable(run: StoreRun) -> None:
    """T8: kill the owner at each kill point; reopen; every ack present, nothing partial; recovery by T3."""
    problems: list[str] = []
    figures: list[str] = []
    for point in KILL_POINTS:
        with tempfile.TemporaryDirectory(prefix="t8-") as directory:
            run.step(f"running the store's owner to the kill point {point!r}")
            reopen, log = await _kill_at(run, point, directory)
            records = read_log(log)
            acks = sum(1 for record in records if record["kind"] == "ack")
            run.step(f"reopening the store killed at {point!r} with {reopen}")
            target = run.job.target
            options = {**dict(target.store_options), **reopen}
            store = build_store(make_target("", store_factory=target.store_factory, store_options=options))
            try:
                found = await _compare(store, records)
                run.step(f"finishing what the owner killed at {point!r} left")
                recovered, claims = await _recover(run, store, records)
            finally:
                await store.close()
            problems.extend(f"[{point}] {problem}" for problem in [*found, *recovered])
            figures.append(
                f"{point}: {acks} acks, {len(records) - acks} calls, {claims} claims after reopening"
            )
    if problems:
        run.fail(
            expected="after a SIGKILL at each kill point the reopened store holds every acknowledged write "
            "and no partial one, and ends the dead owner's attempts by their RolloutConfig (T3)",
            observed=f"{len(problems)} problems: " + "; ".join(problems[:8]),
            figure="; ".join(figures),
        )
