"""The store over a Unix domain socket: ``IpcStoreServer`` serves a store, ``IpcLightningStore`` uses it.

Used by the ``ipc`` strategy to give runner processes the caller's store. Why a Unix socket: it is a
kernel-buffered byte stream with flow control, several processes can connect to one listening socket,
a dead peer shows up at once as EOF, asyncio drives both ends natively, and nothing listens on the
network. Pipes would need one pair per process and no connect step; shared memory would need our own
locking and wake-ups for what the socket gives for free.

Wire format: a stream of msgpack messages (self-delimiting; msgpack's streaming unpacker splits them).
A request is ``[id, method, kwargs]``; model keywords travel as ``model_dump(mode="json")`` and are
rebuilt with ``model_validate``; results travel as the model's JSON bytes (pydantic writes and parses
them in Rust, cheaper than building and walking Python dicts on both sides); ``UNSET`` keywords are
simply omitted. A reply is ``[id, 0, result]`` or ``[id, 1, error]``, where ``error`` is a store
exception serialised by ``remote_errors`` so the client re-raises the store's own ``ValueError`` (the
server never unpickles what clients send, only msgpack).
Requests are multiplexed: one connection per client and event loop, many calls in flight
(``wait_for_rollouts`` does not hold up the others).

The socket file lives wherever the caller puts it (the strategy uses a private temporary directory);
``IpcStoreServer.close()`` removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import types
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, Literal

import msgpack

from agentlightning.execution.remote_errors import dump_exception, load_exception
from agentlightning.store.base import UNSET, LightningStore, Unset
from agentlightning.types import (
    Attempt,
    AttemptedRollout,
    AttemptStatus,
    NamedResources,
    ResourcesUpdate,
    Rollout,
    RolloutConfig,
    RolloutMode,
    RolloutStatus,
    Span,
    TaskInput,
)

__all__ = ["IpcLightningStore", "IpcStoreServer", "StoreChannelError"]

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 256 * 1024 * 1024
"""A frame larger than this is a protocol error (it would otherwise be buffered whole in memory)."""

_OK = 0
_ERROR = 1


class StoreChannelError(ConnectionError):
    """The channel to the store server failed (unreachable, closed, or a protocol error)."""


def _pack(message: Any) -> bytes:
    # msgpack messages delimit themselves: the stream needs no framing of its own.
    return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]


class _FrameReader:
    """Splits a byte stream into msgpack messages; ``feed`` returns the messages completed so far.

    msgpack's streaming ``Unpacker`` does the work (in C); a message larger than ``MAX_FRAME_BYTES``,
    or bytes that are no msgpack, raise ``StoreChannelError``.
    """

    __slots__ = ("_unpacker",)

    def __init__(self) -> None:
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_FRAME_BYTES)

    def feed(self, data: bytes) -> list[Any]:
        try:
            self._unpacker.feed(data)
            return list(self._unpacker)
        except msgpack.BufferFull:
            raise StoreChannelError(f"a message exceeds the {MAX_FRAME_BYTES}-byte limit") from None
        except (ValueError, msgpack.UnpackException) as exc:
            raise StoreChannelError(f"not a msgpack stream: {type(exc).__name__}: {exc}") from None


# -- the server ---------------------------------------------------------------------------------------


def _model_or_none(value: Any) -> Any:
    return None if value is None else value.__pydantic_serializer__.to_json(value)


def _models(values: Sequence[Any]) -> list[Any]:
    return [value.__pydantic_serializer__.to_json(value) for value in values]


# How the server encodes each method's result, and which keywords arrive as models.
_RESULT_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "start_rollout": _model_or_none,
    "enqueue_rollout": _model_or_none,
    "dequeue_rollout": _model_or_none,
    "start_attempt": _model_or_none,
    "update_rollout": _model_or_none,
    "query_rollouts": _models,
    "get_rollout_by_id": _model_or_none,
    "wait_for_rollouts": _models,
    "query_attempts": _models,
    "get_latest_attempt": _model_or_none,
    "update_attempt": _model_or_none,
    "add_span": _model_or_none,
    "query_spans": _models,
    "add_resources": _model_or_none,
    "get_latest_resources": _model_or_none,
    "get_resources_by_id": _model_or_none,
}
_CONFIG: tuple[tuple[str, type[Any]], ...] = (("config", RolloutConfig),)
_MODEL_KEYWORDS: dict[str, tuple[tuple[str, type[Any]], ...]] = {
    "start_rollout": _CONFIG,
    "enqueue_rollout": _CONFIG,
    "update_rollout": _CONFIG,
    "add_span": (("span", Span),),
}


class _ServerConnection(asyncio.Protocol):
    def __init__(self, server: IpcStoreServer) -> None:
        self._server = server
        self._reader = _FrameReader()
        self._transport: asyncio.Transport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            requests = self._reader.feed(data)
        except Exception as exc:  # a garbled stream cannot be resynchronised: drop this client only
            logger.error("ipc store server: dropping a client that sent a bad frame: %s", exc)
            self.close()
            return
        for request in requests:
            # Run eagerly up to the first suspension: most store calls never suspend, and skipping the
            # task and a loop iteration per request is most of the server's cost per call.
            coro = self._serve(request)
            try:
                suspended_on = coro.send(None)
            except StopIteration:
                continue
            task = asyncio.get_running_loop().create_task(_resume(coro, suspended_on))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, request: Any) -> None:
        request_id: Any = None
        try:
            request_id, method, kwargs = request
            encode = _RESULT_ENCODERS.get(method) if isinstance(method, str) else None
            if encode is None:
                raise ValueError(f"unknown store method {method!r}")
            if not isinstance(kwargs, dict):
                raise TypeError(f"keywords of {method} must be a map, got {type(kwargs).__name__}")
            for name, model in _MODEL_KEYWORDS.get(method, ()):
                if kwargs.get(name) is not None:
                    kwargs[name] = model.model_validate(kwargs[name])
            result = encode(await getattr(self._server.store, method)(**kwargs))
            reply = [request_id, _OK, result]
        except asyncio.CancelledError:
            raise  # the server is closing: the client sees the connection drop
        except Exception as exc:  # the store's error goes back to its caller; the server carries on
            reply = [request_id, _ERROR, dump_exception(exc)]
        if self._transport is not None and not self._transport.is_closing():
            try:
                self._transport.write(_pack(reply))
            except Exception as exc:  # e.g. a result msgpack cannot encode
                self._transport.write(_pack([request_id, _ERROR, dump_exception(exc)]))

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        for task in list(self._tasks):
            task.cancel()
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@types.coroutine
def _continue(coro: Coroutine[Any, Any, None], suspended_on: Any) -> Generator[Any, Any, None]:
    """Drive a coroutine that already ran to its first suspension, as its Task would have."""
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
            except StopIteration:
                return
        else:
            try:
                value = coro.send(sent)
            except StopIteration:
                return


async def _resume(coro: Coroutine[Any, Any, None], suspended_on: Any) -> None:
    await _continue(coro, suspended_on)


class IpcStoreServer:
    """Serves ``store`` on the Unix socket ``path`` from a thread of its own with its own event loop.

    The socket is bound and listening as soon as the server is constructed (so clients may connect
    before ``start()``: the kernel queues them); ``start()`` begins answering; ``close()`` stops the
    thread, drops connections, and removes the socket file. ``store`` is called only on the server's
    loop; it must tolerate being used from that thread (wrap a store that is not thread-safe).
    """

    def __init__(self, store: LightningStore, path: str | os.PathLike[str], *, backlog: int = 128) -> None:
        self.store = store
        self.path = os.fspath(path)
        self._connections: set[_ServerConnection] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._closed = False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            os.chmod(self.path, 0o600)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise StoreChannelError(f"cannot listen on the ipc socket {self.path!r}: {exc}") from exc
        self._sock: socket.socket | None = sock

    def start(self) -> None:
        """Start answering requests on a thread named ``agl-ipc-store-server``; returns once it serves."""
        if self._thread is not None or self._closed:
            raise RuntimeError("IpcStoreServer can be started once")
        self._thread = threading.Thread(target=self._run, name="agl-ipc-store-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise StoreChannelError(f"the ipc store server failed to start: {self._startup_error!r}")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()  # never installed as this thread's current loop
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start() or logged: a server thread must not die silently
            if not self._ready.is_set():
                self._startup_error = exc
            else:
                logger.exception("ipc store server stopped on an error")
        finally:
            self._ready.set()
            try:
                pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        assert self._sock is not None
        server = await loop.create_unix_server(lambda: _ServerConnection(self), sock=self._sock)
        self._sock = None  # the asyncio server owns it now
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for connection in list(self._connections):
                connection.close()
            await asyncio.sleep(0)  # let the transports run connection_lost (it cancels their tasks)
            await server.wait_closed()

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving, join the thread (bounded), close the socket, remove its file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop, thread = self._loop, self._thread
        if thread is not None and loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended on its own
                loop.call_soon_threadsafe(self._stopping.set)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.error("ipc store server thread did not stop within %.3gs", timeout)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
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


class _ClientConnection(asyncio.Protocol):
    def __init__(self, path: str) -> None:
        self.path = path
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self._reader = _FrameReader()
        self._next_id = 0
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._reader.feed(data)
        except Exception as exc:
            self._fail(StoreChannelError(f"bad frame from the ipc store server at {self.path!r}: {exc}"))
            if self.transport is not None:
                self.transport.close()
            return
        for reply in replies:
            if not (isinstance(reply, list) and len(reply) == 3):
                self._fail(StoreChannelError(f"malformed reply from the ipc store server at {self.path!r}"))
                if self.transport is not None:
                    self.transport.close()
                return
            request_id, status, payload = reply
            future = self.pending.pop(request_id, None)
            if future is None or future.done():
                continue
            if status == _OK:
                future.set_result(payload)
            else:
                future.set_exception(load_exception(payload, origin=f"the ipc store server at {self.path!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self._fail(StoreChannelError(f"connection to the ipc store server at {self.path!r} closed{reason}"))
        self.transport = None

    def _fail(self, error: BaseException) -> None:
        self.lost = error
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    async def call(self, method: str, kwargs: dict[str, Any]) -> Any:
        if self.lost is not None or self.transport is None:
            raise self.lost or StoreChannelError(f"not connected to the ipc store server at {self.path!r}")
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        self.transport.write(_pack([request_id, method, kwargs]))
        try:
            return await future
        finally:
            self.pending.pop(request_id, None)


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _given(**fields: Any) -> dict[str, Any]:
    return {name: _dump(value) for name, value in fields.items() if value is not UNSET}


class IpcLightningStore(LightningStore):
    """A ``LightningStore`` whose calls are answered by an ``IpcStoreServer`` at ``path``.

    Picklable (only the path travels), so it can be handed to a worker process under any start
    method; it connects lazily, once per event loop, and reconnects after ``close()``. An unreachable
    server is a ``StoreChannelError`` naming the socket path, raised at once (the server is local: a
    refused connection will not fix itself, so there is no retry loop). ``close()`` closes only this
    client's connection, never the served store.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._connection: _ClientConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Future[_ClientConnection] | None = None

    async def _call(self, method: str, kwargs: dict[str, Any]) -> Any:
        connection = self._connection
        if connection is None or connection.lost is not None or self._loop is not asyncio.get_running_loop():
            connection = await self._connect()
        return await connection.call(method, kwargs)

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
        try:
            _, connection = await loop.create_unix_connection(lambda: _ClientConnection(self.path), self.path)
        except OSError as exc:
            error = StoreChannelError(f"cannot reach the ipc store server at {self.path!r}: {exc}")
            self._connecting.set_exception(error)
            self._connecting.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            self._connecting = None
            raise error from exc
        self._connection = connection
        self._connecting.set_result(connection)
        return connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._connecting = None
        if connection is not None and connection.transport is not None:
            with contextlib.suppress(RuntimeError):  # its loop is gone: the fd goes with the loop's GC
                connection.transport.close()

    async def close(self) -> None:
        """Close this client's connection (idempotent); the next call reconnects."""
        connection = self._connection
        self._drop()
        if connection is not None and connection.transport is None:
            return
        await asyncio.sleep(0)  # let the transport finish closing on this loop (no ResourceWarning)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"IpcLightningStore({self.path!r})"

    # -- rollouts -------------------------------------------------------------------------------------

    async def start_rollout(
        self,
        input: TaskInput,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AttemptedRollout:
        kwargs = _given(input=input, mode=mode, resources_id=resources_id, config=config, metadata=metadata)
        return AttemptedRollout.model_validate_json(await self._call("start_rollout", kwargs))

    async def enqueue_rollout(
        self,
        input: TaskInput,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Rollout:
        kwargs = _given(input=input, mode=mode, resources_id=resources_id, config=config, metadata=metadata)
        return Rollout.model_validate_json(await self._call("enqueue_rollout", kwargs))

    async def dequeue_rollout(self) -> AttemptedRollout | None:
        result = await self._call("dequeue_rollout", {})
        return None if result is None else AttemptedRollout.model_validate_json(result)

    async def start_attempt(self, rollout_id: str) -> AttemptedRollout:
        return AttemptedRollout.model_validate_json(
            await self._call("start_attempt", {"rollout_id": rollout_id})
        )

    async def update_rollout(
        self,
        rollout_id: str,
        input: TaskInput | Unset = UNSET,
        mode: RolloutMode | Unset | None = UNSET,
        resources_id: str | Unset | None = UNSET,
        status: RolloutStatus | Unset = UNSET,
        config: RolloutConfig | Unset = UNSET,
        metadata: dict[str, Any] | Unset = UNSET,
    ) -> Rollout:
        kwargs = _given(
            rollout_id=rollout_id,
            input=input,
            mode=mode,
            resources_id=resources_id,
            status=status,
            config=config,
            metadata=metadata,
        )
        return Rollout.model_validate_json(await self._call("update_rollout", kwargs))

    async def query_rollouts(
        self,
        *,
        status: Sequence[RolloutStatus] | None = None,
        rollout_ids: Sequence[str] | None = None,
    ) -> list[Rollout]:
        kwargs = {
            "status": None if status is None else list(status),
            "rollout_ids": None if rollout_ids is None else list(rollout_ids),
        }
        return [Rollout.model_validate_json(item) for item in await self._call("query_rollouts", kwargs)]

    async def get_rollout_by_id(self, rollout_id: str) -> Rollout | None:
        result = await self._call("get_rollout_by_id", {"rollout_id": rollout_id})
        return None if result is None else Rollout.model_validate_json(result)

    async def wait_for_rollouts(
        self, *, rollout_ids: list[str], timeout: float | None = None
    ) -> list[Rollout]:
        kwargs = {"rollout_ids": list(rollout_ids), "timeout": timeout}
        return [Rollout.model_validate_json(item) for item in await self._call("wait_for_rollouts", kwargs)]

    # -- attempts -------------------------------------------------------------------------------------

    async def query_attempts(self, rollout_id: str) -> list[Attempt]:
        return [
            Attempt.model_validate_json(a)
            for a in await self._call("query_attempts", {"rollout_id": rollout_id})
        ]

    async def get_latest_attempt(self, rollout_id: str) -> Attempt | None:
        result = await self._call("get_latest_attempt", {"rollout_id": rollout_id})
        return None if result is None else Attempt.model_validate_json(result)

    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str | Literal["latest"],
        status: AttemptStatus | Unset = UNSET,
        worker_id: str | Unset | None = UNSET,
        last_heartbeat_time: float | Unset = UNSET,
        metadata: dict[str, Any] | Unset = UNSET,
    ) -> Attempt:
        kwargs = _given(
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            status=status,
            worker_id=worker_id,
            last_heartbeat_time=last_heartbeat_time,
            metadata=metadata,
        )
        return Attempt.model_validate_json(await self._call("update_attempt", kwargs))

    # -- spans ----------------------------------------------------------------------------------------

    async def add_span(self, span: Span) -> Span:
        return Span.model_validate_json(await self._call("add_span", {"span": span.model_dump(mode="json")}))

    async def query_spans(
        self, rollout_id: str, attempt_id: str | Literal["latest"] | None = None
    ) -> list[Span]:
        kwargs = {"rollout_id": rollout_id, "attempt_id": attempt_id}
        return [Span.model_validate_json(item) for item in await self._call("query_spans", kwargs)]

    # -- resources ------------------------------------------------------------------------------------

    async def add_resources(self, resources: NamedResources) -> ResourcesUpdate:
        return ResourcesUpdate.model_validate_json(
            await self._call("add_resources", {"resources": resources})
        )

    async def get_latest_resources(self) -> ResourcesUpdate | None:
        result = await self._call("get_latest_resources", {})
        return None if result is None else ResourcesUpdate.model_validate_json(result)

    async def get_resources_by_id(self, resources_id: str) -> ResourcesUpdate | None:
        result = await self._call("get_resources_by_id", {"resources_id": resources_id})
        return None if result is None else ResourcesUpdate.model_validate_json(result)
