"""P1 zoo: a rollout claimed at the moment another runner joins or returns is dropped, and stays claimed.

Found only by P1 with its scheduling perturbation: making and booking a claim takes a few microseconds,
and a runner joining or returning within them is rare unless the claim or the other runner is delayed.
Built on the public API only (the ``shm`` strategy, subclassed; the store's method names).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, ClassVar

from agentlightning import AlgorithmBundle, LightningStore, RunnerBundle
from agentlightning.execution.shared_memory import SharedMemoryExecutionStrategy
from strategies.broken.p1_early_return_skips_unstarted import _warm_up

__all__ = ["BREAKS", "INTERLEAVING_ONLY", "P1ClaimLostToReturningRunner"]

BREAKS = "P1"
INTERLEAVING_ONLY = True


class _SlotTable:
    """The runners' worker slots; its generation changes whenever a runner returns and its slot goes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0
        self.claimed = threading.Event()  # wakes the slot keeper: a claim is being booked

    def changed(self) -> None:
        """A runner joined or returned: slots were handed out or recycled."""
        with self.lock:
            self.generation += 1


class _RunnerStore:
    """The store as one runner sees it: claims are booked to the runner's slot as they are made."""

    def __init__(self, store: Any, slots: _SlotTable) -> None:
        self._store = store
        self._slots = slots

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def dequeue_rollout(self, *args: Any, **kwargs: Any) -> Any:
        generation = self._slots.generation
        claimed = await self._store.dequeue_rollout(*args, **kwargs)
        if claimed is None:
            return None
        self._slots.claimed.set()
        with self._slots.lock:
            if self._slots.generation != generation:
                # DEFECT: the slot table changed while the claim was made; the booking is given up as
                # stale, and with it the rollout, which stays claimed by a runner that drops it.
                return None
        return claimed


class P1ClaimLostToReturningRunner(SharedMemoryExecutionStrategy):
    """Broken for P1: a rollout claimed while another runner joins or returns is dropped, never completed.

    Defect: each claim is booked to its runner's worker slot, against the slot table as it was when the
    claim was asked for; a runner joining (once it has warmed up) or returning changes the table. A claim
    whose booking finds the table changed is given up as stale, but the rollout it claimed is neither
    completed nor released (S1 broken: the algorithm waits for it in vain). Only a runner joining or
    returning while another's claim is being made shows it.
    """

    # Runners always get the slot-booking view of the store, never the caller's object (S6 is n/a).
    capability_manifest: ClassVar[dict[str, Any]] = {
        **SharedMemoryExecutionStrategy.capability_manifest,
        "supports_unmanaged_store": False,
    }

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        slots = _SlotTable()
        algorithm_started = threading.Event()

        async def started_algorithm(store: Any, event: Any) -> None:
            algorithm_started.set()
            await algorithm(store, event)

        async def booked_runner(store: Any, worker_id: int, event: Any) -> None:
            # Runners begin once the algorithm has, and join the slot table once warmed up.
            while not (algorithm_started.is_set() or event.is_set()):
                await asyncio.sleep(0.001)
            await _warm_up(store)
            slots.changed()
            try:
                await runner(_RunnerStore(store, slots), worker_id, event)  # type: ignore[arg-type]  # a stand-in store
            finally:
                slots.changed()

        super().execute(started_algorithm, booked_runner, store)
