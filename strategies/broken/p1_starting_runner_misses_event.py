"""P1 zoo: a runner misses the event set while it is starting up.

Found only by P1 with its scheduling perturbation: a runner's start-up (take the event's state, announce
itself, warm up, subscribe to later sets) takes a few hundred microseconds, and a stop landing within
them is rare unless the start-up is delayed. Built on the public API only (the ``shm`` strategy,
subclassed; ``ThreadingEvent``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from agentlightning import AlgorithmBundle, LightningStore, RunnerBundle, ThreadingEvent
from agentlightning.execution.shared_memory import SharedMemoryExecutionStrategy
from strategies.broken.p1_early_return_skips_unstarted import _warm_up

__all__ = ["BREAKS", "INTERLEAVING_ONLY", "P1StartingRunnerMissesEvent"]

BREAKS = "P1"
INTERLEAVING_ONLY = True


class _Relay:
    """Forwards the strategy's event to the runners' own events, subscribed as each runner starts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.subscribers: list[ThreadingEvent] = []
        self.stopped = False
        self.shared: Any = None  # the strategy's event, once a bundle has been handed it
        self.algorithm_started = threading.Event()
        self.up = threading.Event()  # some runner is up

    def subscribe(self, own: ThreadingEvent) -> None:
        with self.lock:
            self.subscribers.append(own)

    def forward(self) -> None:
        with self.lock:
            self.stopped = True
            subscribers = list(self.subscribers)
        for own in subscribers:
            own.set()

    def run(self, done: threading.Event) -> None:
        """The relay thread: wait for the strategy's event, then forward it (until ``done``)."""
        while not done.is_set():
            if self.shared is None:
                done.wait(0.005)
            elif self.shared.wait(0.05):
                self.forward()
                return


class _RunnerEvent:
    """What a runner sees: an event of its own, set by the relay (``set()`` stops everyone)."""

    def __init__(self, shared: Any, own: ThreadingEvent) -> None:
        self._shared = shared
        self._own = own

    def set(self) -> None:
        self._shared.set()

    def clear(self) -> None:
        self._own.clear()

    def is_set(self) -> bool:
        return self._own.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._own.wait(timeout)


class P1StartingRunnerMissesEvent(SharedMemoryExecutionStrategy):
    """Broken for P1: the event set while a runner is starting up never reaches it.

    Defect: each runner gets an event of its own, which a relay thread sets once the strategy's event
    is set. Runners begin once the algorithm has; a starting runner takes the relay's state (a runner
    starting after the stop sees it at once), announces that it is up, warms up (the latest resources,
    the queue) and only then subscribes to the relay: a stop forwarded in between is missed, and the
    runner polls until it is cancelled after the grace period (L2/L4 broken).
    """

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        relay = _Relay()
        done = threading.Event()

        async def relayed_algorithm(store: Any, event: Any) -> None:
            relay.shared = event
            relay.algorithm_started.set()
            await algorithm(store, event)

        async def relayed_runner(store: Any, worker_id: int, event: Any) -> None:
            relay.shared = event
            while not (relay.algorithm_started.is_set() or event.is_set()):
                await asyncio.sleep(0.001)
            own = ThreadingEvent()
            if relay.stopped:
                own.set()
            relay.up.set()
            await _warm_up(store)
            relay.subscribe(own)  # DEFECT: a stop forwarded since relay.stopped was read is missed
            await runner(store, worker_id, _RunnerEvent(event, own))

        thread = threading.Thread(target=relay.run, args=(done,), name="p1-relay", daemon=True)
        thread.start()
        try:
            super().execute(relayed_algorithm, relayed_runner, store)
        finally:
            done.set()
            thread.join()
