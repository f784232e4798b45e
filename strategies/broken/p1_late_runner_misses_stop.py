"""P1 zoo: the stop never reaches a runner that starts after the algorithm has returned.

Found only by P1 (random schedules): every fixed check lets all bundles start before the algorithm
returns. Built on the public API only (the ``shm`` strategy, subclassed; ``ThreadingEvent``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from agentlightning import AlgorithmBundle, LightningStore, RunnerBundle, ThreadingEvent
from agentlightning.execution.shared_memory import SharedMemoryExecutionStrategy

__all__ = ["P1LateRunnerMissesStop"]

_WAIT_SLICE = 0.01


class _Broadcast:
    """The runners' own stop events, registered as each runner starts; set when the algorithm returns."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[ThreadingEvent] = []
        self.algorithm_returned = False

    def register(self, event: ThreadingEvent) -> None:
        with self.lock:
            self.events.append(event)

    def broadcast(self) -> None:
        with self.lock:
            self.algorithm_returned = True
            for event in self.events:  # DEFECT: a runner that registers later is never told
                event.set()


class _RunnerEvent:
    """What a runner sees: its own event, plus the shared one for failures and Ctrl+C (not for a return)."""

    def __init__(self, shared: Any, broadcast: _Broadcast) -> None:
        self._own = ThreadingEvent()
        self._shared = shared
        self._broadcast = broadcast

    def set(self) -> None:
        self._own.set()
        self._shared.set()

    def clear(self) -> None:
        self._own.clear()

    def is_set(self) -> bool:
        # The shared event is also set when the algorithm returns; that stop is meant to come through
        # the broadcast, so it is ignored here once the algorithm has returned.
        return self._own.is_set() or (self._shared.is_set() and not self._broadcast.algorithm_returned)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._own.wait(_WAIT_SLICE)
        return True


class P1LateRunnerMissesStop(SharedMemoryExecutionStrategy):
    """Broken for P1: the event is not seen by a runner that starts after the algorithm returned.

    Defect: runners start with a ramp-up (runner ``i`` waits ``ramp_up * (i + 1)`` seconds) and each gets a
    stop event of its own, registered when it starts; the algorithm's normal return broadcasts the stop
    to the runners registered so far. A runner that starts after that broadcast polls forever and is
    only cancelled after the grace period (L2/L4 broken). Failures and Ctrl+C reach every runner through
    the shared event (as does any stop requested before the algorithm returned), and every fixed
    L/K/E/R/S check starts all bundles before the algorithm returns on its own,
    so only an interleaving where the algorithm finishes before the last runner has started shows it.
    """

    def __init__(
        self,
        n_runners: int = 1,
        graceful_delay: float = 1.0,
        join_timeout: float = 5.0,
        managed_store: bool | None = None,
        ramp_up: float = 0.25,
    ) -> None:
        super().__init__(
            n_runners=n_runners,
            graceful_delay=graceful_delay,
            join_timeout=join_timeout,
            managed_store=managed_store,
        )
        self.ramp_up = float(ramp_up)

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        broadcast = _Broadcast()

        async def algorithm_then_broadcast(store: Any, event: Any) -> None:
            await algorithm(store, event)
            if not event.is_set():  # the algorithm finished on its own: the broadcast carries the stop
                broadcast.broadcast()

        async def ramped_runner(store: Any, worker_id: int, event: Any) -> None:
            import asyncio

            await asyncio.sleep(self.ramp_up * (worker_id + 1))
            own = _RunnerEvent(event, broadcast)
            broadcast.register(own._own)
            await runner(store, worker_id, own)

        super().execute(algorithm_then_broadcast, ramped_runner, store)
