"""The Trainer builds the strategy and store from configuration and runs the bundles."""

from __future__ import annotations

from typing import Any

import pytest

from agentlightning import ExecutionEvent, LightningStore, Trainer
from agentlightning.execution.shared_memory import SharedMemoryExecutionStrategy
from agentlightning.store.memory import InMemoryLightningStore


async def _algorithm(store: LightningStore, event: ExecutionEvent) -> None:
    rollout = await store.enqueue_rollout(input={"x": 1})
    done = await store.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=30)
    assert [r.status for r in done] == ["succeeded"]


async def _runner(store: LightningStore, worker_id: int, event: ExecutionEvent) -> None:
    from agentlightning.execution.events import wait_async

    while not event.is_set():
        claimed = await store.dequeue_rollout()
        if claimed is None:
            await wait_async(event, timeout=0.01)
            continue
        await store.update_attempt(claimed.rollout_id, claimed.attempt.attempt_id, status="succeeded")


def test_defaults_to_shm_and_a_fresh_in_memory_store() -> None:
    trainer = Trainer()
    assert isinstance(trainer.strategy, SharedMemoryExecutionStrategy)
    assert isinstance(trainer.store, InMemoryLightningStore)


def test_n_runners_reaches_the_strategy_unless_the_spec_sets_it() -> None:
    assert Trainer(n_runners=3).strategy.n_runners == 3
    assert Trainer(strategy={"type": "shm", "n_runners": 2}, n_runners=3).strategy.n_runners == 2


def test_fit_runs_the_bundles_against_the_given_store() -> None:
    store = InMemoryLightningStore()
    trainer = Trainer(strategy="shm", n_runners=2, store=store)
    trainer.fit(_algorithm, _runner)
    import asyncio

    rollouts = asyncio.run(store.query_rollouts())
    assert [r.status for r in rollouts] == ["succeeded"]


@pytest.mark.parametrize("n_runners", [0, -1, 1.5, "2", True])
def test_bad_n_runners_is_named(n_runners: Any) -> None:
    with pytest.raises(ValueError, match="n_runners"):
        Trainer(n_runners=n_runners)


def test_bad_store_and_bundles_are_named() -> None:
    with pytest.raises(TypeError, match="store must be a LightningStore"):
        Trainer(store={"not": "a store"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="algorithm must be an async callable"):
        Trainer().fit(42, _runner)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="runner must be an async callable"):
        Trainer().fit(_algorithm, None)  # type: ignore[arg-type]


def test_unknown_strategy_alias_is_named() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        Trainer(strategy="nope")
