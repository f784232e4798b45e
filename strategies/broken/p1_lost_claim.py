"""P1 zoo: a rollout is lost when a runner returns before another one claims it.

Found only by P1 (random schedules): in the fixed checks no runner returns while rollouts wait in the
queue. Built on the public API only (the ``shm`` strategy, subclassed; the store's method names).
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from agentlightning import AlgorithmBundle, LightningStore, RunnerBundle
from agentlightning.execution.shared_memory import SharedMemoryExecutionStrategy

__all__ = ["P1LostClaim"]


class _Slots:
    """Worker-slot bookkeeping shared by every runner's store view."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.recycled = 0  # slots of runners that returned, waiting to be re-used


class _RunnerStore:
    """The store as one runner sees it: the strategy's store, with claims routed through worker slots."""

    def __init__(self, store: Any, slots: _Slots) -> None:
        self._store = store
        self._slots = slots

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def dequeue_rollout(self, *args: Any, **kwargs: Any) -> Any:
        claimed = await self._store.dequeue_rollout(*args, **kwargs)
        if claimed is None:
            return None
        with self._slots.lock:
            if self._slots.recycled:
                # DEFECT: the claim is booked to the recycled slot of a runner that has returned, and
                # nobody works that slot: the rollout stays claimed and is never completed.
                self._slots.recycled -= 1
                return None
        return claimed


class P1LostClaim(SharedMemoryExecutionStrategy):
    """Broken for P1: after a runner returns, the next rollout another runner claims is lost.

    Defect: when a runner returns normally its worker slot is recycled, and the next claim made by any
    runner is booked to that slot, where nobody completes it: the rollout is dequeued but never finished
    (S1 broken: the algorithm waits for it in vain). Only an interleaving where a runner returns while
    rollouts are still to be claimed shows it; the fixed checks never have a runner return early while
    the queue is in use.
    """

    # Runners always get the slot-routing view of the store, never the caller's object (S6 is n/a).
    capability_manifest: ClassVar[dict[str, Any]] = {
        **SharedMemoryExecutionStrategy.capability_manifest,
        "supports_unmanaged_store": False,
    }

    def __init__(
        self,
        n_runners: int = 1,
        graceful_delay: float = 1.0,
        join_timeout: float = 5.0,
        managed_store: bool | None = None,
    ) -> None:
        super().__init__(
            n_runners=n_runners,
            graceful_delay=graceful_delay,
            join_timeout=join_timeout,
            managed_store=managed_store,
        )

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        slots = _Slots()

        async def slotted_runner(store: Any, worker_id: int, event: Any) -> None:
            await runner(_RunnerStore(store, slots), worker_id, event)  # type: ignore[arg-type]  # a stand-in store
            with slots.lock:
                slots.recycled += 1

        super().execute(algorithm, slotted_runner, store)
