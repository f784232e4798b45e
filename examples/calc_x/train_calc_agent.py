"""A training-style loop, offline: an algorithm hands arithmetic tasks to agents and aggregates rewards.

The algorithm publishes a resource snapshot, enqueues ``--tasks`` arithmetic problems, follows their
completion with a progress bar, then reads every rollout's reward span and prints a summary. Each runner
is a deterministic "agent" that solves the problems, wrong on purpose for a configurable share of them
(``--error-rate``, decided by a hash of the task and ``--seed``, so runs are reproducible).

    python examples/calc_x/train_calc_agent.py --strategy shm --n-runners 2 --tasks 500
    python examples/calc_x/train_calc_agent.py --strategy ipc --error-rate 0.2
    python examples/calc_x/train_calc_agent.py --strategy my_pkg.MyStrategy
    python examples/calc_x/train_calc_agent.py --strategy cs --strategy-option role=runner ...

Each rollout may be tried three times (an attempt that failed, or whose runner was lost, is retried),
and the summary says how many needed more than one. ``--strategy-option KEY=VALUE`` (repeatable; VALUE
is JSON when it parses) passes constructor options: ``three_hosts.py`` runs the algorithm and runners
on separate (namespace) hosts this way.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import operator
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agentlightning import ExecutionEvent, LightningStore, Trainer
from agentlightning.execution.events import wait_async
from agentlightning.types import RolloutConfig, Span

_OPERATIONS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}


def make_tasks(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` arithmetic problems, the same for the same seed."""
    rng = random.Random(seed)
    return [
        {"a": rng.randint(0, 99), "b": rng.randint(0, 99), "op": rng.choice(sorted(_OPERATIONS))}
        for _ in range(count)
    ]


@dataclass(frozen=True)
class CalcAgent:
    """The runner bundle: claims problems, answers them, and reports a reward span per rollout.

    A module-level dataclass, so it pickles for process strategies under any start method.
    """

    error_rate: float = 0.1
    seed: int = 0
    think_seconds: float = 0.0  # per problem: stands in for a model's latency
    claimed_mark: str = ""  # a file created once a runner holds its first claim ("" : none)

    def answer(self, task: dict[str, Any]) -> int:
        truth = _OPERATIONS[task["op"]](task["a"], task["b"])
        digest = hashlib.sha256(f"{self.seed}:{task['a']}{task['op']}{task['b']}".encode()).digest()
        wrong = int.from_bytes(digest[:4], "big") / 2**32 < self.error_rate
        return truth + 1 if wrong else truth

    async def __call__(self, store: LightningStore, worker_id: int, event: ExecutionEvent) -> None:
        while not event.is_set():
            claimed = await store.dequeue_rollout()
            if claimed is None:
                await wait_async(event, timeout=0.005)
                continue
            task = claimed.input
            if self.claimed_mark:
                Path(self.claimed_mark).touch()
            if self.think_seconds:
                await asyncio.sleep(self.think_seconds)
            answer = self.answer(task)
            truth = _OPERATIONS[task["op"]](task["a"], task["b"])
            await store.add_span(
                Span(
                    rollout_id=claimed.rollout_id,
                    attempt_id=claimed.attempt.attempt_id,
                    span_id=f"{claimed.attempt.attempt_id}-reward",
                    name="reward",
                    status="ok",
                    attributes={
                        "answer": answer,
                        "reward": 1.0 if answer == truth else 0.0,
                        "worker": worker_id,
                    },
                )
            )
            await store.update_attempt(claimed.rollout_id, claimed.attempt.attempt_id, status="succeeded")


@dataclass(frozen=True)
class CalcAlgorithm:
    """The algorithm bundle: enqueue the problems, follow progress, aggregate rewards."""

    tasks: tuple[dict[str, Any], ...]
    progress: bool = True

    async def __call__(self, store: LightningStore, event: ExecutionEvent) -> None:
        await store.add_resources({"agent": {"name": "calc-agent", "version": 1}})
        config = RolloutConfig(max_attempts=3, retry_condition=["failed", "unresponsive"])
        ids = [
            (await store.enqueue_rollout(input=task, mode="train", config=config)).rollout_id
            for task in self.tasks
        ]
        with tqdm(total=len(ids), unit="rollout", disable=not self.progress, file=sys.stderr) as bar:
            done = 0
            while done < len(ids) and not event.is_set():
                finished = await store.wait_for_rollouts(rollout_ids=ids, timeout=0.1)
                bar.update(len(finished) - done)
                done = len(finished)
        rewards = []
        for rollout_id in ids:
            spans = await store.query_spans(rollout_id, "latest")
            rewards.extend(float(span.attributes["reward"]) for span in spans if span.name == "reward")
        workers = {span.attributes["worker"] for rid in ids for span in await store.query_spans(rid)}
        accuracy = sum(rewards) / len(rewards) if rewards else 0.0
        print(f"completed {len(rewards)}/{len(ids)} rollouts; accuracy {accuracy:.3f}")
        print(f"runners that did the work: {sorted(workers)}")
        tries = [len(await store.query_attempts(rollout_id)) for rollout_id in ids]
        statuses = [(await store.get_rollout_by_id(rollout_id)) for rollout_id in ids]
        succeeded = sum(1 for rollout in statuses if rollout is not None and rollout.status == "succeeded")
        print(
            f"rollouts: {len(ids)} enqueued, {succeeded} succeeded, {sum(t > 1 for t in tries)} retried "
            f"({sum(tries)} attempts)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--strategy", default="shm", help="shm, ipc, cs, or a dotted path to a strategy class"
    )
    parser.add_argument("--n-runners", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--error-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--think-seconds", type=float, default=0.0, help="each problem's latency")
    parser.add_argument(
        "--strategy-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a constructor option of the strategy (repeatable; VALUE is JSON when it parses)",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--claimed-mark", default="", metavar="PATH", help="create PATH once a runner holds a claim"
    )
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error(f"--tasks must be >= 1, got {args.tasks}")
    if not 0.0 <= args.error_rate <= 1.0:
        parser.error(f"--error-rate must be within [0, 1], got {args.error_rate}")

    if args.think_seconds < 0:
        parser.error(f"--think-seconds must be >= 0, got {args.think_seconds}")
    options = {}
    for option in args.strategy_option:
        key, sep, value = option.partition("=")
        if not sep or not key:
            parser.error(f"--strategy-option must look like KEY=VALUE, got {option!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    strategy: Any = {"type": args.strategy, **options} if options else args.strategy
    trainer = Trainer(strategy=strategy, n_runners=args.n_runners)
    algorithm = CalcAlgorithm(tuple(make_tasks(args.tasks, args.seed)), progress=not args.no_progress)
    agent = CalcAgent(
        error_rate=args.error_rate,
        seed=args.seed,
        think_seconds=args.think_seconds,
        claimed_mark=args.claimed_mark,
    )
    started = time.perf_counter()
    trainer.fit(algorithm, agent)
    elapsed = time.perf_counter() - started
    print(
        f"strategy {type(trainer.strategy).__name__} with {args.n_runners} runner(s): "
        f"{args.tasks} tasks in {elapsed:.2f} s ({args.tasks / elapsed:,.0f} rollouts/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
