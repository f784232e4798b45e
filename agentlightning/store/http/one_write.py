"""``HeadWithBody``: a server transport that sends a response's head and its body in one write.

uvicorn writes an answer's status line and headers, then its body, as two writes: two ``send`` system
calls and two TCP segments, so the client wakes up twice for what is one small answer (the store's
answers are a few hundred bytes). Wrapped around a connection's transport, this holds the head of an
answer of declared length (``content-length``: its body follows at once, in the same step of the task
that answers) until the next write, which goes out joined to it. The connection's protocol calls
``flush()`` once each answer is complete, so a head whose answer has no body written (``HEAD``) is sent
then, and ``close()`` sends what is held first: nothing is held past the answer it belongs to. Every
other write, and every other call, goes to the wrapped transport unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["HeadWithBody"]

_JOIN_AT_MOST = 64 * 1024
"""A larger body is written on its own (joining would copy it): the head goes out just before it."""


class HeadWithBody:
    """Wraps ``transport`` (an ``asyncio.Transport``): a head is sent together with the body after it."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= _JOIN_AT_MOST:
                self._transport.write(held + bytes(data))
                return
            self._transport.write(held)
        elif _is_head_of_known_length(data):
            self._held = bytes(data)
            return
        self._transport.write(data)

    def flush(self) -> None:
        """Send a head still held (its answer is complete without a body write)."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _is_head_of_known_length(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is a final answer's status line and headers alone, declaring its length."""
    if isinstance(data, memoryview) or not data.startswith(b"HTTP/1.1 ") or data.startswith(b"HTTP/1.1 1"):
        return False
    return data.endswith(b"\r\n\r\n") and b"\r\ncontent-length: " in data
