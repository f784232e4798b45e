"""The stop event shared by the bundles of one ``execute()``, in threads or in processes.

``ExecutionEvent`` is the protocol (``set``/``clear``/``is_set``/``wait``). ``ThreadingEvent`` serves
bundles in one process, ``MultiprocessingEvent`` bundles in several. ``wait_async`` lets asyncio code
await either without blocking its loop and without a polling tick: a thread event calls back into the
waiting loop when set; a process event also writes one byte to a pipe that every process's loop watches
(the byte is never consumed by waiters, so the pipe stays readable while the event is set, for all).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.context
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["ExecutionEvent", "MultiprocessingEvent", "ThreadingEvent", "wait_async"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True


@runtime_checkable
class ExecutionEvent(Protocol):
    """The cooperative stop signal: any bundle may set it, every bundle should watch it."""

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


_Waker = Callable[[], None]


class ThreadingEvent:
    """An event for bundles that share one process; wakes asyncio waiters on any thread at once."""

    __slots__ = ("_event", "_lock", "_wakers")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._wakers: list[_Waker] = []

    def set(self) -> None:
        with self._lock:
            self._event.set()
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def _add_waker(self, wake: _Waker) -> bool:
        """Register ``wake`` for the next ``set()``; ``False`` (not registered) when already set."""
        with self._lock:
            if self._event.is_set():
                return False
            self._wakers.append(wake)
            return True

    def _remove_waker(self, wake: _Waker) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._wakers.remove(wake)

    def __repr__(self) -> str:
        return f"<ThreadingEvent set={self.is_set()}>"


class MultiprocessingEvent:
    """An event shared by processes (picklable when a process is spawned, under any start method).

    The truth is one byte of shared memory (``RawValue``), read and written without a lock: a process
    killed while it touches the event (SIGKILL, contract F1) cannot leave a lock held that would wedge
    every other process's ``set()`` or ``is_set()``. A pipe whose read end becomes readable on ``set()``
    gives blocking ``wait()`` and asyncio loops in every process an fd to watch, so nobody polls. Call
    ``close()`` in each process when done, to release the pipe's descriptors.
    """

    def __init__(self, ctx: multiprocessing.context.BaseContext | None = None) -> None:
        ctx = ctx or multiprocessing.get_context()
        self._flag = ctx.RawValue("b", 0)
        self._reader, self._writer = ctx.Pipe(duplex=False)

    def set(self) -> None:
        if self._flag.value:
            return
        self._flag.value = 1
        # One byte suffices: waiters only test readability, so the byte stays for everyone. Two racing
        # setters may write two bytes; clear() drains them all.
        with contextlib.suppress(OSError):
            self._writer.send_bytes(b"\x01")

    def clear(self) -> None:
        self._flag.value = 0
        self._drain()

    def _drain(self) -> None:
        """Empty the pipe; if a ``set()`` raced with us (its byte may be gone), put one byte back."""
        with contextlib.suppress(OSError, EOFError):
            while self._reader.poll(0):
                self._reader.recv_bytes()
        if self._flag.value:
            with contextlib.suppress(OSError):
                self._writer.send_bytes(b"\x01")

    def is_set(self) -> bool:
        return bool(self._flag.value)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._flag.value:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if self.closed:  # no pipe left in this process: fall back to a short sleep
                time.sleep(0.01 if remaining is None else min(0.01, remaining))
                continue
            try:
                readable = self._reader.poll(remaining)
            except (OSError, EOFError):
                readable = False
            if readable and not self._flag.value:
                self._drain()  # a byte left by a set() that a concurrent clear() overtook
        return True

    def fileno(self) -> int:
        """A descriptor that is readable while the event is set (until ``clear()``)."""
        return self._reader.fileno()

    def close(self) -> None:
        """Close this process's pipe descriptors; the event's flag stays usable. Idempotent."""
        for conn in (self._reader, self._writer):
            with contextlib.suppress(OSError):
                conn.close()

    @property
    def closed(self) -> bool:
        return bool(self._reader.closed)

    def __getstate__(self) -> dict[str, Any]:
        multiprocessing.context.assert_spawning(self)  # shared memory and pipes travel only to children
        return {"_flag": self._flag, "_reader": self._reader, "_writer": self._writer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<MultiprocessingEvent set={self.is_set()} pid={os.getpid()}>"


async def wait_async(event: ExecutionEvent, timeout: float | None = None) -> bool:
    """Await ``event`` without blocking the running loop; ``True`` once set, ``False`` on timeout.

    Our own events wake the loop the moment they are set. Any other ``ExecutionEvent`` is polled with a
    backoff from 1 ms to 20 ms, the best a bare protocol allows without parking a thread.
    """
    if event.is_set():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def _wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    def _wake_threadsafe() -> None:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(_wake)

    if isinstance(event, ThreadingEvent):
        if not event._add_waker(_wake_threadsafe):
            return True
        try:
            return await _await_waiter(waiter, timeout, event)
        finally:
            event._remove_waker(_wake_threadsafe)

    if isinstance(event, MultiprocessingEvent) and not event.closed:
        # A loop keeps one reader per fd: a second waiter on the same fd would replace the first's
        # callback, and the first's remove_reader would silence the second. Each waiter watches its own
        # duplicate of the pipe's read end instead.
        fd = os.dup(event.fileno())
        try:
            loop.add_reader(fd, _wake)
            try:
                return await _await_waiter(waiter, timeout, event)
            finally:
                loop.remove_reader(fd)
        finally:
            os.close(fd)

    return await _poll(event, timeout)


async def _await_waiter(waiter: asyncio.Future[None], timeout: float | None, event: ExecutionEvent) -> bool:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(waiter), timeout)
    if not waiter.done():
        waiter.cancel()
    return event.is_set()


async def _poll(event: ExecutionEvent, timeout: float | None) -> bool:
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    delay = 0.001
    while not event.is_set():
        if deadline is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            delay = min(delay, remaining)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)
    return True
