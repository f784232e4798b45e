"""The stop event across machines: a runner side mirrors the server's stop event, and relays its own back.

Shared by the strategies whose runners reach the caller's store over HTTP (``cs`` runner sides, the
``ray`` actors): each holds a long-poll on the server's ``/v1/event/wait`` through an ``EventBridge``,
so a stop set anywhere reaches every machine within one round trip (L4, D1), and the server learns
from the polls which runner sides are still attached (and which fell silent: D2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid

from agentlightning.execution.events import ExecutionEvent, wait_async
from agentlightning.execution.remote_stop import RemoteStopEvent
from agentlightning.store.http.client import HttpLightningStore, StoreServerUnreachable

__all__ = ["EventBridge"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

_log = logging.getLogger(__name__)


class EventBridge:
    """Runner role: mirrors the server's stop event into this machine's event, and back (L4 across hosts).

    A thread with its own loop holds a long-poll on ``/v1/event/wait``, naming this runner side so the
    server keeps serving until it detaches. The server's event set (or the server gone: the algorithm side
    has finished) sets the local event; a runner here setting the local event sets the server's, unless
    the strategy muted the bridge first (its own stops stay local). ``stop()`` detaches (best effort,
    bounded) and joins the thread.
    """

    POLL_SECONDS = 2.0  # each wait the server holds: its end is word from this side (host loss, D2)
    _ANSWER_SECONDS = 3.0  # beyond the held wait: a wait on a dead link fails and is retried
    _DETACH_SECONDS = 2.0

    def __init__(self, client: HttpLightningStore, event: ExecutionEvent) -> None:
        self.side = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Its own pool and a short request bound: retried within the client's retry_seconds
        # (connect_timeout), then the server counts as lost.
        self.client = client.named(f"{self.side}/event-bridge")
        self.client.request_timeout = self._ANSWER_SECONDS
        self.remote = RemoteStopEvent(self.client)
        self.event = event
        self.lost: Exception | None = None  # the error that said the server is unreachable
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quit: asyncio.Event | None = None
        self._muted = False
        self._server_stopped = False  # the server's event was set, or the server is gone
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="agl-cs-event-bridge", daemon=True)

    def mute(self) -> None:
        """Do not relay the set the caller is about to make; one a bundle already made is still relayed."""
        if not self.event.is_set():
            self._muted = True

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    async def release(self, clients: list[str]) -> None:
        """Ask the server to give up the claims of these (ended) runners of ours; bounded, best effort.

        Skipped once the server stopped us: the algorithm side then settles every claim itself.
        """
        loop = self._loop
        if loop is None or self._server_stopped:
            return
        try:
            future = asyncio.run_coroutine_threadsafe(self.client.release_claims(clients), loop)
        except RuntimeError:
            return  # the bridge's loop is closed: the server is gone
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), self._DETACH_SECONDS)
        except Exception as exc:
            _log.warning("event bridge: could not release the claims of %s: %r", ", ".join(clients), exc)

    def stop(self) -> None:
        loop, quit_ = self._loop, self._quit
        if loop is not None and quit_ is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the thread is ending anyway
                loop.call_soon_threadsafe(quit_.set)
        self._thread.join()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()  # never made current: this thread only runs the bridge
        try:
            loop.run_until_complete(self._serve(loop))
        except Exception:
            _log.exception("event bridge failed; stopping this machine's runners")
            self.event.set()
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(self.client.close())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        self._quit = asyncio.Event()
        self._loop = loop
        self._ready.set()
        try:
            await self._relay()
            await self._quit.wait()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.remote.detach(self.side), self._DETACH_SECONDS)

    async def _relay(self) -> None:
        assert self._quit is not None
        local = asyncio.ensure_future(wait_async(self.event))
        quit_ = asyncio.ensure_future(self._quit.wait())
        remote: asyncio.Future[bool] | None = None
        try:
            while True:
                # The event itself, not the future: a set must be relayed even when quit came as quickly.
                if self.event.is_set():
                    if not self._muted:  # a runner here called event.set(): every bundle must see it (L4)
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(self.remote.set(), self._DETACH_SECONDS)
                    return
                if quit_.done():
                    return
                if remote is None or remote.done():
                    remote = asyncio.ensure_future(self.remote.wait(self.POLL_SECONDS, self.side))
                await asyncio.wait({local, quit_, remote}, return_when=asyncio.FIRST_COMPLETED)
                if remote.done() and not remote.cancelled():
                    error = remote.exception()
                    if error is not None or remote.result():
                        self._server_stopped = True
                        if error is not None:
                            _log.warning(
                                "event bridge: lost the store server (%s); stopping this machine's runners",
                                error,
                            )
                            if isinstance(error, StoreServerUnreachable):
                                self.lost = error
                        self.event.set()
                        return
        finally:
            futures = [f for f in (local, quit_, remote) if f is not None]
            for future in futures:
                future.cancel()
            await asyncio.wait(futures)
