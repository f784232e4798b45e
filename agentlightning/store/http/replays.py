"""Request ids: a write the client sends again (its answer was lost) is answered again, never applied again.

``HttpLightningStore`` gives every write one id (the ``x-agl-request-id`` header), kept across its
retries. ``Replays``, in front of the server's application, remembers the answer of each write that
carried an id: the same id again gets that answer without reaching the store, and an id still being
served waits for the first answer. So a write whose answer a connection reset or a partition swallowed
can be retried safely (D3).

The table is bounded both ways: an answer is kept for ``retention_seconds`` (well beyond any client's
``retry_seconds``) unless ``max_entries`` newer answers push it out (the oldest go first), so memory
stays bounded under any load. Answers of 5xx status are not kept: the client retries those
as new, and a 503 ``busy`` refusal never reached the store. Only requests whose token checks are
looked up: the table never answers a stranger.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = ["REQUEST_ID_HEADER", "ReplayTable", "Replays"]

REQUEST_ID_HEADER = "x-agl-request-id"
_HEADER = REQUEST_ID_HEADER.encode("latin-1")
_MAX_ID_LENGTH = 128

_ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class _Answer:
    start: dict[str, Any]
    body: bytes
    at: float


class ReplayTable:
    """The answers of recent writes by request id, bounded by age and count."""

    def __init__(
        self,
        *,
        retention_seconds: float = 300.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if retention_seconds <= 0 or max_entries < 1:
            raise ValueError(
                f"retention_seconds must be > 0 and max_entries >= 1; got {retention_seconds!r}, "
                f"{max_entries!r}"
            )
        self.retention_seconds = retention_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._answers: OrderedDict[str, _Answer] = OrderedDict()
        self._running: dict[str, asyncio.Future[None]] = {}

    def now(self) -> float:
        return self._clock()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, request_id: str) -> _Answer | None:
        return self._answers.get(request_id)

    def running(self, request_id: str) -> asyncio.Future[None] | None:
        return self._running.get(request_id)

    def begin(self, request_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._running[request_id] = future
        return future

    def finish(self, request_id: str, answer: _Answer | None) -> None:
        """Record ``answer`` (``None``: nothing to keep) and wake the copies that waited for it."""
        if answer is not None:
            self._answers[request_id] = answer
            self._evict()
        future = self._running.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _evict(self) -> None:
        horizon = self._clock() - self.retention_seconds
        while self._answers:
            oldest = next(iter(self._answers.values()))
            if len(self._answers) <= self.max_entries and oldest.at >= horizon:
                break
            self._answers.popitem(last=False)


def _request_id(scope: MutableMapping[str, Any]) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == _HEADER:
            text = value.decode("latin-1")
            return text if 0 < len(text) <= _MAX_ID_LENGTH else None
    return None


class Replays:
    """ASGI front: a POST carrying a request id it has answered is answered again from the table.

    ``authorised(scope)`` says whether the request's credentials check; others pass through untouched
    (the application refuses them).
    """

    def __init__(
        self,
        app: _ASGIApp,
        authorised: Callable[[MutableMapping[str, Any]], bool],
        table: ReplayTable | None = None,
    ) -> None:
        self.app = app
        self.authorised = authorised
        self.table = table if table is not None else ReplayTable()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        request_id = _request_id(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if request_id is None or not self.authorised(scope):
            await self.app(scope, receive, send)
            return
        key = f"{scope.get('path', '')} {request_id}"
        table = self.table
        while (running := table.running(key)) is not None:
            await asyncio.shield(running)  # the first copy is still being served: wait for its answer
        answer = table.get(key)
        if answer is not None:
            await send(answer.start)
            await send({"type": "http.response.body", "body": answer.body})
            return
        table.begin(key)
        start: dict[str, Any] = {}
        chunks: list[bytes] = []
        complete = False

        async def recording_send(message: Any) -> None:
            nonlocal complete
            # Recorded before it is sent: an answer the client never got (the reason it will send the
            # write again) is exactly the one to keep.
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                complete = not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            kept = None
            if complete and start.get("status", 500) < 500:
                kept = _Answer(dict(start), b"".join(chunks), table.now())
            table.finish(key, kept)
