"""T8's victim: a child process that owns a durable store, writes to it, and is SIGKILLed by the kit.

``python -m conformance.store_crash SPEC`` builds the store with the user's factory, opens the access path
the check runs on, and writes: a set-up (rollouts enqueued with a short liveness window, claimed, some
completed with a span, a resources version), then a burst of mixed writes from several tasks at once
(enqueue, claim, span, completion, resources; with large values when the kill point is a commit). Every
write is journaled to the ack log twice, ``call`` before the store is asked and ``ack`` once it answered,
with ``os.write`` on an ``O_APPEND`` descriptor, so a line is either whole or absent when the process
dies. At the kill point the child prints one handshake line on stdout (``claimed`` once the set-up is
acknowledged, ``burst`` after the seed-chosen number of burst acks) and goes on writing: the kit kills it
at that line, never after a sleep. The first line is ``open {reopen options}``, what reopens the file.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from conformance.store_paths import open_path
from conformance.target import build_store, make_target

__all__ = ["KILL_POINTS", "MAX_ATTEMPTS", "main", "read_log"]

KILL_POINTS = ("claimed", "write-burst", "commit")
"""Where T8 kills the owner: between claim and completion (nothing else in flight), during a burst of
small writes from four tasks, and during a burst of large ones (commits long enough to be hit)."""

MAX_ATTEMPTS = 2  # every rollout is retried once, on failed or unresponsive
_SETUP = 6  # rollouts claimed by the set-up; the first half completed
_WRITERS = 4


def read_log(path: str) -> list[dict[str, Any]]:
    """The ack log's records (a torn last line, which ``os.write`` never leaves, would be dropped)."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


class _Log:
    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, kind: str, op: str, **fields: Any) -> None:
        os.write(self._fd, (json.dumps({"kind": kind, "op": op, **fields}) + "\n").encode())


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _program(spec: dict[str, Any]) -> None:
    from agentlightning.types import RolloutConfig, Span

    target = make_target("", store_factory=spec["factory"], store_options=spec["options"])
    store = build_store(target)
    reopen = getattr(store, "reopen_options", None)
    if not callable(reopen):
        raise TypeError(
            f"{type(store).__qualname__} declares durable: True but has no reopen_options() naming what "
            "opens the same store again"
        )
    _say("open " + json.dumps(reopen()))
    log = _Log(spec["log"])
    config = RolloutConfig(
        unresponsive_seconds=spec["silence"],
        max_attempts=MAX_ATTEMPTS,
        retry_condition=["unresponsive", "failed"],
    )
    pad = "x" * (65536 if spec["point"] == "commit" else 16)
    async with open_path(spec["path"], store, thread_safe=spec["thread_safe"]) as path:
        s = path.store

        async def enqueue(value: dict[str, Any]) -> None:
            log.write("call", "enqueue", input=value)
            rollout = await s.enqueue_rollout(value, config=config)
            log.write("ack", "enqueue", rid=rollout.rollout_id, input=value)

        async def claim() -> Any:
            log.write("call", "claim")
            attempted = await s.dequeue_rollout()
            if attempted is not None:
                log.write("ack", "claim", rid=attempted.rollout_id, aid=attempted.attempt.attempt_id)
            return attempted

        async def span(rid: str, aid: str, name: str) -> None:
            log.write("call", "span", rid=rid, aid=aid, span=name)
            added = await s.add_span(
                Span(rollout_id=rid, attempt_id=aid, span_id=name, attributes={"p": pad})
            )
            log.write("ack", "span", rid=rid, aid=aid, span=name, seq=added.sequence_id)

        async def complete(rid: str, aid: str) -> None:
            log.write("call", "complete", rid=rid, aid=aid)
            await s.update_attempt(rid, aid, status="succeeded")
            log.write("ack", "complete", rid=rid, aid=aid)

        async def resources(value: dict[str, Any]) -> None:
            log.write("call", "resources", value=value)
            update = await s.add_resources(value)
            log.write("ack", "resources", id=update.resources_id, value=value)

        for n in range(_SETUP):
            await enqueue({"setup": n})
        for n in range(_SETUP):
            attempted = await claim()
            if attempted is None:
                raise RuntimeError("the set-up's rollouts could not all be claimed")
            if n < _SETUP // 2:
                await span(attempted.rollout_id, attempted.attempt.attempt_id, f"setup-{n}")
                await complete(attempted.rollout_id, attempted.attempt.attempt_id)
        await resources({"setup": {"version": 0}})
        _say("claimed")
        if spec["point"] == "claimed":
            await asyncio.Event().wait()  # killed here, with the last claims in flight

        acks = 0

        async def writer(index: int) -> None:
            nonlocal acks
            k = 0
            while True:
                await enqueue({"writer": index, "k": k, "pad": pad})
                attempted = await claim()
                if attempted is not None:
                    rid, aid = attempted.rollout_id, attempted.attempt.attempt_id
                    await span(rid, aid, f"w{index}-{k}")
                    if k % 2 == 0:
                        await complete(rid, aid)
                if k % 5 == 0:
                    await resources({"writer": index, "k": k})
                k += 1
                acks += 1
                if acks == spec["kill_after"]:
                    _say("burst")

        await asyncio.gather(*(writer(i) for i in range(_WRITERS)))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m conformance.store_crash SPEC_JSON", file=sys.stderr)
        return 2
    asyncio.run(_program(json.loads(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
