"""Kill the algorithm process mid-run with ``kill -9``, start it again on the same store file, and finish.

``run`` is one training run on a ``SqliteLightningStore`` file: the algorithm enqueues the tasks the store
does not hold yet (none after a restart, some if the first run died while enqueuing), then waits until
every rollout is finished; runners claim rollouts, work a little, report a span and succeed. Run it twice
on one file and the second run continues where the first stopped: queued rollouts stay queued, finished
ones are not run again, and the attempts the dead run held are ended by their ``unresponsive_seconds``
window and retried (``RolloutConfig``), so every rollout is completed exactly once.

``demo`` (the default) does the whole story: it starts ``run`` in a child process, watches the store file
(read-only SQLite queries, no sleeps on the run itself) until a third of the rollouts have succeeded,
``kill -9``s the child, starts ``run`` again, waits for it, and checks the file::

    python examples/kill_and_resume.py                  # demo, 120 tasks, in a temporary directory
    python examples/kill_and_resume.py demo --tasks 300 --store /tmp/run.db
    python examples/kill_and_resume.py run --store /tmp/run.db --tasks 300   # one run, resumable
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from agentlightning import ExecutionEvent, LightningStore, Trainer
from agentlightning.execution.events import wait_async
from agentlightning.store.sqlite import SqliteLightningStore
from agentlightning.types import RolloutConfig, Span

# A dead run's attempts are given up after 1.5 s of silence and retried, up to three attempts in all.
CONFIG = RolloutConfig(unresponsive_seconds=1.5, max_attempts=3, retry_condition=["unresponsive"])
_WATCH_BOUND = 120.0  # seconds: the demo gives up on a run that makes no progress for this long


@dataclass(frozen=True)
class Worker:
    """The runner bundle: claim, work for ``work_seconds``, report a span naming this process, succeed."""

    work_seconds: float = 0.02

    async def __call__(self, store: LightningStore, worker_id: int, event: ExecutionEvent) -> None:
        while not event.is_set():
            claimed = await store.dequeue_rollout()
            if claimed is None:
                await wait_async(event, timeout=0.01)
                continue
            await asyncio.sleep(self.work_seconds)
            await store.add_span(
                Span(
                    rollout_id=claimed.rollout_id,
                    attempt_id=claimed.attempt.attempt_id,
                    span_id=f"{claimed.attempt.attempt_id}-done",
                    name="done",
                    attributes={"pid": os.getpid(), "worker": worker_id},
                )
            )
            await store.update_attempt(claimed.rollout_id, claimed.attempt.attempt_id, status="succeeded")


@dataclass(frozen=True)
class Algorithm:
    """Enqueue the tasks the store lacks, then wait for every rollout to finish."""

    tasks: int

    async def __call__(self, store: LightningStore, event: ExecutionEvent) -> None:
        found = await store.query_rollouts()
        held = {rollout.input["task"] for rollout in found}
        succeeded = sum(1 for rollout in found if rollout.status == "succeeded")
        print(
            f"run {os.getpid()}: {len(found)} rollouts found in the store ({succeeded} succeeded), "
            f"enqueuing {self.tasks - len(held)}",
            flush=True,
        )
        for task in range(self.tasks):
            if task not in held:
                await store.enqueue_rollout({"task": task}, config=CONFIG)
        rollouts = await store.query_rollouts()
        ids = [rollout.rollout_id for rollout in rollouts]
        while not event.is_set():
            if len(await store.wait_for_rollouts(rollout_ids=ids, timeout=0.5)) == len(ids):
                break


def run(path: str, tasks: int, n_runners: int) -> int:
    store = SqliteLightningStore(path)
    try:
        Trainer(strategy="shm", n_runners=n_runners, store=store).fit(Algorithm(tasks), Worker())
    finally:
        asyncio.run(store.close())
    return 0


def _succeeded(path: str) -> int:
    """Rollouts succeeded so far, read from the file by a read-only connection (the run holds the store)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM rollouts WHERE status = 'succeeded'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not created yet


def _start(path: str, tasks: int, n_runners: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, __file__, "run", "--store", path, "--tasks", str(tasks)]
    return subprocess.Popen([*command, "--n-runners", str(n_runners)])


def check(path: str, tasks: int) -> list[str]:
    """What the finished store must show: every task once, each rollout succeeded by exactly one attempt."""

    async def read() -> list[str]:
        store = SqliteLightningStore(path)
        try:
            problems = []
            rollouts = await store.query_rollouts()
            inputs = sorted(rollout.input["task"] for rollout in rollouts)
            if inputs != list(range(tasks)):
                problems.append(f"the store holds tasks {inputs[:10]}..., not each of 0..{tasks - 1} once")
            retried = 0
            for rollout in rollouts:
                attempts = await store.query_attempts(rollout.rollout_id)
                succeeded = [a for a in attempts if a.status == "succeeded"]
                retried += len(attempts) > 1
                if rollout.status != "succeeded" or len(succeeded) != 1 or attempts[-1] is not succeeded[0]:
                    problems.append(
                        f"{rollout.rollout_id} ({rollout.status}): attempts {[a.status for a in attempts]}"
                    )
            print(f"{len(rollouts)} rollouts; {retried} of them retried after the kill")
            return problems
        finally:
            await store.close()

    return asyncio.run(read())


def demo(path: str, tasks: int, n_runners: int) -> int:
    first = _start(path, tasks, n_runners)
    try:
        watched = time.monotonic()
        while (done := _succeeded(path)) < tasks // 3:
            if first.poll() is not None:
                print(f"the first run ended (status {first.returncode}) before it could be killed")
                return 1
            if time.monotonic() - watched > _WATCH_BOUND:
                print(f"no progress in {_WATCH_BOUND:g} s ({done} succeeded)")
                return 1
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        print(f"kill -9 {first.pid} after {done} of {tasks} rollouts succeeded", flush=True)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait()
    second = _start(path, tasks, n_runners)
    try:
        status = second.wait(timeout=_WATCH_BOUND)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    if status != 0:
        print(f"the resumed run failed (status {status})")
        return 1
    problems = check(path, tasks)
    for problem in problems[:20]:
        print("  " + problem)
    if problems:
        print(f"{len(problems)} problems: not every rollout was completed exactly once")
        return 1
    print(f"every one of the {tasks} rollouts was completed exactly once")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=("demo", "run"), default="demo")
    parser.add_argument("--store", help="the store file (demo: a temporary one by default)")
    parser.add_argument("--tasks", type=int, default=120)
    parser.add_argument("--n-runners", type=int, default=2)
    args = parser.parse_args(argv)
    if args.tasks < 3:
        parser.error(f"--tasks must be >= 3, got {args.tasks}")
    if args.command == "run":
        if not args.store:
            parser.error("run needs --store PATH")
        return run(args.store, args.tasks, args.n_runners)
    if args.store:
        return demo(args.store, args.tasks, args.n_runners)
    with tempfile.TemporaryDirectory(prefix="kill-and-resume-") as directory:
        return demo(os.path.join(directory, "store.db"), args.tasks, args.n_runners)


if __name__ == "__main__":
    raise SystemExit(main())
