"""Bundles for the T3 tests of every strategy (module level: picklable under fork, spawn, forkserver).

``ClaimThenDie``: a runner claims a rollout and dies holding it (SIGKILL, an exception, a normal return, or
stuck in blocking code). ``AwaitGivenUp``: the algorithm enqueues that rollout and waits, while it still
runs, until the claim is given up (the rollout failed or requeued). ``KeepAlive`` / ``WatchHeartbeats``: a
runner holds a claim without writing anything while the algorithm, which is also the store's injected
clock, moves the time on only after each heartbeat it sees: without heartbeats the store would have
expired the attempt many times over. Handshakes go through ``journal.txt`` in a scratch directory
(bounded polls, no sleeps standing in for synchronisation).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ipc_bundles import journal, read_journal

from agentlightning.execution.events import wait_async
from agentlightning.execution.processes import WorkerDied
from agentlightning.types import RolloutConfig

HANG = 30.0
RETRYING: dict[str, Any] = {"max_attempts": 2, "retry_condition": ["unresponsive"]}
"""A rollout config (keywords) whose unresponsive attempts are retried once."""
PROCESS_DEATHS: list[tuple[str, dict[str, Any], str, type[BaseException]]] = [
    ("sigkill", {}, "failed", WorkerDied),
    ("sigkill", RETRYING, "requeuing", WorkerDied),
    ("raise", {}, "failed", RuntimeError),
]
"""How a runner process ends holding a claim, its rollout's config, what the rollout then is, and what
``execute()`` raises (F1: ``WorkerDied``; E2: the runner's own error)."""


async def until(what: str, check: Callable[[], Any]) -> Any:
    """Poll ``check`` (async callable) until it returns something truthy; bounded by ``HANG``."""
    deadline = time.monotonic() + HANG
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"never saw {what}")
        await asyncio.sleep(0.002)


@dataclass(frozen=True)
class AwaitGivenUp:
    """Enqueue one rollout (``config``: ``RolloutConfig`` keywords) and wait until it is no longer
    claimed; journal ``algorithm saw <status>``."""

    directory: str
    config: dict[str, Any] = field(default_factory=dict)

    async def __call__(self, store: Any, event: Any) -> None:
        rollout = await store.enqueue_rollout({"task": 1}, config=RolloutConfig(**self.config))
        journal(self.directory, f"algorithm enqueued {rollout.rollout_id}")

        async def settled() -> str | None:
            current = await store.get_rollout_by_id(rollout.rollout_id)
            return current.status if current.status in ("failed", "requeuing", "succeeded") else None

        journal(self.directory, f"algorithm saw {await until('the claim given up', settled)}")


@dataclass(frozen=True)
class ClaimThenDie:
    """Runner 0 claims the rollout, then ends as ``how`` says: ``sigkill`` | ``raise`` | ``return`` |
    ``block`` (sync code until ``release`` is set: a thread strategy must leave it behind). Other
    runners wait for the stop."""

    directory: str
    how: str
    release: threading.Event | None = None

    async def __call__(self, store: Any, worker_id: int, event: Any) -> None:
        if worker_id != 0:
            await wait_async(event, HANG)
            return
        claimed = await until("a rollout to claim", store.dequeue_rollout)
        journal(self.directory, f"runner claimed {claimed.rollout_id} {claimed.attempt.attempt_id}")
        if self.how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.how == "raise":
            raise RuntimeError("runner died holding a claim")
        elif self.how == "block":
            assert self.release is not None
            self.release.wait(HANG)
        elif self.how != "return":
            raise AssertionError(f"unknown ending {self.how!r}")


@dataclass(frozen=True)
class KeepAlive:
    """Runner 0 claims the rollout and then writes nothing until the algorithm says ``finish``; it then
    reports success and journals the status the store gave its attempt."""

    directory: str

    async def __call__(self, store: Any, worker_id: int, event: Any) -> None:
        if worker_id != 0:
            await wait_async(event, HANG)
            return
        claimed = await until("a rollout to claim", store.dequeue_rollout)
        journal(self.directory, "runner claimed")

        async def told() -> bool:
            return "algorithm finish" in read_journal(self.directory)

        await until("the algorithm's finish", told)
        attempt = await store.update_attempt(
            claimed.rollout_id, claimed.attempt.attempt_id, status="succeeded"
        )
        journal(self.directory, f"runner finished {attempt.status}")


@dataclass
class WatchHeartbeats:
    """The algorithm for ``KeepAlive``, and the store's clock (``clock``: hand it to the store): after each
    of ``rounds`` heartbeats it sees, it moves the time on by 90% of the window, then tells the runner to
    finish.

    Runs in the calling process only (it holds the clock), as the algorithm does under every strategy.
    """

    directory: str
    window: float
    rounds: int = 4
    now: float = 1000.0
    heartbeats: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def __call__(self, store: Any, event: Any) -> None:
        config = RolloutConfig(unresponsive_seconds=self.window)
        rollout = await store.enqueue_rollout({"task": 1}, config=config)

        async def claimed() -> bool:
            return "runner claimed" in read_journal(self.directory)

        await until("the runner's claim", claimed)
        for _ in range(self.rounds):

            async def new_heartbeat() -> float | None:
                attempt = await store.get_latest_attempt(rollout.rollout_id)
                assert attempt is not None and attempt.status in ("preparing", "running"), attempt
                beat = attempt.last_heartbeat_time
                return beat if beat is not None and beat not in self.heartbeats else None

            self.heartbeats.append(await until("a heartbeat", new_heartbeat))
            self.now += 0.9 * self.window  # the silence since that heartbeat stays under the window
        journal(self.directory, "algorithm finish")
        done = await store.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=HANG)
        journal(self.directory, f"algorithm saw {done[0].status if done else 'nothing'}")


def check_given_up(
    strategy: Any,
    directory: str,
    how: str,
    config: dict[str, Any],
    expected: str,
    error: type[BaseException] | None,
) -> None:
    """Runner 0 of ``strategy`` claims a rollout and ends as ``how`` says: the algorithm sees the rollout
    ``expected`` (failed or requeued) while it still runs, ``execute()`` raises ``error`` (``None``: returns),
    and the store shows the one attempt ``unresponsive``."""
    from agentlightning.store.memory import InMemoryLightningStore

    store = InMemoryLightningStore()
    raised: BaseException | None = None
    try:
        strategy.execute(AwaitGivenUp(directory, config), ClaimThenDie(directory, how), store)
    except Exception as exc:
        raised = exc
    if error is None:
        assert raised is None, f"execute() raised {raised!r}"
    else:
        assert isinstance(raised, error), f"execute() did not raise {error.__name__}: {raised!r}"
    assert f"algorithm saw {expected}" in read_journal(directory), read_journal(directory)
    assert_given_up(store, expected)


def check_kept_alive(strategy: Any, directory: str) -> None:
    """A live runner that writes nothing is kept claimed by its heartbeats through ``strategy``."""
    from agentlightning.store.memory import InMemoryLightningStore

    algorithm = WatchHeartbeats(directory, window=0.3)
    strategy.execute(algorithm, KeepAlive(directory), InMemoryLightningStore(clock=algorithm.clock))
    assert len(algorithm.heartbeats) == algorithm.rounds
    assert algorithm.now - 1000.0 > 3 * algorithm.window  # far past the window without a write of its own
    lines = read_journal(directory)
    assert "runner finished succeeded" in lines and "algorithm saw succeeded" in lines, lines


def assert_given_up(store: Any, expected: str) -> None:
    """After ``execute()``: the one rollout ended up ``expected`` and its one attempt ``unresponsive``."""

    async def check() -> None:
        rollouts = await store.query_rollouts()
        assert [r.status for r in rollouts] == [expected], rollouts
        attempts = await store.query_attempts(rollouts[0].rollout_id)
        assert [a.status for a in attempts] == ["unresponsive"], attempts

    asyncio.run(check())
