"""The stop event of an ``execute()`` served to runner sides on other machines, and their bookkeeping.

Runners on other machines cannot share a process event, so the serving side mounts three routes on its
store server (``stop_event_routes``, through the server's ``routes=``: ``store.http.extra_routes``):

- ``POST /v1/event/set``: sets the event for everyone;
- ``POST /v1/event/wait``: held until the event is set or the timeout (at most the server's
  ``max_wait_seconds``); a runner side that names itself (``side``) is attached to ``RunnerSides`` while
  it waits, and each wait it holds, and the end of each, counts as word from it (host loss, D2);
- ``POST /v1/event/detach``: the runner side has stopped (it no longer needs the store), so the serving
  side can stop serving once every side it counted has detached.

``RemoteStopEvent`` is the runner side's view of the same routes, over an ``HttpLightningStore`` (its pools,
token, TLS and retries). The routes belong to the strategies that run runners elsewhere (``cs``); the store
server knows nothing of them. Importing this module does not import the server's framework.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable

from pydantic import BaseModel, Field

from agentlightning.execution.events import ExecutionEvent, wait_async
from agentlightning.store.http.client import HttpLightningStore
from agentlightning.store.http.extra_routes import ExtraRoute, RequestBody, RouteCall

__all__ = ["RemoteStopEvent", "RunnerSides", "SilentSide", "stop_event_routes"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True


class EventWaitRequest(RequestBody):
    timeout: float = Field(ge=0)
    side: str | None = Field(default=None, min_length=1, max_length=200)


class SideRequest(RequestBody):
    side: str = Field(min_length=1, max_length=200)


class EventState(BaseModel):
    is_set: bool


@dataclasses.dataclass(frozen=True)
class SilentSide:
    """A runner side that stopped polling: its name, the address it polled from, how long it is silent."""

    side: str
    address: str | None
    silent_seconds: float


class RunnerSides:
    """Runner sides (``execute()`` calls with role ``"runner"``) attached to a server; thread-safe.

    A side is attached by its first ``/v1/event/wait`` and stays attached until it detaches or falls
    silent: each wait it holds, and the end of each, counts as word from it (``silent``).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._attached: set[str] = set()
        self._polling: dict[str, int] = {}
        self._seen: dict[str, float] = {}
        self._addresses: dict[str, str] = {}
        self._changed = threading.Condition()

    def attach(self, side: str, address: str | None = None) -> None:
        """``side`` holds a wait (from ``address``): attached, and heard from now."""
        with self._changed:
            self._attached.add(side)
            self._polling[side] = self._polling.get(side, 0) + 1
            self._seen[side] = self._clock()
            if address is not None:
                self._addresses[side] = address

    def seen(self, side: str) -> None:
        """A wait of ``side`` has ended: heard from now."""
        with self._changed:
            self._polling[side] = max(0, self._polling.get(side, 0) - 1)
            self._seen[side] = self._clock()

    def detach(self, side: str) -> None:
        with self._changed:
            self._attached.discard(side)
            self._changed.notify_all()

    def silent(self, after: float) -> list[SilentSide]:
        """Attached sides holding no wait and unheard from for more than ``after`` seconds: they are
        detached (a side that comes back attaches anew) and returned."""
        now = self._clock()
        with self._changed:
            gone = [
                SilentSide(side, self._addresses.get(side), now - self._seen.get(side, now))
                for side in sorted(self._attached)
                if not self._polling.get(side) and now - self._seen.get(side, now) > after
            ]
            for found in gone:
                self._attached.discard(found.side)
            if gone:
                self._changed.notify_all()
            return gone

    @property
    def attached(self) -> list[str]:
        with self._changed:
            return sorted(self._attached)

    def wait_detached(self, timeout: float) -> list[str]:
        """Wait until every side has detached or ``timeout``; the sides still attached."""
        with self._changed:
            self._changed.wait_for(lambda: not self._attached, timeout)
            return sorted(self._attached)


def stop_event_routes(event: ExecutionEvent, sides: RunnerSides) -> tuple[ExtraRoute, ...]:
    """The routes that serve ``event`` to remote runner sides, recording them in ``sides``."""

    async def set_event(call: RouteCall) -> EventState:
        event.set()
        return EventState(is_set=True)

    async def wait_event(body: EventWaitRequest, call: RouteCall) -> EventState:
        timeout = min(body.timeout, call.max_wait_seconds)
        if body.side is None:
            return EventState(is_set=await wait_async(event, timeout))
        sides.attach(body.side, call.client_host)
        try:
            return EventState(is_set=await wait_async(event, timeout))
        finally:
            sides.seen(body.side)

    async def detach(body: SideRequest, call: RouteCall) -> EventState:
        sides.detach(body.side)
        return EventState(is_set=event.is_set())

    return (
        ExtraRoute("event/set", EventState, set_event, summary="Set the stop event for everyone."),
        ExtraRoute(
            "event/wait",
            EventState,
            wait_event,
            EventWaitRequest,
            "Whether the stop event is set, held until it is or the timeout; a named side is attached.",
        ),
        ExtraRoute("event/detach", EventState, detach, SideRequest, "A runner side has stopped."),
    )


class RemoteStopEvent:
    """The stop event a server serves (``stop_event_routes``), seen from another machine.

    Async only: ``set()`` sets it for everyone; ``wait(timeout)`` returns whether it is set, waking as
    soon as it is (the server holds the request). Shares ``store``'s connection pools and retry rules;
    every call is idempotent, so each is retried as a read is.
    """

    def __init__(self, store: HttpLightningStore) -> None:
        self.store = store

    async def set(self) -> None:
        await self.store.post("event/set", idempotent=True)

    async def wait(self, timeout: float, side: str | None = None) -> bool:
        """Whether the event is set, waiting up to ``timeout``; ``side`` attaches this runner side."""
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        raw = await self.store.post(
            "event/wait", {"timeout": timeout, "side": side}, idempotent=True, extra_timeout=timeout
        )
        return bool(json.loads(raw)["is_set"])

    async def detach(self, side: str) -> None:
        """Tell the server this runner side has stopped (it no longer needs the store)."""
        await self.store.post("event/detach", {"side": side}, idempotent=True)
