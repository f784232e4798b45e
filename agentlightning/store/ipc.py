"""The store over a Unix domain socket: ``IpcStoreServer`` serves a store, ``IpcLightningStore`` uses it.

Used by the ``ipc`` strategy to give runner processes the caller's store. Why a Unix socket: it is a
kernel-buffered byte stream with flow control, several processes can connect to one listening socket,
a dead peer shows up at once as EOF, asyncio drives the client end natively, and nothing listens on
the network. Pipes would need one pair per process and no connect step; shared memory would need our
own locking and wake-ups for what the socket gives for free.

Wire format: a stream of msgpack messages (self-delimiting; msgpack's streaming unpacker splits them).
A request is ``[id, method, kwargs]``, built from the method table (``methods.py``) by the methods of
``remote.RemoteLightningStore``: a config travels as ``model_dump(mode="json")``, a span as its fields
checked by the value rule, and the server validates the keywords with the method's request model (which
rebuilds them); ``UNSET`` keywords are simply omitted. Results travel as their JSON bytes, written and
read by the method's ``TypeAdapter`` (pydantic does it in Rust, cheaper than building and walking
Python dicts on both sides), and a ``None`` result as nil. A reply is ``[id, 0, result]`` or
``[id, 1, error]``, where ``error`` is the exception serialised by ``remote_errors``; the client raises
it by the rule of every remote path (``remote.py``): a ``ValueError`` as itself, anything else as
``StoreServerError`` whose cause is the original (the server never unpickles what clients send, only
msgpack). A reply whose id is ``None`` is about the connection itself (a refused connection).

Requests are multiplexed: one connection per client and event loop, many calls in flight
(``wait_for_rollouts`` does not hold up the others). Latency is what bounds a runner that talks to
the store in turn, so both ends skip the event loop on the common path: the server answers each
connection from a thread of its own blocked in ``recv`` (``_ServedConnection``), and a client call
with nothing else in flight waits for its reply in ``recv`` itself, bounded by the socket's receive
timeout (``_ClientConnection``). Each falls back to its event loop when a call has to wait.

Values: every value a request carries into the store (a rollout's ``input`` and ``metadata``, an
attempt's ``metadata``, a span's attributes and names, ``resources``, and every id) passes the store's value
rule (``agentlightning.store.values``) on the server before the served store is called, whatever store it
is, and on the client before it is sent. So msgpack never changes a value on the way: ``bytes`` (msgpack's
bin type) are refused naming the field, as a str that is not valid UTF-8 is (the server decodes it to lone
surrogates, which the rule refuses), and as a map key that is not a str is. A refused call raises
``InvalidValueError`` (a ``ValueError``) to its caller, changes nothing, and the connection carries on.

Bounds and backpressure (defaults in brackets; ``IpcStoreServer`` takes the first two as parameters):

- ``max_connections`` [``DEFAULT_MAX_CONNECTIONS``, 64]: connections served at once. One more is
  answered with a refusal naming the limit and closed; its client raises ``StoreChannelError`` saying so.
- ``max_request_bytes`` [``DEFAULT_MAX_REQUEST_BYTES``, 64 MiB, which holds a request carrying two values
  at the value rule's default bounds]: the largest request. A larger one breaks the stream and the
  connection is dropped, so the client refuses it first with a ``ValueError`` naming its size.
- Replies are never queued: a reply the socket cannot take at once is sent blocking on the connection's
  own thread. A client that does not read its replies therefore stops being read from, its requests wait
  in the kernel's socket buffer, and only its own connection waits; ``close()`` still ends it.
- A connection holds the requests of its calls in flight: while those that are not waits
  (``_MAX_CALLS_IN_FLIGHT``, 1024) or their bytes (``max_request_bytes``) are at their limit, it is not
  read; pending waits are limited alike (``_MAX_WAITS``, 1024, and ``max_request_bytes``), and one more is
  refused with an error naming the limit (a wait cannot be made to wait for room: it might be the very call
  whose completion would make room). So one connection buffers at most about three times
  ``max_request_bytes`` of requests (the one being read, the calls in flight, the waits) plus its replies.
- Buffers that a large message grew past ``_KEEP_BUFFER_BYTES`` (4 MiB) are dropped once it is through,
  so an idle connection keeps little memory.

The socket file lives wherever the caller puts it (the strategy uses a private temporary directory; see
``agentlightning.execution.socket_dirs``); ``IpcStoreServer.close()`` removes it.

Each connection's requests are served with ``claims.CURRENT_CLIENT`` set to ``peer_client(pid)`` of the
process at the other end (the kernel's ``SO_PEERCRED``: nothing on the wire, nothing a client must send), so
a served ``ClaimTrackingStore`` knows which runner process made each claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import selectors
import socket
import struct
import threading
import time
import types
from collections.abc import Coroutine, Generator
from typing import Any, Final

import msgpack

from agentlightning.remote_errors import dump_exception, load_exception
from agentlightning.store.base import LightningStore
from agentlightning.store.claims import CURRENT_CLIENT
from agentlightning.store.methods import METHODS, StoreMethod
from agentlightning.store.remote import RemoteLightningStore, StoreServerError
from agentlightning.store.values import DEFAULT_LIMITS, ValueLimits

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_REQUEST_BYTES",
    "IpcLightningStore",
    "IpcStoreServer",
    "StoreChannelError",
    "peer_client",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 64
"""Connections an ``IpcStoreServer`` serves at once unless told otherwise; one more is refused."""
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""The largest request, unless told otherwise; it also bounds what one connection buffers (see above)."""
MAX_REPLY_BYTES = 256 * 1024 * 1024
"""A reply larger than this is a protocol error for the client (it would be buffered whole in memory)."""

_OK = 0
_ERROR = 1
_RECV_BYTES = 256 * 1024
_MAX_CALLS_IN_FLIGHT = 1024
"""Calls of one connection that may be suspended at once (waits aside) before it stops being read."""
_MAX_WAITS = 1024
"""``wait_for_rollouts`` calls that may be pending on one connection; one more is refused."""
_KEEP_BUFFER_BYTES = 4 * 1024 * 1024
"""A buffer grown past this by one large message is dropped once the message is through."""

_FAST_REPLY_SECONDS = 0.002
"""How long a client call with nothing else in flight waits for its reply off the event loop."""
_YIELD_EVERY_SECONDS = 0.001
"""A caller whose store calls never suspend yields to its loop at least this often."""
_FAST_REPLY_TIMEVAL = struct.pack("ll", 0, int(_FAST_REPLY_SECONDS * 1e6))
"""``_FAST_REPLY_SECONDS`` as the ``struct timeval`` of a client socket's receive timeout."""


_NOTHING: Final = object()
"""What ``_FrameReader.pop`` returns when no complete message is buffered."""


class StoreChannelError(ConnectionError):
    """The channel to the store server failed (unreachable, closed, refused, or a protocol error)."""


class _FrameReader:
    """Splits a byte stream into msgpack messages: ``feed`` bytes, then iterate the messages completed.

    msgpack's streaming ``Unpacker`` does the work (in C). A message larger than ``max_bytes``, or bytes
    that are no msgpack, raise ``StoreChannelError``. Messages are decoded one at a time as they are
    iterated, so a reader that stops iterating leaves the rest as bytes. ``lenient`` (the server's) leaves
    judging values to the value rule: a map key that is no str, or a str that is no UTF-8 (decoded to
    lone surrogates), then comes out as a value that the rule refuses naming its field, instead of
    breaking a stream that cannot be resynchronised.
    """

    __slots__ = ("_fed", "_grown", "_options", "_unpacker", "chunk", "max_bytes")

    def __init__(self, max_bytes: int, *, lenient: bool = False) -> None:
        self.max_bytes = max_bytes
        # One read's worth of slack: a message of max_bytes may share the buffer with the next one's start.
        self._options: dict[str, Any] = {"raw": False, "max_buffer_size": max_bytes + _RECV_BYTES}
        if lenient:
            self._options.update(strict_map_key=False, unicode_errors="surrogateescape")
        self._unpacker = msgpack.Unpacker(**self._options)
        self._fed = 0  # bytes fed to this unpacker: with its tell(), what it buffers
        self._grown = False
        self.chunk = memoryview(bytearray(_RECV_BYTES))
        """Where to receive the next bytes (``recv_into``): reused, so a large message does not cost a
        fresh buffer, and its page faults, per read."""

    def feed(self, data: bytes | memoryview) -> None:
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise StoreChannelError(f"a message exceeds the {self.max_bytes}-byte limit") from None
        self._fed += len(data)
        if self._fed - self._unpacker.tell() > _KEEP_BUFFER_BYTES:
            self._grown = True

    def tell(self) -> int:
        """Where the next message starts in the stream fed so far (differences are message sizes)."""
        position: int = self._unpacker.tell()
        return position

    def pop(self) -> Any:
        """The next complete message, or ``_NOTHING`` when none is buffered (nothing is raised for that:
        the hot paths call this once past the last message of every read)."""
        unpacker = self._unpacker
        if unpacker.tell() == self._fed:  # every byte fed is decoded: no need to ask the unpacker
            if self._grown:  # drained: drop the grown buffer
                self._unpacker = msgpack.Unpacker(**self._options)
                self._fed = 0
                self._grown = False
            return _NOTHING
        try:
            return next(unpacker)
        except StopIteration:  # part of a message is buffered: the rest is still to come
            return _NOTHING
        except msgpack.BufferFull:
            raise StoreChannelError(f"a message exceeds the {self.max_bytes}-byte limit") from None
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise StoreChannelError(f"not a msgpack stream: {type(exc).__name__}: {exc}") from None

    def messages(self, data: bytes | memoryview) -> list[Any]:
        """``feed(data)``, then every message completed so far."""
        self.feed(data)
        messages = []
        while (message := self.pop()) is not _NOTHING:
            messages.append(message)
        return messages


class _ReusedPacker:
    """Packs messages into one buffer reused from message to message (one per connection and direction).

    A large message (a rollout carrying megabytes) is then copied into memory already mapped, instead of
    into a fresh ``bytes`` whose pages the kernel must fault in every time. ``pack`` returns a view of
    the buffer; hand it back to ``release`` once it is sent (the buffer grows only with no view left). A
    buffer grown past ``_KEEP_BUFFER_BYTES`` is dropped on release (an idle connection keeps little).
    """

    __slots__ = ("_packer",)

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=False)

    def pack(self, message: Any) -> memoryview:
        try:
            self._packer.pack(message)
        except BaseException:
            self._packer.reset()  # nothing half-packed may go out with the next message
            raise
        view: memoryview = self._packer.getbuffer()
        return view

    def release(self, view: memoryview) -> None:
        grown = view.nbytes > _KEEP_BUFFER_BYTES
        view.release()
        if grown:
            self._packer = msgpack.Packer(use_bin_type=True, autoreset=False)
        else:
            self._packer.reset()


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


# -- the server ---------------------------------------------------------------------------------------


def peer_client(pid: int) -> str:
    """The ``CURRENT_CLIENT`` under which the requests of process ``pid`` are served."""
    return f"pid {pid}"


def _peer_of(sock: socket.socket) -> str | None:
    """``peer_client`` of the process that connected ``sock``; ``None`` where the kernel cannot tell."""
    try:
        credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):  # no SO_PEERCRED on this platform
        return None
    pid = struct.unpack("3i", credentials)[0]
    return peer_client(pid) if pid > 0 else None


def _encode(method: StoreMethod, result: Any) -> bytes | None:
    """A result as the wire carries it: its JSON, or nil for ``None``."""
    return None if result is None else method.encode(result)


class _ServedConnection:
    """One runner's connection, served on a thread of its own (``agl-ipc-store-conn-N``).

    Why a thread per connection rather than one event loop for all: a request then costs one blocking
    ``recv`` and one ``send``, with no event-loop round between them, and the connections' system calls
    and wake-ups overlap (the GIL is released in them). There are only ``n_runners`` connections.

    Requests are still multiplexed. Each runs eagerly up to its first suspension; most store calls
    never suspend and are answered at once. One that does (``wait_for_rollouts``, or any call of a
    confined store) becomes a task of the thread's own event loop, and while any such task is pending,
    the socket is read through that loop (``sock_recv_into``), so the task is woken and answered while
    later requests keep flowing. With no task pending, nothing needs the loop to turn, and the thread
    blocks in ``recv`` directly.

    Replies are sent whole before anything else happens on the thread: at once when the socket takes
    them, else blocking (the loop and its tasks wait too). That is the backpressure: a client that does
    not read its replies is not read from, and no reply is ever queued in memory; it also means replies
    never interleave and one reused buffer packs them all. Requests wait unread, in the kernel, while the
    calls in flight are at their limits (see the module docstring).
    """

    def __init__(self, server: IpcStoreServer, sock: socket.socket) -> None:
        self._server = server
        self._sock = sock
        self._reader = _FrameReader(server.max_request_bytes, lenient=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self._blocking = True
        self._replies = _ReusedPacker()
        self._calls = 0  # suspended calls that are not waits, and the bytes of their requests
        self._call_bytes = 0
        self._waits = 0  # pending waits, and the bytes of their requests
        self._wait_bytes = 0
        self._progress = asyncio.Event()  # set when a suspended call ends; binds to the loop on first use
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    def run(self) -> None:
        """Thread body: serve until the client leaves or the server shuts the socket down."""
        # This thread serves one peer: every task below copies the context with its name in it.
        CURRENT_CLIENT.set(_peer_of(self._sock))
        loop = asyncio.new_event_loop()  # never installed as this thread's current loop
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(loop))
        except Exception:  # a serving thread must not die silently
            logger.exception("ipc store server: a connection failed")
        finally:
            try:
                for task in self._tasks:
                    task.cancel()
                if self._tasks:
                    loop.run_until_complete(asyncio.wait(self._tasks, timeout=1.0))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._sock.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        reader = self._reader
        chunk = reader.chunk
        sock = self._sock
        limit = self._server.max_request_bytes
        try:
            while True:
                if self._tasks:  # a suspended call must be woken while we read: read through the loop
                    self._set_blocking(False)
                    try:
                        received = await loop.sock_recv_into(sock, chunk)
                    except OSError:
                        return
                else:  # nothing needs the loop to turn: block in recv itself
                    if not self._blocking:
                        self._set_blocking(True)
                    try:
                        received = sock.recv_into(chunk)
                    except OSError:
                        return
                if not received:
                    return  # the client is gone (or the server shut the socket down)
                reader.feed(chunk[:received])
                start = reader.tell()
                # Decoded one by one: the rest waits as bytes while we are full.
                while (request := reader.pop()) is not _NOTHING:
                    end = reader.tell()
                    if end - start > limit:
                        raise StoreChannelError(
                            f"a request of {end - start} bytes exceeds the server's max_request_bytes "
                            f"({limit})"
                        )
                    if self._full():
                        await self._room()
                        if self._closing:
                            return
                    self._take(request, end - start, loop)
                    start = end
        except StoreChannelError as exc:  # a garbled stream cannot be resynchronised: drop this client
            logger.error("ipc store server: dropping a client that sent a bad frame: %s", exc)

    def _set_blocking(self, blocking: bool) -> None:
        if self._blocking != blocking:
            self._sock.setblocking(blocking)
            self._blocking = blocking

    def _full(self) -> bool:
        """Whether the calls in flight (waits aside) hold as many requests, or bytes, as a connection may."""
        return self._calls >= _MAX_CALLS_IN_FLIGHT or self._call_bytes >= self._server.max_request_bytes

    async def _room(self) -> None:
        """Until a call in flight ends (they are not waits: each does end) or the server closes."""
        while self._full() and not self._closing:
            self._progress.clear()
            await self._progress.wait()

    def _take(self, request: Any, size: int, loop: asyncio.AbstractEventLoop) -> None:
        """Answer ``request`` (``size`` bytes on the wire): at once, or from a task if it suspends.

        The store's coroutine is driven here up to its first suspension (see the class docstring); most
        calls complete in that one step and are answered without a task or a coroutine of our own.
        """
        request_id: Any = None
        try:
            request_id, name, kwargs = request
            method = METHODS.get(name) if isinstance(name, str) else None
            if method is None:
                raise ValueError(f"unknown store method {name!r}")
            if not isinstance(kwargs, dict):
                raise TypeError(f"keywords of {name} must be a map, got {type(kwargs).__name__}")
            waits = method.waits
            if waits:
                self._check_wait_room(size)
            server = self._server
            arguments = method.arguments(kwargs, server.limits)  # refused before the store is looked up
            call = getattr(server.store, method.name)(**arguments)
            if type(call) is not types.CoroutineType:
                call = _awaited(call)
        except Exception as exc:  # a refused request: back to its caller
            self._reply([request_id, _ERROR, dump_exception(exc)])
            return
        try:
            suspended_on = call.send(None)
        except StopIteration as returned:
            self._reply(_answer(request_id, method, returned.value))
            return
        except Exception as exc:  # the store's error goes back to its caller; the server carries on
            self._reply([request_id, _ERROR, dump_exception(exc)])
            return
        task = loop.create_task(self._finish(request_id, method, call, suspended_on))
        self._tasks.add(task)
        if waits:
            self._waits += 1
            self._wait_bytes += size
        else:
            self._calls += 1
            self._call_bytes += size
        task.add_done_callback(functools.partial(self._ended, waits, size))

    def _check_wait_room(self, size: int) -> None:
        limit = self._server.max_request_bytes
        if self._waits >= _MAX_WAITS or self._wait_bytes + size > limit:
            raise RuntimeError(
                f"wait_for_rollouts refused: this connection already has {self._waits} waits pending, "
                f"holding {self._wait_bytes} bytes of requests (limits per connection: {_MAX_WAITS} "
                f"waits, {limit} bytes: the server's max_request_bytes); let one end first"
            )

    def _ended(self, waits: bool, size: int, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if waits:
            self._waits -= 1
            self._wait_bytes -= size
        else:
            self._calls -= 1
            self._call_bytes -= size
        self._progress.set()

    async def _finish(
        self, request_id: Any, method: StoreMethod, call: Coroutine[Any, Any, Any], suspended_on: Any
    ) -> None:
        """Run a store call that suspended (``_take`` ran it that far) to its end, then answer it."""
        try:
            result = await _continue(call, suspended_on)
        except asyncio.CancelledError:
            raise  # the server is closing: the client sees the connection drop
        except Exception as exc:  # the store's error goes back to its caller; the server carries on
            self._reply([request_id, _ERROR, dump_exception(exc)])
            return
        self._reply(_answer(request_id, method, result))

    def _reply(self, reply: list[Any]) -> None:
        """Send ``reply`` whole before returning (see the class docstring); a client gone is ignored."""
        try:
            payload = self._replies.pack(reply)
        except Exception as exc:  # e.g. a result msgpack cannot encode
            payload = self._replies.pack([reply[0], _ERROR, dump_exception(exc)])
        try:
            if not self._blocking:
                try:
                    sent = self._sock.send(payload)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent == len(payload):
                    return
                # The client is not reading: wait for it here, without reading it (backpressure).
                self._set_blocking(True)
                with payload[sent:] as rest:
                    self._sock.sendall(rest)
                return
            self._sock.sendall(payload)
        except OSError:
            pass  # the client is gone; the read side ends this connection
        finally:
            self._replies.release(payload)

    def shut_down(self) -> None:
        """Wake the thread from any read, write or wait for room (from another thread): it then ends."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed already: nothing to wake
                loop.call_soon_threadsafe(self._progress.set)


def _answer(request_id: Any, method: StoreMethod, result: Any) -> list[Any]:
    """The reply carrying ``result``; an error reply if it cannot be encoded (not of the method's type)."""
    try:
        return [request_id, _OK, _encode(method, result)]
    except Exception as exc:
        return [request_id, _ERROR, dump_exception(exc)]


async def _awaited(awaitable: Any) -> Any:
    """A coroutine awaiting ``awaitable``: a store method that returned some other awaitable."""
    return await awaitable


@types.coroutine
def _continue(coro: Coroutine[Any, Any, Any], suspended_on: Any) -> Generator[Any, Any, Any]:
    """Drive a coroutine that already ran to its first suspension, as its Task would have; its result."""
    value = suspended_on
    while True:
        try:
            sent = yield value
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # cancellation and friends go into the coroutine, as a Task's would
            try:
                value = coro.throw(exc)
            except StopIteration as returned:
                return returned.value
        else:
            try:
                value = coro.send(sent)
            except StopIteration as returned:
                return returned.value


class IpcStoreServer:
    """Serves ``store`` on the Unix socket ``path``: a thread accepts, a thread per connection answers.

    The socket is bound and listening as soon as the server is constructed (so clients may connect
    before ``start()``: the kernel queues them); ``start()`` begins answering; ``close()`` stops every
    thread (bounded), drops connections, and removes the socket file. ``store`` is called from the
    connection threads, each with its own event loop; it must tolerate that (wrap a store that is not
    thread-safe in a ``ThreadedLightningStore``).

    ``max_connections`` and ``max_request_bytes`` bound what clients can make the server hold (see the
    module docstring). ``limits`` are the value rule's bounds applied to every request; by default the
    store's own (its ``limits`` attribute, as ``InMemoryLightningStore`` has), else ``DEFAULT_LIMITS``.
    """

    def __init__(
        self,
        store: LightningStore,
        path: str | os.PathLike[str],
        *,
        backlog: int = 128,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        limits: ValueLimits | None = None,
    ) -> None:
        self.store = store
        self.path = os.fspath(path)
        self.max_connections = _positive_int(max_connections, "max_connections")
        self.max_request_bytes = _positive_int(max_request_bytes, "max_request_bytes")
        if limits is None:
            limits = getattr(store, "limits", None)
            limits = limits if isinstance(limits, ValueLimits) else DEFAULT_LIMITS
        elif not isinstance(limits, ValueLimits):
            raise TypeError(f"limits must be a ValueLimits, got {type(limits).__name__} {limits!r}")
        self.limits: ValueLimits = limits
        self._lock = threading.Lock()
        self._connections: dict[threading.Thread, _ServedConnection] = {}
        self._accepted = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._closed = False
        refusal = StoreChannelError(
            f"the ipc store server at {self.path!r} serves at most {self.max_connections} connections "
            f"at once (its max_connections), and has that many"
        )
        self._refusal: bytes = msgpack.packb([None, _ERROR, dump_exception(refusal)], use_bin_type=True)
        self._wake_r, self._wake_w = os.pipe()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            os.chmod(self.path, 0o600)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise StoreChannelError(f"cannot listen on the ipc socket {self.path!r}: {exc}") from exc
        self._sock = sock

    def start(self) -> None:
        """Start accepting on a thread named ``agl-ipc-store-server``; clients are answered from now on."""
        if self._thread is not None or self._closed:
            raise RuntimeError("IpcStoreServer can be started once")
        self._thread = threading.Thread(target=self._accept, name="agl-ipc-store-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fd for key, _ in selector.select()}
                if self._wake_r in ready:
                    return  # close() was called
                try:
                    sock, _ = self._sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError:
                    logger.exception("ipc store server: accept() failed; no further clients are taken")
                    return
                sock.setblocking(True)
                with self._lock:
                    if self._closed:
                        sock.close()
                        return
                    if len(self._connections) >= self.max_connections:
                        self._refuse(sock)
                        continue
                    connection = _ServedConnection(self, sock)
                    thread = threading.Thread(
                        target=self._run_connection,
                        args=(connection,),
                        name=f"agl-ipc-store-conn-{next(self._accepted)}",
                        daemon=True,
                    )
                    self._connections[thread] = connection
                    thread.start()  # under the lock: close() never sees a thread it cannot join

    def _refuse(self, sock: socket.socket) -> None:
        """Tell a client over ``max_connections`` why, then hang up (the reply fits an empty socket)."""
        logger.warning(
            "ipc store server: refused a connection, %d served (max_connections)", self.max_connections
        )
        with contextlib.suppress(OSError):
            sock.send(self._refusal)
        sock.close()

    def _run_connection(self, connection: _ServedConnection) -> None:
        try:
            connection.run()
        finally:
            with self._lock:
                self._connections.pop(threading.current_thread(), None)

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving, join every thread (bounded), close the socket, remove its file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            connections = dict(self._connections)
        deadline = time.monotonic() + timeout
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\x01")  # the accept thread; it takes no connection once closed
        for connection in connections.values():
            connection.shut_down()
        for thread in [t for t in (self._thread, *connections) if t is not None]:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.error("ipc store server thread %s did not stop within %.3gs", thread.name, timeout)
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> IpcStoreServer:
        """Serve for the ``with`` block (started here unless ``start()`` was already called)."""
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"IpcStoreServer({self.path!r})"


# -- the client ---------------------------------------------------------------------------------------


class _ClientConnection:
    """A client's socket on one event loop: requests multiplexed by id, replies routed to their futures.

    Built on a raw socket and the loop's ``add_reader``/``add_writer`` rather than a transport, because
    ``call`` has a fast path that needs the socket itself: with nothing else in flight, it sends the
    request and waits for the reply in ``recv`` for up to ``_FAST_REPLY_SECONDS``, instead of going
    round the event loop (the server answers most calls in less time than a loop round takes). The
    socket is blocking with that receive timeout (``SO_RCVTIMEO``), so the wait is one system call
    rather than ``poll()`` then ``recv``; every read and write on the loop's behalf passes
    ``MSG_DONTWAIT`` and never blocks. A later reply is awaited on the loop as usual, so a slow call
    holds up the caller's other tasks for at most that long. So that those tasks still run, and a
    cancellation still lands, a caller whose calls all take the fast path yields to the loop once per
    ``_YIELD_EVERY_SECONDS``.
    """

    def __init__(
        self, path: str, sock: socket.socket, loop: asyncio.AbstractEventLoop, max_request_bytes: int
    ) -> None:
        self.path = path
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.lost: StoreChannelError | None = None
        self._sock: socket.socket | None = sock
        self._loop = loop
        self._reader = _FrameReader(MAX_REPLY_BYTES)
        self._max_request_bytes = max_request_bytes
        self._outbox = bytearray()
        self._requests = _ReusedPacker()
        self._next_id = 0
        self._yielded_at = time.monotonic()
        # Blocking, with a receive timeout of the fast path's length: the fast path then waits for its reply
        # in recv itself (one system call instead of poll and recv); every other read and write passes
        # MSG_DONTWAIT, so nothing on the event loop's path ever blocks.
        sock.setblocking(True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _FAST_REPLY_TIMEVAL)
        loop.add_reader(sock.fileno(), self._on_readable)

    async def call(self, method: StoreMethod, kwargs: dict[str, Any]) -> Any:
        """The result of one call, raised by the rule of ``remote.py`` when the server answers an error."""
        try:
            if self.lost is not None or self._sock is None:
                raise self.lost or StoreChannelError(
                    f"not connected to the ipc store server at {self.path!r}"
                )
            self._next_id += 1
            request_id = self._next_id
            fast = not self.pending and not method.waits
            self._send([request_id, method.name, kwargs])
            if fast and not self._outbox:
                reply = self._wait_briefly(request_id)
                if reply is not None:
                    now = time.monotonic()
                    if now - self._yielded_at >= _YIELD_EVERY_SECONDS:
                        self._yielded_at = now
                        await asyncio.sleep(0)
                    return self._result(reply)
            if self.lost is not None:
                raise self.lost
            future: asyncio.Future[Any] = self._loop.create_future()
            self.pending[request_id] = future
            try:
                return await future
            finally:
                self.pending.pop(request_id, None)
                self._yielded_at = time.monotonic()
        except _Failed as failed:
            error = failed.error
            raise StoreServerError(
                f"the ipc store server at {self.path!r} failed {method.name}: {type(error).__name__}: {error}"
            ) from error

    def _wait_briefly(self, request_id: int) -> list[Any] | None:
        """The reply to ``request_id`` if it comes within ``_FAST_REPLY_SECONDS``, else ``None``."""
        deadline = time.monotonic() + _FAST_REPLY_SECONDS
        while self.lost is None:
            data = self._recv(0)  # waits _FAST_REPLY_SECONDS at most (SO_RCVTIMEO)
            if data is None:
                return None
            reply = self._dispatch(data, wanted=request_id)
            if reply is not None:
                return reply
            if time.monotonic() >= deadline:
                return None
        return None

    def _result(self, reply: list[Any]) -> Any:
        if reply[1] == _OK:
            return reply[2]
        error = load_exception(reply[2], origin=f"the ipc store server at {self.path!r}")
        if isinstance(error, ValueError):
            raise error
        raise _Failed(error)

    # -- reading ------------------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        data = self._recv(socket.MSG_DONTWAIT)
        if data is not None:
            self._dispatch(data, wanted=None)

    def _recv(self, flags: int) -> memoryview | None:
        """What the socket holds (``None`` if nothing yet); end of stream or an error loses the connection.
        ``flags``: ``MSG_DONTWAIT`` not to wait at all, else 0 (wait for the receive timeout at most)."""
        if self._sock is None:
            return None
        try:
            data = self._reader.chunk[: self._sock.recv_into(self._reader.chunk, 0, flags)]
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            self._lose(f"closed: {exc}")
            return None
        if not data:
            self._lose("closed")
            return None
        return data

    def _dispatch(self, data: memoryview, wanted: int | None) -> list[Any] | None:
        """Settle the futures of the replies in ``data``; the reply to ``wanted`` is returned instead."""
        try:
            replies = self._reader.messages(data)
        except StoreChannelError as exc:
            self._lose(f"sent a bad frame: {exc}")
            return None
        found = None
        for reply in replies:
            if not (isinstance(reply, list) and len(reply) == 3):
                self._lose("sent a malformed reply")
                return None
            if reply[0] is None:  # about the connection itself (we send no request without an id)
                self._lose(f"was refused: {load_exception(reply[2])}")
                return None
            if reply[0] == wanted:
                found = reply
                continue
            future = self.pending.pop(reply[0], None)
            if future is None or future.done():
                continue  # the reply to a call its caller cancelled
            try:
                future.set_result(self._result(reply))
            except BaseException as exc:  # the store's error, for its caller
                future.set_exception(exc)
        return found

    # -- writing ------------------------------------------------------------------------------------------

    def _send(self, request: list[Any]) -> None:
        payload = self._requests.pack(request)  # a keyword msgpack cannot encode raises here, to the caller
        try:
            if len(payload) > self._max_request_bytes:  # the server would drop the connection: refuse it here
                raise ValueError(
                    f"{request[1]} request of {len(payload)} bytes exceeds the ipc store server's "
                    f"max_request_bytes ({self._max_request_bytes})"
                )
            if self._outbox:
                self._outbox += payload  # earlier requests are still queued: keep the order
                return
            assert self._sock is not None
            try:
                sent = self._sock.send(payload, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._lose_on_write(exc)
                return
            if sent < len(payload):
                self._outbox += payload[sent:]
                self._loop.add_writer(self._sock.fileno(), self._on_writable)
        finally:
            self._requests.release(payload)

    def _on_writable(self) -> None:
        if self._sock is None:
            return
        try:
            sent = self._sock.send(self._outbox, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose_on_write(exc)
            return
        del self._outbox[:sent]
        if not self._outbox:
            self._loop.remove_writer(self._sock.fileno())

    # -- ending -------------------------------------------------------------------------------------------

    def _lose_on_write(self, exc: OSError) -> None:
        """Writing failed: the server may have said why before it hung up (a refusal), so read that first."""
        if self._sock is not None:
            try:
                received = self._sock.recv_into(self._reader.chunk, 0, socket.MSG_DONTWAIT)
            except OSError:
                received = 0
            if received:
                self._dispatch(self._reader.chunk[:received], wanted=None)
        if self.lost is None:
            self._lose(f"closed: {exc}")

    def _lose(self, what: str) -> None:
        """The connection is unusable: close it and fail every call in flight with one clear error."""
        self.lost = StoreChannelError(f"connection to the ipc store server at {self.path!r} {what}")
        self.close()
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(self.lost)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed already: it watches nothing any more
            self._loop.remove_reader(sock.fileno())
            self._loop.remove_writer(sock.fileno())
        sock.close()


class _Failed(Exception):
    """The server answered an error that is no ``ValueError``: ``call`` raises it as ``StoreServerError``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class IpcLightningStore(RemoteLightningStore):
    """A ``LightningStore`` whose calls are answered by an ``IpcStoreServer`` at ``path``.

    Picklable (only the path travels), so it can be handed to a worker process under any start
    method; it connects lazily, once per event loop, and reconnects after ``close()``. An unreachable
    server is a ``StoreChannelError`` naming the socket path, raised at once (the server is local: a
    refused connection will not fix itself, so there is no retry loop). ``close()`` closes only this
    client's connection, never the served store.

    Values are checked by the value rule with ``limits`` before they are sent, and a request larger than
    ``max_request_bytes`` is refused here: give both as the server has them (the ``ipc`` strategy does).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limits: ValueLimits = DEFAULT_LIMITS,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        if not isinstance(limits, ValueLimits):
            raise TypeError(f"limits must be a ValueLimits, got {type(limits).__name__} {limits!r}")
        self.path = os.fspath(path)
        self.limits = limits
        self.max_request_bytes = _positive_int(max_request_bytes, "max_request_bytes")
        self._connection: _ClientConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Future[_ClientConnection] | None = None

    @property
    def _outgoing_limits(self) -> ValueLimits:
        return self.limits

    def _call(self, method: StoreMethod, kwargs: dict[str, Any]) -> Coroutine[Any, Any, Any]:
        # A plain function returning the connection's coroutine: one coroutine fewer per call.
        connection = self._connection
        if connection is None or connection.lost is not None or self._loop is not asyncio.get_running_loop():
            return self._connect_and_call(method, kwargs)
        return connection.call(method, kwargs)

    async def _connect_and_call(self, method: StoreMethod, kwargs: dict[str, Any]) -> Any:
        return await (await self._connect()).call(method, kwargs)

    async def _connect(self) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._drop()
        if self._connecting is not None and not self._connecting.done():
            return await asyncio.shield(self._connecting)  # share one connect among concurrent callers
        if self._connection is not None and self._connection.lost is None:
            return self._connection
        self._loop = loop
        self._connecting = loop.create_future()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, self.path)
        except BaseException as exc:
            sock.close()
            connecting, self._connecting = self._connecting, None
            if not isinstance(exc, OSError):
                connecting.cancel()  # e.g. this caller was cancelled: others waiting on it retry
                raise
            error = StoreChannelError(f"cannot reach the ipc store server at {self.path!r}: {exc}")
            connecting.set_exception(error)
            connecting.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise error from exc
        connection = _ClientConnection(self.path, sock, loop, self.max_request_bytes)
        self._connection = connection
        self._connecting.set_result(connection)
        return connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._connecting = None
        if connection is not None:
            connection.close()

    async def close(self) -> None:
        """Close this client's connection (idempotent); the next call reconnects."""
        self._drop()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "limits": self.limits, "max_request_bytes": self.max_request_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["path"], limits=state["limits"], max_request_bytes=state["max_request_bytes"]
        )

    def __repr__(self) -> str:
        return f"IpcLightningStore({self.path!r})"
