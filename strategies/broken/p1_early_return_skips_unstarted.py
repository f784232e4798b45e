"""P1 zoo: the stop is not set for a runner still starting when the algorithm returns.

Found only by P1 with its scheduling perturbation: a runner subscribes to the return broadcast the first
time it looks at its event, a moment after its thread starts, and every runner has looked long before
the algorithm can return, unless its start-up is delayed. Built on the public API only (the ``shm``
strategy, subclassed; ``ThreadingEvent``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from agentlightning import AlgorithmBundle, LightningStore, RunnerBundle
from agentlightning.execution.shared_memory import SharedMemoryExecutionStrategy
from strategies.broken.p1_late_runner_misses_stop import _Broadcast, _RunnerEvent

__all__ = ["BREAKS", "INTERLEAVING_ONLY", "P1EarlyReturnSkipsUnstarted"]

BREAKS = "P1"
INTERLEAVING_ONLY = True


class _LazyRunnerEvent(_RunnerEvent):
    """A runner's event that subscribes to the return broadcast when the runner first looks at it."""

    def __init__(self, shared: Any, broadcast: _Broadcast) -> None:
        super().__init__(shared, broadcast)
        self._subscribed = False

    def _subscribe(self) -> None:
        if not self._subscribed:
            self._subscribed = True
            self._broadcast.register(self._own)

    def is_set(self) -> bool:
        self._subscribe()
        return super().is_set()


class P1EarlyReturnSkipsUnstarted(SharedMemoryExecutionStrategy):
    """Broken for P1: when the algorithm returns, the stop reaches only the runners that have started.

    Defect: each runner gets an event of its own, subscribed to the algorithm's return broadcast on the
    runner's first look at it (saving a subscription for runners that never look); a runner begins once
    the algorithm has started, and subscribes once it has fetched
    the latest resources and looked at the queue; the algorithm's
    normal return sets the events subscribed so far. A runner whose start-up is still under way when the
    algorithm returns subscribes after the broadcast and never sees the stop: it is cancelled after the
    grace period (L2/L4 broken). Failures and Ctrl+C reach it through the shared event, so only a
    scheduling delay in a runner's start-up, with an algorithm that returns at once, shows it.
    """

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        broadcast = _Broadcast()
        algorithm_started = threading.Event()

        async def algorithm_then_broadcast(store: Any, event: Any) -> None:
            algorithm_started.set()
            await algorithm(store, event)
            if not event.is_set():  # the algorithm finished on its own: the broadcast carries the stop
                broadcast.broadcast()

        async def subscribed_runner(store: Any, worker_id: int, event: Any) -> None:
            # Runners begin once the algorithm has (or on a stop: nothing to wait for then).
            while not (algorithm_started.is_set() or event.is_set()):
                await asyncio.sleep(0.001)
            await _warm_up(store)
            await runner(store, worker_id, _LazyRunnerEvent(event, broadcast))

        super().execute(algorithm_then_broadcast, subscribed_runner, store)


async def _warm_up(store: Any) -> None:
    """What a runner loads before it works: the latest resources, the queue, the rollouts it may resume."""
    await store.get_latest_resources()
    await store.query_rollouts(status=["queuing", "requeuing"])
    await store.query_rollouts(status=["preparing", "running"])
