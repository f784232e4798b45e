"""Scripted, picklable bundles and a cross-process journal for the ``cs`` strategy tests.

Bundles run in worker processes (fork, spawn, forkserver), so they are module-level dataclasses driven by a
script of steps. Every process appends ``monotonic<TAB>who<TAB>what<TAB>pid`` lines to its own file in the
journal directory (one ``write`` per line, ``O_APPEND``); readers merge the files in time order. Waiting on
the journal is a bounded poll of those files: the handshake other processes use to say "I got here".
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlightning.execution.events import ExecutionEvent, wait_async
from agentlightning.store.base import LightningStore
from agentlightning.types import Span

HANG = 30.0

Step = tuple[Any, ...]


class ScriptedError(Exception):
    """An error a script raises on purpose (importable by every process, so it crosses as itself)."""


@dataclass(frozen=True)
class Journal:
    directory: str

    def write(self, who: str, what: str) -> None:
        line = f"{time.monotonic():.6f}\t{who}\t{what}\t{os.getpid()}\n".encode()
        fd = os.open(
            Path(self.directory, f"journal-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND
        )
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def entries(self) -> list[tuple[float, str, str, int]]:
        rows = []
        for path in Path(self.directory).glob("journal-*.log"):
            for line in path.read_text().splitlines():
                stamp, who, what, pid = line.split("\t")
                rows.append((float(stamp), who, what, int(pid)))
        return sorted(rows)

    def has(self, who: str, what: str) -> bool:
        return any(w == who and x == what for _, w, x, _ in self.entries())

    def pids(self) -> set[int]:
        return {pid for _, _, _, pid in self.entries()}

    def timeline(self) -> str:
        return "\n".join(f"{t:.3f} {who:<10} {what} (pid {pid})" for t, who, what, pid in self.entries())

    async def wait_for(self, who: str, what: str, bound: float = HANG) -> None:
        deadline = time.monotonic() + bound
        while not self.has(who, what):
            if time.monotonic() > deadline:
                raise TimeoutError(f"journal never saw {who!r} {what!r}:\n{self.timeline()}")
            await asyncio.sleep(0.002)

    def wait_for_sync(self, who: str, what: str, bound: float = HANG) -> None:
        deadline = time.monotonic() + bound
        while not self.has(who, what):
            if time.monotonic() > deadline:
                raise TimeoutError(f"journal never saw {who!r} {what!r}:\n{self.timeline()}")
            time.sleep(0.002)


async def _perform(
    step: Step, who: str, journal: Journal, store: LightningStore, event: ExecutionEvent
) -> None:
    kind = step[0]
    if kind == "note":
        journal.write(who, step[1])
    elif kind == "wait_event":
        seen = await wait_async(event, step[1] if len(step) > 1 else HANG)
        journal.write(who, "saw stop" if seen else "no stop")
    elif kind == "wait_journal":
        await journal.wait_for(step[1], step[2])
    elif kind == "set_event":
        event.set()
        journal.write(who, "set event")
    elif kind == "event_state":
        journal.write(who, f"event={event.is_set()}")
    elif kind == "raise":
        raise ScriptedError(step[1])
    elif kind == "raise_value_error":
        raise ValueError(step[1])
    elif kind == "ki":
        raise KeyboardInterrupt
    elif kind == "system_exit":
        raise SystemExit(step[1])
    elif kind == "sleep":  # awaits, ignoring the event (L6)
        await asyncio.sleep(step[1])
    elif kind == "swallow_cancellation":  # ends only when nobody waits for it any more (K5's last rung)
        deadline = time.monotonic() + step[1]
        journal.write(who, "swallowing")
        while time.monotonic() < deadline:
            try:
                await asyncio.sleep(deadline - time.monotonic())
            except asyncio.CancelledError:
                journal.write(who, "swallowed a cancellation")
            except KeyboardInterrupt:  # a Ctrl+C that landed in this code: not a way out either
                journal.write(who, "swallowed an interrupt")
    elif kind == "block":  # stuck in sync code, no await (L7)
        time.sleep(step[1])
    elif kind == "ignore_sigint":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    elif kind == "kill_self":
        os.kill(os.getpid(), step[1])
    elif kind == "enqueue_and_wait":
        ids = [(await store.enqueue_rollout({"i": i})).rollout_id for i in range(step[1])]
        done = await store.wait_for_rollouts(rollout_ids=ids, timeout=HANG)
        journal.write(who, f"completed {sum(r.status == 'succeeded' for r in done)}/{len(ids)}")
    elif kind == "work":  # claim and complete rollouts until the stop, with a span each
        while not event.is_set():
            claimed = await store.dequeue_rollout()
            if claimed is None:
                await wait_async(event, 0.005)
                continue
            await store.add_span(
                Span(
                    rollout_id=claimed.rollout_id,
                    attempt_id=claimed.attempt.attempt_id,
                    span_id=f"{who}-span",
                )
            )
            await store.update_attempt(claimed.rollout_id, claimed.attempt.attempt_id, status="succeeded")
            journal.write(who, f"done {claimed.rollout_id}")
    elif kind == "bad_store_call":
        await store.update_attempt("ro-does-not-exist", "latest", status="succeeded")
    elif kind == "store_type":
        inner = getattr(store, "inner", None)
        within = "" if inner is None else f" inner={type(inner).__name__}"
        journal.write(who, f"store={type(store).__name__}{within}")
    else:
        raise AssertionError(f"unknown step {step!r}")


async def _run_script(
    steps: Sequence[Step], who: str, journal: Journal, store: LightningStore, event: ExecutionEvent
) -> None:
    journal.write(who, "start")
    try:
        for step in steps:
            await _perform(step, who, journal, store, event)
    except asyncio.CancelledError:
        journal.write(who, "cancelled")
        raise
    except BaseException as exc:
        journal.write(who, f"exception {type(exc).__name__}")
        raise
    finally:
        journal.write(who, "finally")
    journal.write(who, "end")


@dataclass(frozen=True)
class ScriptedAlgorithm:
    journal: Journal
    steps: tuple[Step, ...] = ()

    async def __call__(self, store: LightningStore, event: ExecutionEvent) -> None:
        await _run_script(self.steps, "algorithm", self.journal, store, event)


@dataclass(frozen=True)
class ScriptedRunner:
    """``steps`` for every runner, or ``per_worker[worker_id]`` when given for that worker."""

    journal: Journal
    steps: tuple[Step, ...] = ()
    per_worker: dict[int, tuple[Step, ...]] = field(default_factory=dict)

    async def __call__(self, store: LightningStore, worker_id: int, event: ExecutionEvent) -> None:
        steps = self.per_worker.get(worker_id, self.steps)
        await _run_script(steps, f"runner {worker_id}", self.journal, store, event)
