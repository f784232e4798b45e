"""Claims: which client holds which in-flight attempt, kept alive while it lives, given up once it is gone.

A *claim* is an attempt a client started (``dequeue_rollout``, ``start_attempt``, ``start_rollout``) and has
not seen end. ``ClaimTrackingStore`` wraps a store and records, in a ``ClaimLedger``, the claims its results
show and drops those a later result shows ended (a terminal ``update_attempt``, a rollout finished or
requeued). It serves two sides of an ``execute()``:

- The side that survives a worker (the algorithm's process) attributes every claim to the worker that made
  it: a per-worker wrapper (``client="runner 0"``, ``shm``), or one wrapper behind a server that names the
  caller of each request in ``CURRENT_CLIENT`` (``ipc``: the peer process of the connection; ``cs``: the
  ``CLIENT_HEADER`` its client sends). When the strategy learns the worker is gone,
  ``ClaimLedger.give_up`` ends each attempt it still holds as ``unresponsive`` through the public API, so
  the rollout's ``RolloutConfig`` requeues or fails it: nothing stays claimed by a worker that is gone.
- The runner's side (``heartbeats=True``) keeps its claims alive: for each held attempt whose rollout has
  an ``unresponsive_seconds`` window, a heartbeat (``update_attempt(last_heartbeat_time=...)``) goes out
  once a third of the window has passed without a span, heartbeat or status report of the runner's own, so
  a live but slow runner is never marked unresponsive while one whose loop is gone or stuck is. The
  heartbeats run as one task on the runner's event loop (no thread), idle while nothing is held, and
  ``close()`` cancels it. The cost is bounded: at most one call per held attempt per third of its window,
  none for a runner that writes anyway.

Bookkeeping is a dict operation under one lock per call; nothing is sent on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any, NamedTuple

from agentlightning.store.base import UNSET, LightningStore
from agentlightning.store.methods import METHODS
from agentlightning.store.wrapping import wrapping_methods
from agentlightning.types import (
    ACTIVE_ATTEMPT_STATUSES,
    TERMINAL_ATTEMPT_STATUSES,
    AttemptedRollout,
)

__all__ = [
    "CLIENT_HEADER",
    "CURRENT_CLIENT",
    "Claim",
    "ClaimLedger",
    "ClaimTrackingStore",
]

logger = logging.getLogger(__name__)

CURRENT_CLIENT: ContextVar[str | None] = ContextVar("agl_store_client", default=None)
"""The client the store request being served comes from, set by a store server for each connection or
request (``None``: unknown, e.g. the algorithm's own calls). Read by a ``ClaimTrackingStore`` built
without a fixed ``client``."""

CLIENT_HEADER = "x-agl-client"
"""The HTTP header in which a store client names itself (``HttpLightningStore(client_name=...)``)."""

_HEARTBEATS_PER_WINDOW = 3
"""Heartbeats sent per ``unresponsive_seconds`` window of silence: one lost or late still leaves two."""


class Claim(NamedTuple):
    """One in-flight attempt a client holds."""

    rollout_id: str
    attempt_id: str


class _Held:
    """A held attempt: its id, its heartbeat period (``None``: no window) and when its next one is due."""

    __slots__ = ("attempt_id", "due", "period")

    def __init__(self, attempt_id: str, period: float | None, due: float) -> None:
        self.attempt_id = attempt_id
        self.period = period
        self.due = due


class ClaimLedger:
    """The claims of every client, by client name; thread-safe.

    A client holds at most one attempt per rollout: claiming a rollout again (``start_attempt``) supersedes
    the attempt it held, which the store has ended.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, dict[str, _Held]] = {}

    def claimed(self, client: str, attempted: AttemptedRollout, now: float) -> float | None:
        """Record ``client``'s new attempt at ``now``; when its first heartbeat is due (``None``: none)."""
        window = attempted.config.unresponsive_seconds
        period = None if window is None else window / _HEARTBEATS_PER_WINDOW
        due = now + (0.0 if period is None else period)
        held = _Held(attempted.attempt.attempt_id, period, due)
        with self._lock:
            claims = self._held.get(client)
            if claims is None:
                claims = self._held[client] = {}
            claims[attempted.rollout_id] = held
        return None if period is None else due

    def heard(self, client: str, rollout_id: str, attempt_id: str, now: float) -> None:
        """The attempt showed activity the store counts (span, heartbeat, status) at ``now``: its next
        heartbeat waits a full period from then."""
        with self._lock:
            held = self._held.get(client, {}).get(rollout_id)
            if held is not None and held.attempt_id == attempt_id and held.period is not None:
                held.due = now + held.period

    def ended(self, client: str, rollout_id: str, attempt_id: str | None = None) -> None:
        """The attempt (``None``: whichever the client holds on that rollout) ended: no longer a claim."""
        with self._lock:
            claims = self._held.get(client)
            if claims is None:
                return
            held = claims.get(rollout_id)
            if held is not None and (attempt_id is None or held.attempt_id == attempt_id):
                del claims[rollout_id]

    def held(self, client: str) -> list[Claim]:
        """The claims ``client`` holds, oldest first."""
        with self._lock:
            return [Claim(rid, held.attempt_id) for rid, held in self._held.get(client, {}).items()]

    def clients(self) -> list[str]:
        """Clients that hold at least one claim."""
        with self._lock:
            return [client for client, claims in self._held.items() if claims]

    def take(self, client: str) -> list[Claim]:
        """Remove and return every claim of ``client`` (it is gone: they are the strategy's to settle)."""
        with self._lock:
            claims = self._held.pop(client, {})
        return [Claim(rid, held.attempt_id) for rid, held in claims.items()]

    async def give_up(self, store: LightningStore, client: str, why: str = "is gone") -> list[Claim]:
        """``client`` is gone: end its attempts still in flight as ``unresponsive`` through ``store``.

        The store then applies each rollout's retry policy (requeue or fail), as for any unresponsive
        attempt; an attempt that ended meanwhile is left as it is. Returns the claims it ended. A store
        failure other than a refused transition propagates (the claims not reached are dropped).
        """
        marked = await _mark_unresponsive(store, self.take(client))
        if marked:
            logger.warning(
                "%s %s: %d attempt(s) it held marked unresponsive (their retry policy requeues or fails "
                "them): %s",
                client,
                why,
                len(marked),
                ", ".join(f"{c.attempt_id} of {c.rollout_id}" for c in marked[:5])
                + (", ..." if len(marked) > 5 else ""),
            )
        return marked

    async def give_up_all(self, store: LightningStore, why: str = "is gone") -> list[Claim]:
        """``give_up`` every client that still holds claims (the end of an ``execute()``)."""
        marked: list[Claim] = []
        for client in self.clients():
            marked += await self.give_up(store, client, why)
        return marked

    def next_due(self, client: str) -> float | None:
        """When the next heartbeat of ``client`` falls due (``None``: no claim with a window)."""
        with self._lock:
            dues = [held.due for held in self._held.get(client, {}).values() if held.period is not None]
        return min(dues, default=None)

    def due(self, client: str, now: float) -> tuple[list[Claim], float | None]:
        """Claims of ``client`` whose heartbeat is due at ``now`` (their next one is then scheduled),
        and when the next one after those falls due (``None``: no claim with a window)."""
        due: list[Claim] = []
        upcoming: float | None = None
        with self._lock:
            for rollout_id, held in self._held.get(client, {}).items():
                if held.period is None:
                    continue
                if held.due <= now:
                    due.append(Claim(rollout_id, held.attempt_id))
                    held.due = now + held.period
                if upcoming is None or held.due < upcoming:
                    upcoming = held.due
        return due, upcoming


async def _mark_unresponsive(store: LightningStore, claims: Iterable[Claim]) -> list[Claim]:
    """End each claim's attempt as ``unresponsive`` (public API) if it is still in flight; those it ended."""
    marked: list[Claim] = []
    for claim in claims:
        try:
            attempt = await store.update_attempt(claim.rollout_id, claim.attempt_id, status="unresponsive")
        except ValueError:
            continue  # ended already (its runner's last report, the store's own verdict): nothing to settle
        if attempt.status == "unresponsive":
            marked.append(claim)
    return marked


class _Heartbeats:
    """The task that sends one client's heartbeats, on the event loop of the claims it keeps alive."""

    def __init__(self, store: ClaimTrackingStore, client: str) -> None:
        self._store = store
        self._client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._next: float | None = None  # when the task plans to wake (None: idle until woken)

    def schedule(self, due: float) -> None:
        """A claim's heartbeat falls due at ``due`` (``time.monotonic()``): make sure the task sees it."""
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or task.done() or self._loop is None or self._loop.is_closed():
            self._loop = loop
            self._wake = asyncio.Event()
            self._next = None
            self._task = loop.create_task(self._run(), name=f"agl heartbeats {self._client}")
            return
        if self._next is not None and self._next <= due:
            return  # the task wakes in time anyway
        wake = self._wake
        assert wake is not None
        if self._loop is loop:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # that loop closed meanwhile; its task ends with it
                self._loop.call_soon_threadsafe(wake.set)

    async def stop(self) -> None:
        """Cancel the task if it runs on the current loop (or its loop is gone); idempotent."""
        task, loop = self._task, self._loop
        if task is None:
            return
        if loop is not None and loop is not asyncio.get_running_loop() and not loop.is_closed():
            return  # another loop's task: that loop's own close() stops it
        self._task = None
        if not task.done():
            task.cancel()
            if loop is asyncio.get_running_loop():
                await asyncio.wait((task,))

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        store = self._store
        while True:
            wake.clear()
            self._next = await store.send_due_heartbeats()
            timeout = None if self._next is None else max(0.0, self._next - store.clock())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)


def _forward(
    store: ClaimTrackingStore, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Awaitable[Any]:
    """The call, forwarded to ``inner`` unchanged: nothing to record."""
    return getattr(store.inner, method.__name__)(*args, **kwargs)  # type: ignore[no-any-return]


async def _then_record(
    store: ClaimTrackingStore, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The call, forwarded to ``inner``; then what it answered recorded in the ledger."""
    name = method.__name__
    result = await getattr(store.inner, name)(*args, **kwargs)
    store._record(name, args, kwargs, result)
    return result


_forwarded = wrapping_methods(_forward)
_recorded = wrapping_methods(_then_record)


class ClaimTrackingStore(LightningStore):
    """``inner`` seen through one client (``client``) or a server's clients (``CURRENT_CLIENT``).

    Every call goes to ``inner``; results update ``ledger`` (see the module docstring). ``heartbeats``
    (needs a fixed ``client``): keep the client's claims alive from its event loop. ``close_inner``:
    ``close()`` also closes ``inner`` (a client owned by this wrapper); otherwise ``close()`` only stops
    the heartbeats. ``clock``: seconds on a monotonic scale, for when heartbeats fall due (tests inject
    one and call ``send_due_heartbeats`` themselves). Picklable when ``inner`` is: a copy in another
    process starts with a ledger of its own and the default clock.
    """

    def __init__(
        self,
        inner: LightningStore,
        *,
        ledger: ClaimLedger | None = None,
        client: str | None = None,
        heartbeats: bool = False,
        close_inner: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(inner, LightningStore):
            raise TypeError(f"inner must be a LightningStore, got {type(inner).__name__} {inner!r}")
        if client is not None and (not isinstance(client, str) or not client):
            raise ValueError(f"client must be a non-empty str or None, got {client!r}")
        if heartbeats and client is None:
            raise ValueError("heartbeats=True needs a fixed client name (client=...), got client=None")
        self.inner = inner
        self.ledger = ClaimLedger() if ledger is None else ledger
        self.client = client
        self.heartbeats = heartbeats
        self.close_inner = close_inner
        self.clock = clock
        self.thread_safe: bool = getattr(inner, "thread_safe", False) is True
        self._beats = _Heartbeats(self, client) if heartbeats and client is not None else None

    @property
    def limits(self) -> Any:
        """``inner``'s value limits, if it has any: a server reads them off the store it serves."""
        return getattr(self.inner, "limits", None)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "inner": self.inner,
            "client": self.client,
            "heartbeats": self.heartbeats,
            "close_inner": self.close_inner,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["inner"],
            client=state["client"],
            heartbeats=state["heartbeats"],
            close_inner=state["close_inner"],
        )

    def __repr__(self) -> str:
        who = self.client if self.client is not None else "<per request>"
        return f"<ClaimTrackingStore client={who} heartbeats={self.heartbeats} inner={self.inner!r}>"

    # -- bookkeeping ----------------------------------------------------------------------------------

    def _claimed(self, attempted: AttemptedRollout | None) -> None:
        if attempted is None:
            return
        client = self.client if self.client is not None else CURRENT_CLIENT.get()
        if client is None:
            return
        due = self.ledger.claimed(client, attempted, self.clock())
        if due is not None and self._beats is not None:
            self._beats.schedule(due)

    async def send_due_heartbeats(self) -> float | None:
        """Send the heartbeats that are due now (``heartbeats=True``); when the next one falls due
        (``None``: nothing held with an unresponsive window). The heartbeat task calls it."""
        client = self.client
        if not self.heartbeats or client is None:
            return None
        due, upcoming = self.ledger.due(client, self.clock())
        if not due:
            return upcoming
        for claim in due:
            await self._beat(client, claim)
        return self.ledger.next_due(client)  # what the answers showed ended is gone from it

    async def give_up(self, why: str = "has ended") -> list[Claim]:
        """This client has ended: stop its heartbeats (on this loop) and ``ClaimLedger.give_up`` its claims
        through ``inner``; the claims it ended."""
        if self.client is None:
            raise ValueError("give_up() needs a fixed client name (client=...); use ClaimLedger.give_up")
        if self._beats is not None:
            await self._beats.stop()
        return await self.ledger.give_up(self.inner, self.client, why)

    async def _beat(self, client: str, claim: Claim) -> None:
        """One heartbeat for ``claim``; an attempt the answer shows ended is no longer held."""
        try:
            attempt = await self.inner.update_attempt(
                claim.rollout_id, claim.attempt_id, last_heartbeat_time=time.time()
            )
        except ValueError as exc:  # the store no longer knows it: nothing to keep alive
            logger.debug("heartbeat for %s refused (%s); no longer kept alive", claim, exc)
            self.ledger.ended(client, claim.rollout_id, claim.attempt_id)
        except Exception as exc:  # the channel failed: the runner's own next call will see it too
            logger.debug("heartbeat for %s failed: %r; retried when due again", claim, exc)
        else:
            if attempt.status not in ACTIVE_ATTEMPT_STATUSES:
                self.ledger.ended(client, claim.rollout_id, claim.attempt_id)

    # -- the interface: every call goes to ``inner``; those that claim, end or keep alive an attempt are
    # recorded after it returns (``_record``) -------------------------------------------------------------

    start_rollout = _recorded(LightningStore.start_rollout)
    enqueue_rollout = _forwarded(LightningStore.enqueue_rollout)
    dequeue_rollout = _recorded(LightningStore.dequeue_rollout)
    start_attempt = _recorded(LightningStore.start_attempt)
    update_rollout = _recorded(LightningStore.update_rollout)
    query_rollouts = _forwarded(LightningStore.query_rollouts)
    get_rollout_by_id = _forwarded(LightningStore.get_rollout_by_id)
    wait_for_rollouts = _forwarded(LightningStore.wait_for_rollouts)
    query_attempts = _forwarded(LightningStore.query_attempts)
    get_latest_attempt = _forwarded(LightningStore.get_latest_attempt)
    update_attempt = _recorded(LightningStore.update_attempt)
    add_span = _recorded(LightningStore.add_span)
    query_spans = _forwarded(LightningStore.query_spans)
    add_resources = _forwarded(LightningStore.add_resources)
    get_latest_resources = _forwarded(LightningStore.get_latest_resources)
    get_resources_by_id = _forwarded(LightningStore.get_resources_by_id)

    def _record(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        """What the call ``name(*args, **kwargs)``, answered ``result`` by ``inner``, does to the ledger."""
        if name == "update_attempt":
            client = self.client if self.client is not None else CURRENT_CLIENT.get()
            if client is None:
                return
            if result.status in TERMINAL_ATTEMPT_STATUSES:
                self.ledger.ended(client, result.rollout_id, result.attempt_id)
            elif self._beats is not None:
                arguments = METHODS[name].bind(args, kwargs)
                if (
                    arguments.get("status", UNSET) is not UNSET
                    or arguments.get("last_heartbeat_time", UNSET) is not UNSET
                ):
                    self.ledger.heard(client, result.rollout_id, result.attempt_id, self.clock())
        elif name == "update_rollout":
            if result.status in ("preparing", "running"):
                return
            if METHODS[name].bind(args, kwargs).get("status", UNSET) is not UNSET:
                # Finished or requeued: whatever attempt the caller held on it has ended.
                client = self.client if self.client is not None else CURRENT_CLIENT.get()
                if client is not None:
                    self.ledger.ended(client, result.rollout_id)
        elif name == "add_span":
            if self._beats is not None:
                assert self.client is not None
                self.ledger.heard(self.client, result.rollout_id, result.attempt_id, self.clock())
        else:  # start_rollout, dequeue_rollout, start_attempt: a claim (or None: the queue was empty)
            self._claimed(result)

    # -- lifecycle ------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the heartbeats of this loop (the claims stay recorded); close ``inner`` if owned."""
        if self._beats is not None:
            await self._beats.stop()
        if self.close_inner:
            await self.inner.close()
