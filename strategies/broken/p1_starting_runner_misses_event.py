"""P1 zoo: a runner misses an ``event.set()`` made while it is starting up.

Found only by P1 with its scheduling perturbation: a runner's start-up (take the event's state, announce
itself, subscribe to later sets) takes a few microseconds, and a set landing within them is rare unless
the start-up is delayed. Built on the public API only (the ``shm`` strategy, subclassed;
``ThreadingEvent``).
"""

from __future__ import annotations

import threading
from typing import Any

from agentlightning import AlgorithmBundle, LightningStore, RunnerBundle, ThreadingEvent
from agentlightning.execution.shared_memory import SharedMemoryExecutionStrategy

__all__ = ["BREAKS", "INTERLEAVING_ONLY", "P1StartingRunnerMissesEvent"]

BREAKS = "P1"
INTERLEAVING_ONLY = True


class _Relay:
    """Forwards a bundle's ``event.set()`` to the runners' own events, subscribed as each runner starts."""

    def __init__(self, shared: Any) -> None:
        self.shared = shared
        self.lock = threading.Lock()
        self.subscribers: list[ThreadingEvent] = []
        self.set_by_a_bundle = False
        self.up = threading.Event()  # some runner is up (what the strategy's monitor waits for)

    def subscribe(self, own: ThreadingEvent) -> None:
        with self.lock:
            self.subscribers.append(own)

    def set(self) -> None:
        with self.lock:
            self.set_by_a_bundle = True
            subscribers = list(self.subscribers)
        self.shared.set()
        for own in subscribers:
            own.set()


class _BundleEvent:
    """What a bundle sees: ``set()`` goes through the relay; a runner's own event is made on first look."""

    def __init__(self, relay: _Relay, runner: bool) -> None:
        self._relay = relay
        self._own: ThreadingEvent | None = None if runner else relay.shared

    def _started(self) -> ThreadingEvent:
        if self._own is None:  # the runner's start-up, on its first look at the event
            own = ThreadingEvent()
            if self._relay.set_by_a_bundle:
                own.set()  # a runner starting after a set sees it at once
            self._relay.up.set()
            self._relay.subscribe(own)  # DEFECT: a set relayed since the state was taken is missed
            self._own = own
        return self._own

    def set(self) -> None:
        self._relay.set()

    def clear(self) -> None:
        self._started().clear()

    def is_set(self) -> bool:
        own = self._started()
        # Failures, Ctrl+C and the algorithm's return set the strategy's event directly: seen as is.
        return own.is_set() or (self._relay.shared.is_set() and not self._relay.set_by_a_bundle)

    def wait(self, timeout: float | None = None) -> bool:
        return self._started().wait(timeout) or self.is_set()


class P1StartingRunnerMissesEvent(SharedMemoryExecutionStrategy):
    """Broken for P1: an ``event.set()`` made while a runner is starting up never reaches it.

    Defect: a bundle's ``event.set()`` is relayed to an event of each runner's own, subscribed when the
    runner first looks at it: the runner takes the relay's state (a runner starting after a set sees it
    at once), announces that it is up, and only then subscribes. A set relayed in between is missed, and
    the runner polls until it is cancelled after the grace period (L2/L4 broken). Failures, Ctrl+C and
    the algorithm's return reach every runner through the strategy's own event.
    """

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        relays: list[_Relay] = []
        lock = threading.Lock()

        def relay_for(event: Any) -> _Relay:
            with lock:
                if not relays:
                    relays.append(_Relay(event))
                return relays[0]

        async def relayed_algorithm(store: Any, event: Any) -> None:
            await algorithm(store, _BundleEvent(relay_for(event), runner=False))

        async def relayed_runner(store: Any, worker_id: int, event: Any) -> None:
            await runner(store, worker_id, _BundleEvent(relay_for(event), runner=True))

        super().execute(relayed_algorithm, relayed_runner, store)
