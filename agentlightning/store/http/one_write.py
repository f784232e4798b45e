"""``HeadWithBody``: a server transport that sends a response's head and its body in one write.

uvicorn writes an answer's status line and headers, then its body, as two writes: two ``send`` system
calls and two TCP segments, so the client wakes up twice for what is one small answer (the store's
answers are a few hundred bytes). Wrapped around a connection's transport, this holds a head written
alone until the next write, which goes out joined to it, or until the event loop's next round, whichever
comes first (a head followed by no body, such as an answer to ``HEAD`` or ``100 Continue``, is sent then;
so nothing is ever held longer than the step of the task that wrote it). Every other call goes to the
wrapped transport unchanged; ``close()`` sends what is held first.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["HeadWithBody"]

_JOIN_AT_MOST = 64 * 1024
"""A larger body is written on its own (joining would copy it): the head goes out just before it."""


class HeadWithBody:
    """Wraps ``transport`` (an ``asyncio.Transport``): a head is sent together with the body after it."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= _JOIN_AT_MOST:
                self._transport.write(held + bytes(data))
                return
            self._transport.write(held)
        elif _is_lone_head(data):
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
            return
        self._transport.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _is_lone_head(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is a final response's status line and headers, with nothing after them."""
    head = bytes(data[:10]) if isinstance(data, memoryview) else data[:10]
    return head.startswith(b"HTTP/1.1 ") and not head.startswith(b"HTTP/1.1 1") and data[-4:] == b"\r\n\r\n"
