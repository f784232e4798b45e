"""Concurrent claiming from several threads (each with its own loop): nothing handed out twice, nothing lost.

This is the store-level half of contract S1 (exactly-once): a strategy can only pass S1 if its store does.

Hypothesis chooses how many rollouts and threads, the retry budget, and which attempts fail; an oracle
derives each rollout's expected attempts and final status from that plan alone, whatever the schedule.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentlightning.store.base import LightningStore
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.threaded import ThreadedLightningStore
from agentlightning.types import RolloutConfig

_HANG_BOUND = 30.0
_SETTLE_BOUND = 10.0  # generous: a healthy example settles in milliseconds


def _expected(
    n_rollouts: int, max_attempts: int, failing: set[tuple[int, int]]
) -> dict[int, tuple[int, str]]:
    """Per rollout index: (attempts it gets, final status) under the plan."""
    outcome = {}
    for index in range(n_rollouts):
        sequence = 1
        while (index, sequence) in failing and sequence < max_attempts:
            sequence += 1
        status = "failed" if (index, sequence) in failing else "succeeded"
        outcome[index] = (sequence, status)
    return outcome


def _claim_concurrently(
    store: LightningStore, ids: list[str], n_threads: int, failing: set[tuple[int, int]]
) -> list[tuple[str, int, str]]:
    index_of = {rid: i for i, rid in enumerate(ids)}
    claims: list[tuple[str, int, str]] = []
    claims_lock = threading.Lock()
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    stop = threading.Event()

    async def worker() -> None:
        barrier.wait(_HANG_BOUND)
        give_up = time.monotonic() + _SETTLE_BOUND
        while not stop.is_set():
            attempted = await store.dequeue_rollout()
            if attempted is None:
                # Empty for now; finished only when every rollout is terminal (others may still requeue).
                done = await store.wait_for_rollouts(rollout_ids=ids, timeout=0)
                if len(done) == len(ids):
                    return
                if time.monotonic() > give_up:
                    missing = sorted(set(ids) - {r.rollout_id for r in done})
                    raise AssertionError(f"rollouts lost (never terminal, not in the queue): {missing}")
                await asyncio.sleep(0)
                continue
            sequence = attempted.attempt.sequence_id
            with claims_lock:
                claims.append((attempted.rollout_id, sequence, attempted.attempt.attempt_id))
            failed = (index_of[attempted.rollout_id], sequence) in failing
            await store.update_attempt(
                attempted.rollout_id, attempted.attempt.attempt_id, status="failed" if failed else "succeeded"
            )

    def target() -> None:
        try:
            asyncio.run(worker())
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=target, name=f"claimer-{i}") for i in range(n_threads)]
    # Switch threads as often as the interpreter allows, so claims really interleave.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(_HANG_BOUND)
    finally:
        sys.setswitchinterval(interval)
    assert not any(t.is_alive() for t in threads), "a claiming thread hung"
    if errors:
        raise errors[0]
    return claims


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_rollouts=st.integers(1, 40),
    n_threads=st.integers(2, 4),
    max_attempts=st.integers(1, 3),
    failing=st.sets(st.tuples(st.integers(0, 39), st.integers(1, 3)), max_size=60),
    wrapped=st.booleans(),
)
def test_concurrent_claims_are_exactly_once_and_lose_nothing(
    n_rollouts: int, n_threads: int, max_attempts: int, failing: set[tuple[int, int]], wrapped: bool
) -> None:
    inner = InMemoryLightningStore()
    store: LightningStore = ThreadedLightningStore(inner) if wrapped else inner
    config = RolloutConfig(max_attempts=max_attempts, retry_condition=["failed"])

    async def enqueue() -> list[str]:
        return [(await store.enqueue_rollout(i, config=config)).rollout_id for i in range(n_rollouts)]

    ids = asyncio.run(enqueue())
    claims = _claim_concurrently(store, ids, n_threads, failing)

    # Exactly once per attempt: no (rollout, sequence) pair and no attempt id handed out twice.
    pairs = Counter((rid, seq) for rid, seq, _ in claims)
    assert all(count == 1 for count in pairs.values()), pairs.most_common(3)
    assert len({aid for _, _, aid in claims}) == len(claims)
    # Nothing lost: every rollout got exactly the attempts the plan implies, and ended as it implies.
    expected = _expected(n_rollouts, max_attempts, failing)
    per_rollout = Counter(rid for rid, _, _ in claims)
    final = asyncio.run(store.query_rollouts(rollout_ids=ids))
    for index, rid in enumerate(ids):
        attempts, status = expected[index]
        assert per_rollout[rid] == attempts, (index, per_rollout[rid], attempts)
        assert final[index].status == status
    assert asyncio.run(store.dequeue_rollout()) is None
    assert inner._waiters == {}
