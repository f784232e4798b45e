"""A small ``Trainer``: builds the strategy and the store from configuration and runs the bundles."""

from __future__ import annotations

from typing import Any

from agentlightning.execution.base import AlgorithmBundle, ExecutionStrategy, RunnerBundle
from agentlightning.store.base import LightningStore
from agentlightning.trainer.init_utils import build_component
from agentlightning.trainer.registry import ExecutionStrategyRegistry

__all__ = ["Trainer"]


def _default_store() -> LightningStore:
    from agentlightning.store.memory import InMemoryLightningStore

    return InMemoryLightningStore()


class Trainer:
    """Runs an algorithm and its runners under an execution strategy.

    ``strategy`` takes anything ``build_component`` does (default ``"shm"``); ``n_runners`` is handed to
    strategies that accept it unless the strategy spec sets it itself; ``store`` defaults to a fresh
    in-memory store.
    """

    def __init__(
        self,
        strategy: Any = None,
        n_runners: int | None = None,
        store: LightningStore | None = None,
    ) -> None:
        if n_runners is not None and (isinstance(n_runners, bool) or not isinstance(n_runners, int)):
            raise ValueError(f"n_runners must be an integer >= 1, got {n_runners!r}")
        if n_runners is not None and n_runners < 1:
            raise ValueError(f"n_runners must be an integer >= 1, got {n_runners!r}")
        if store is not None and not isinstance(store, LightningStore):
            raise TypeError(f"store must be a LightningStore, got {type(store).__name__} {store!r}")
        optional = {"n_runners": n_runners} if n_runners is not None else {}
        self.strategy: ExecutionStrategy = build_component(
            strategy,
            expected_type=ExecutionStrategy,  # type: ignore[type-abstract]  # only used for isinstance
            registry=ExecutionStrategyRegistry,
            default="shm",
            optional_kwargs=optional,
            name="strategy",
        )
        self.store: LightningStore = store if store is not None else _default_store()

    def fit(self, algorithm: AlgorithmBundle, runner: RunnerBundle) -> None:
        """Run ``algorithm`` and ``runner`` to completion under the strategy (blocking)."""
        if not callable(algorithm):
            raise TypeError(f"algorithm must be an async callable, got {algorithm!r}")
        if not callable(runner):
            raise TypeError(f"runner must be an async callable, got {runner!r}")
        self.strategy.execute(algorithm, runner, self.store)
