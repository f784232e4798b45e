"""Serve a ``LightningStore`` over HTTP: the FastAPI application and the thread that runs it (uvicorn).

Every store method is one route, ``POST /v1/<method>``, whose JSON body holds the method's keywords and whose
response is the pydantic model the method returns (FastAPI publishes the schema at ``/openapi.json``).
Ids travel in bodies, never in paths, so any id string is safe. Bad input never reaches the store and never
takes the server down; it gets a JSON error ``{"error": code, "detail": message, ...}``:

- malformed JSON: 400 ``invalid_json``; wrong or missing fields: 422 ``invalid_request`` naming each field;
- an operation on an unknown rollout or attempt: 404 ``not_found`` naming the id (lookups such as
  ``get_rollout_by_id`` keep the store's meaning and answer ``null``);
- any other ``ValueError`` of the store (an illegal transition): 409 ``conflict`` with its message;
- a body over ``max_body_bytes``: 413; a missing or wrong token: 401; an unexpected store error: 500.

``LightningStoreServer`` binds the socket itself (so a taken port is a clear ``ServerBindError`` naming host
and port before anything else starts, and port 0 yields the real port at once), then runs uvicorn on its own
event loop in one thread. Stopping is event-driven (no polling tick) and leaves no thread or socket behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import inspect
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, ClassVar, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentlightning.env import AGL_SERVER_TOKEN
from agentlightning.execution.events import ExecutionEvent, wait_async
from agentlightning.store.base import LightningStore
from agentlightning.types import (
    Attempt,
    AttemptedRollout,
    AttemptStatus,
    ResourcesUpdate,
    Rollout,
    RolloutConfig,
    RolloutMode,
    RolloutStatus,
    Span,
    TaskInput,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_WAIT_SECONDS",
    "LightningStoreServer",
    "RunnerSides",
    "ServerBindError",
    "create_app",
    "is_loopback",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest request body accepted (bytes); larger ones get 413 before the store sees them."""

DEFAULT_MAX_WAIT_SECONDS = 30.0
"""Longest a single ``wait_for_rollouts`` request is held; clients wanting longer ask again."""

API_PREFIX = "/v1"

_T = TypeVar("_T")
_ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


class ServerBindError(OSError):
    """The server could not listen on its address (taken port, unknown host, no permission)."""


# -- request bodies ---------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _NotNull(_Body):
    """Keywords whose ``None`` means nothing to the store: when given, they must carry a value."""

    _not_null: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _given_fields_are_not_null(self) -> _NotNull:
        for name in self._not_null:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} may be omitted but not null")
        return self

    def given(self, *exclude: str) -> dict[str, Any]:
        """The keywords the client sent (omitted ones keep the store's ``UNSET`` default)."""
        return {name: getattr(self, name) for name in self.model_fields_set if name not in exclude}


class RolloutCreateRequest(_Body):
    """Keywords of ``start_rollout`` and ``enqueue_rollout``."""

    input: TaskInput
    mode: RolloutMode | None = None
    resources_id: str | None = None
    config: RolloutConfig | None = None
    metadata: dict[str, Any] | None = None


class RolloutIdRequest(_Body):
    rollout_id: str = Field(min_length=1)


class RolloutUpdateRequest(_NotNull):
    """Keywords of ``update_rollout``; omitted fields are left unchanged."""

    _not_null: ClassVar[tuple[str, ...]] = ("status", "config", "metadata")

    rollout_id: str = Field(min_length=1)
    input: TaskInput = None
    mode: RolloutMode | None = None
    resources_id: str | None = None
    status: RolloutStatus | None = None
    config: RolloutConfig | None = None
    metadata: dict[str, Any] | None = None


class RolloutQueryRequest(_Body):
    status: list[RolloutStatus] | None = None
    rollout_ids: list[str] | None = None


class WaitRequest(_Body):
    rollout_ids: list[str]
    timeout: float | None = Field(default=None, ge=0)


class AttemptUpdateRequest(_NotNull):
    """Keywords of ``update_attempt``; omitted fields are left unchanged."""

    _not_null: ClassVar[tuple[str, ...]] = ("status", "last_heartbeat_time", "metadata")

    rollout_id: str = Field(min_length=1)
    attempt_id: str = Field(min_length=1)
    status: AttemptStatus | None = None
    worker_id: str | None = None
    last_heartbeat_time: float | None = None
    metadata: dict[str, Any] | None = None


class SpanQueryRequest(_Body):
    rollout_id: str = Field(min_length=1)
    attempt_id: str | None = None


class ResourcesRequest(_Body):
    resources: dict[str, Any]


class ResourcesIdRequest(_Body):
    resources_id: str = Field(min_length=1)


class EventWaitRequest(_Body):
    timeout: float = Field(ge=0)
    side: str | None = Field(default=None, min_length=1, max_length=200)


class SideRequest(_Body):
    side: str = Field(min_length=1, max_length=200)


class EventState(BaseModel):
    is_set: bool


# -- errors -----------------------------------------------------------------------------------------------


class _ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.code, "detail": self.detail, **self.extra}, status_code=self.status
        )


def _error_body(code: str, detail: str) -> bytes:
    return json.dumps({"error": code, "detail": detail}).encode()


async def _rejection(
    store: LightningStore, exc: ValueError, rollout_ids: list[str], attempt_id: str | None
) -> _ApiError:
    """Classify a store ``ValueError``: 404 when a named rollout/attempt does not exist, else 409."""
    if rollout_ids:
        known = {r.rollout_id for r in await store.query_rollouts(rollout_ids=rollout_ids)}
        missing = [rid for rid in rollout_ids if rid not in known]
        if missing:
            if len(missing) == 1:
                return _ApiError(404, "not_found", str(exc), rollout_id=missing[0])
            return _ApiError(404, "not_found", str(exc), rollout_ids=missing)
        if attempt_id is not None and attempt_id != "latest":
            attempts = await store.query_attempts(rollout_ids[0])
            if all(a.attempt_id != attempt_id for a in attempts):
                return _ApiError(404, "not_found", str(exc), rollout_id=rollout_ids[0], attempt_id=attempt_id)
        return _ApiError(409, "conflict", str(exc))
    return _ApiError(400, "bad_request", str(exc))


async def _call(
    store: LightningStore,
    call: Awaitable[_T],
    rollout_ids: list[str] | None = None,
    attempt_id: str | None = None,
) -> _T:
    """Await a store call, turning its errors into HTTP errors that keep the server running."""
    try:
        return await call
    except ValueError as exc:
        raise await _rejection(store, exc, rollout_ids or [], attempt_id) from exc
    except Exception as exc:
        logger.exception("store call failed")
        raise _ApiError(500, "internal_error", f"{type(exc).__name__}: {exc}") from exc


def _describe_validation(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
        return 400, "invalid_json", f"malformed JSON body: {ctx.get('error', 'cannot be parsed')}"
    parts = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {e.get('msg')}")
    return 422, "invalid_request", "; ".join(parts)


# -- gate: token and body size ----------------------------------------------------------------------------


class _Admission:
    """Who may call and how much they may send: the shared token and the body size limit.

    One object for the two places that check them: the ``_Gate`` middleware and the ``_HotPath`` front.
    """

    def __init__(self, token: str | None, max_body_bytes: int) -> None:
        self.token, self.max_body_bytes = token, max_body_bytes
        self._expected = f"Bearer {token}".encode() if token else b""

    def token_ok(self, headers: dict[bytes, bytes]) -> bool:
        """Whether a request with these headers carries the token (always, when none is required)."""
        return self.token is None or hmac.compare_digest(headers.get(b"authorization", b""), self._expected)


class _Gate:
    """ASGI middleware: the shared token (401) and the body size limit (413), before any parsing."""

    def __init__(self, app: _ASGIApp, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.admission = _Admission(token, max_body_bytes)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        if not self.admission.token_ok(headers):
            await _send_error(send, 401, "unauthorized", "missing or wrong token (set AGL_SERVER_TOKEN)")
            return
        limit = self.admission.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_error(
                send, 413, "payload_too_large", f"body of {int(declared)} bytes exceeds {limit}"
            )
            return
        # A body without a declared length (chunked) is counted as it arrives; past the limit the app is
        # told the client left, and whatever it then tries to send is dropped in favour of our 413.
        received = 0
        rejected = False

        async def counted_receive() -> Any:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    rejected = True
                    await _send_error(send, 413, "payload_too_large", f"body exceeds {limit} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Any) -> None:
            if not rejected:
                await send(message)

        await self.app(scope, counted_receive, guarded_send)


async def _send_error(send: Any, status: int, code: str, detail: str) -> None:
    await _send_json(send, status, _error_body(code, detail))


async def _send_json(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- the runners' hot path --------------------------------------------------------------------------------


class _HotPath:
    """ASGI front that answers the runners' per-rollout calls without the framework's routing layers.

    ``dequeue_rollout`` and ``update_attempt`` are most of a busy server's requests, and FastAPI's
    middleware, dependency and serialisation layers cost more CPU than the store call itself (the server
    shares one GIL with the algorithm, so that CPU is the strategy's throughput). Only a request that is
    in every way ordinary is answered here: the token checks, the body has a declared length within the
    limit and validates. Anything else (and every other route) goes to the application with its body
    replayed, so error answers have one implementation. Store errors use the same ``_call`` mapping.
    """

    def __init__(self, app: _ASGIApp, store: LightningStore, admission: _Admission) -> None:
        self.app, self.store, self.admission = app, store, admission
        self._routes: dict[str, Callable[[bytes], Awaitable[bytes | None]]] = {
            f"{API_PREFIX}/dequeue_rollout": self._dequeue_rollout,
            f"{API_PREFIX}/update_attempt": self._update_attempt,
        }

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        handler = self._routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length", b"")
        if not (
            declared.isdigit()
            and int(declared) <= self.admission.max_body_bytes
            and self.admission.token_ok(headers)
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            answer = await handler(body)
        except _ApiError as error:
            await _send_json(send, error.status, bytes(error.response().body))
            return
        if answer is None:
            await self.app(scope, _replay(body), send)
            return
        await _send_json(send, 200, answer)

    async def _dequeue_rollout(self, body: bytes) -> bytes | None:
        attempted = await _call(self.store, self.store.dequeue_rollout())
        return b"null" if attempted is None else attempted.__pydantic_serializer__.to_json(attempted)

    async def _update_attempt(self, body: bytes) -> bytes | None:
        try:
            request = AttemptUpdateRequest.model_validate_json(body)
        except ValidationError:
            return None  # the application words the 400/422
        attempt = await _call(
            self.store,
            self.store.update_attempt(
                request.rollout_id, request.attempt_id, **request.given("rollout_id", "attempt_id")
            ),
            [request.rollout_id],
            request.attempt_id,
        )
        return attempt.__pydantic_serializer__.to_json(attempt)


def _replay(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI ``receive`` that hands over an already read body once, then reports the client gone."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


# -- the application --------------------------------------------------------------------------------------


# FastAPI versions with built-in OpenTelemetry look up its providers on every request; the store server
# exports no telemetry, so it opts out where the option exists.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def create_app(
    store: LightningStore,
    *,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    event: ExecutionEvent | None = None,
    sides: RunnerSides | None = None,
) -> FastAPI:
    """The FastAPI application serving ``store``: one ``POST /v1/<method>`` route per store method.

    With ``event``, also ``POST /v1/event/set`` and ``POST /v1/event/wait`` (held until the event is set
    or the timeout, at most ``max_wait_seconds``): the stop event of an ``execute()`` for runners on other
    machines, which cannot share a process event. A runner side that names itself (``side``) while waiting
    is recorded in ``sides`` until it calls ``POST /v1/event/detach``, so the algorithm side can keep
    serving until its remote runners have stopped.
    """
    if max_body_bytes <= 0:
        raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes!r}")
    if max_wait_seconds <= 0:
        raise ValueError(f"max_wait_seconds must be positive, got {max_wait_seconds!r}")
    app = FastAPI(title="Agent-Lightning store", version="1", docs_url=None, redoc_url=None, **_NO_TELEMETRY)
    app.add_middleware(_Gate, token=token, max_body_bytes=max_body_bytes)

    @app.exception_handler(_ApiError)
    async def _api_error(_: Request, exc: _ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, detail = _describe_validation(exc)
        return JSONResponse({"error": code, "detail": detail}, status_code=status)

    # Routes are matched in order: the runners' hot path first.
    @app.post(f"{API_PREFIX}/dequeue_rollout")
    async def dequeue_rollout() -> AttemptedRollout | None:
        return await _call(store, store.dequeue_rollout())

    @app.post(f"{API_PREFIX}/update_attempt")
    async def update_attempt(body: AttemptUpdateRequest) -> Attempt:
        changes = body.given("rollout_id", "attempt_id")
        return await _call(
            store,
            store.update_attempt(body.rollout_id, body.attempt_id, **changes),
            [body.rollout_id],
            body.attempt_id,
        )

    @app.post(f"{API_PREFIX}/add_span")
    async def add_span(body: Span) -> Span:
        return await _call(store, store.add_span(body), [body.rollout_id], body.attempt_id)

    @app.get(f"{API_PREFIX}/health")
    async def health() -> dict[str, str]:
        """Readiness probe (also checks the token)."""
        return {"status": "ok"}

    @app.post(f"{API_PREFIX}/start_rollout")
    async def start_rollout(body: RolloutCreateRequest) -> AttemptedRollout:
        return await _call(
            store, store.start_rollout(body.input, body.mode, body.resources_id, body.config, body.metadata)
        )

    @app.post(f"{API_PREFIX}/enqueue_rollout")
    async def enqueue_rollout(body: RolloutCreateRequest) -> Rollout:
        return await _call(
            store, store.enqueue_rollout(body.input, body.mode, body.resources_id, body.config, body.metadata)
        )

    @app.post(f"{API_PREFIX}/start_attempt")
    async def start_attempt(body: RolloutIdRequest) -> AttemptedRollout:
        return await _call(store, store.start_attempt(body.rollout_id), [body.rollout_id])

    @app.post(f"{API_PREFIX}/update_rollout")
    async def update_rollout(body: RolloutUpdateRequest) -> Rollout:
        changes = body.given("rollout_id")
        return await _call(store, store.update_rollout(body.rollout_id, **changes), [body.rollout_id])

    @app.post(f"{API_PREFIX}/query_rollouts")
    async def query_rollouts(body: RolloutQueryRequest) -> list[Rollout]:
        return await _call(store, store.query_rollouts(status=body.status, rollout_ids=body.rollout_ids))

    @app.post(f"{API_PREFIX}/get_rollout_by_id")
    async def get_rollout_by_id(body: RolloutIdRequest) -> Rollout | None:
        return await _call(store, store.get_rollout_by_id(body.rollout_id))

    @app.post(f"{API_PREFIX}/wait_for_rollouts")
    async def wait_for_rollouts(body: WaitRequest) -> list[Rollout]:
        """Held at most ``max_wait_seconds`` (async: other requests keep being served meanwhile)."""
        timeout = max_wait_seconds if body.timeout is None else min(body.timeout, max_wait_seconds)
        return await _call(
            store, store.wait_for_rollouts(rollout_ids=body.rollout_ids, timeout=timeout), body.rollout_ids
        )

    @app.post(f"{API_PREFIX}/query_attempts")
    async def query_attempts(body: RolloutIdRequest) -> list[Attempt]:
        return await _call(store, store.query_attempts(body.rollout_id), [body.rollout_id])

    @app.post(f"{API_PREFIX}/get_latest_attempt")
    async def get_latest_attempt(body: RolloutIdRequest) -> Attempt | None:
        return await _call(store, store.get_latest_attempt(body.rollout_id))

    @app.post(f"{API_PREFIX}/query_spans")
    async def query_spans(body: SpanQueryRequest) -> list[Span]:
        return await _call(store, store.query_spans(body.rollout_id, body.attempt_id), [body.rollout_id])

    @app.post(f"{API_PREFIX}/add_resources")
    async def add_resources(body: ResourcesRequest) -> ResourcesUpdate:
        return await _call(store, store.add_resources(body.resources))

    @app.post(f"{API_PREFIX}/get_latest_resources")
    async def get_latest_resources() -> ResourcesUpdate | None:
        return await _call(store, store.get_latest_resources())

    @app.post(f"{API_PREFIX}/get_resources_by_id")
    async def get_resources_by_id(body: ResourcesIdRequest) -> ResourcesUpdate | None:
        return await _call(store, store.get_resources_by_id(body.resources_id))

    if event is not None:
        stop_event = event
        registry = sides if sides is not None else RunnerSides()

        @app.post(f"{API_PREFIX}/event/set")
        async def set_event() -> EventState:
            stop_event.set()
            return EventState(is_set=True)

        @app.post(f"{API_PREFIX}/event/wait")
        async def wait_event(body: EventWaitRequest) -> EventState:
            if body.side is not None:
                registry.attach(body.side)
            return EventState(is_set=await wait_async(stop_event, min(body.timeout, max_wait_seconds)))

        @app.post(f"{API_PREFIX}/event/detach")
        async def detach(body: SideRequest) -> EventState:
            registry.detach(body.side)
            return EventState(is_set=stop_event.is_set())

    return app


class RunnerSides:
    """Runner sides (``execute()`` calls with role ``"runner"``) attached to a server; thread-safe."""

    def __init__(self) -> None:
        self._attached: set[str] = set()
        self._changed = threading.Condition()

    def attach(self, side: str) -> None:
        with self._changed:
            self._attached.add(side)

    def detach(self, side: str) -> None:
        with self._changed:
            self._attached.discard(side)
            self._changed.notify_all()

    @property
    def attached(self) -> list[str]:
        with self._changed:
            return sorted(self._attached)

    def wait_detached(self, timeout: float) -> list[str]:
        """Wait until every side has detached or ``timeout``; the sides still attached."""
        with self._changed:
            self._changed.wait_for(lambda: not self._attached, timeout)
            return sorted(self._attached)


# -- the server thread ------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket on exactly ``host:port``; ``ServerBindError`` naming both when impossible."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise ServerBindError(
            exc.errno, f"cannot listen on {host}:{port}: cannot resolve host ({exc})"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR lets the port be bound again at once after stop (no TIME_WAIT wait); it does not
        # allow two live listeners on one port on Linux, so a taken port still fails here.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise ServerBindError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from None
    return sock


class _UvicornServer(uvicorn.Server):
    """uvicorn with an event-driven main loop (no 100 ms tick) and a bounded, prompt shutdown."""

    def __init__(self, config: uvicorn.Config, graceful_seconds: float) -> None:
        super().__init__(config)
        self.graceful_seconds = graceful_seconds
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._stop_requested = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        await self.on_tick(0)
        if not self.should_exit and self._stop_requested is not None:
            await self._stop_requested.wait()

    def request_stop(self) -> None:
        """Ask the server to stop; callable from any thread, at any time."""
        # should_exit first: if the loop is not known yet, main_loop sees the flag before it waits.
        self.should_exit = True
        loop, stop = self._loop, self._stop_requested
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed: the server is gone
                loop.call_soon_threadsafe(stop.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        # Idle keep-alive connections close at once; busy ones finish their response, within the grace.
        for connection in list(self.server_state.connections):
            connection.shutdown()
        await self._drain(loop.time() + self.graceful_seconds)
        for task in list(self.server_state.tasks):
            task.cancel()
        await self._drain(loop.time() + 1.0)
        for server in self.servers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        await self.lifespan.shutdown()

    async def _drain(self, deadline: float) -> None:
        # uvicorn exposes no completion signal for its connections; a short bounded poll is the best
        # available, and it ends as soon as the last connection is gone.
        loop = asyncio.get_running_loop()
        while (self.server_state.connections or self.server_state.tasks) and loop.time() < deadline:
            await asyncio.sleep(0.002)


class LightningStoreServer:
    """Serves a store over HTTP from its own thread; ``start()`` binds, ``stop()`` leaves nothing behind.

    The store is called from the server's event loop: hand it a store that is safe to use from that
    thread (the ``cs`` strategy wraps the caller's store for this). ``event``, when given, is exposed to
    remote runners (see ``create_app``). ``host`` is honoured exactly; a
    non-loopback host requires a shared ``token`` (default: ``AGL_SERVER_TOKEN``), which every request
    must then carry as ``Authorization: Bearer <token>``.
    """

    def __init__(
        self,
        store: LightningStore,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
        graceful_seconds: float = 1.0,
        backlog: int = 2048,
        event: ExecutionEvent | None = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
        if graceful_seconds < 0:
            raise ValueError(f"graceful_seconds must be >= 0, got {graceful_seconds!r}")
        token = token if token is not None else AGL_SERVER_TOKEN.get(None)  # type: ignore[arg-type]
        if token is None and not is_loopback(host):
            raise ValueError(
                f"refusing to serve the store on non-loopback host {host!r} without a token: anyone who "
                f"reaches {host} could read and change it; set AGL_SERVER_TOKEN (or pass token=...) on the "
                f"server and every runner"
            )
        self.store = store
        self.host = host
        self.token = token
        self.graceful_seconds = graceful_seconds
        self._requested_port = port
        self._backlog = backlog
        self._max_body_bytes = max_body_bytes
        self.runner_sides = RunnerSides()
        self._app = create_app(
            store,
            token=token,
            max_body_bytes=max_body_bytes,
            max_wait_seconds=max_wait_seconds,
            event=event,
            sides=self.runner_sides,
        )
        self._sock: socket.socket | None = None
        self._port: int | None = None
        self._server: _UvicornServer | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def port(self) -> int:
        """The port actually bound (the ephemeral one when 0 was asked); only after ``start()``."""
        if self._port is None:
            raise RuntimeError("the server is not started: its port is unknown")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> None:
        """Bind (``ServerBindError`` naming host and port) and serve; returns once requests are accepted."""
        if self._thread is not None:
            raise RuntimeError("the server was already started")
        self._sock = _bind(self.host, self._requested_port, self._backlog)
        self._port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            _HotPath(self._app, self.store, _Admission(self.token, self._max_body_bytes)),
            lifespan="off",
            log_config=None,  # leave the caller's logging configuration alone (R7)
            log_level="warning",
            access_log=False,
            date_header=False,
            server_header=False,
            proxy_headers=False,  # clients are runners, not proxies: no forwarded-address rewriting
            ws="none",
            loop="asyncio",
        )
        self._server = _UvicornServer(config, self.graceful_seconds)
        self._thread = threading.Thread(
            target=self._serve, name=f"agl-store-server-{self._port}", daemon=True
        )
        self._thread.start()
        try:
            while not self._server.ready.wait(0.05):
                if not self._thread.is_alive():
                    break
                timeout -= 0.05
                if timeout <= 0:
                    raise TimeoutError(f"store server on {self.host}:{self._port} did not start")
            if not self._server.ready.is_set():
                raise RuntimeError(
                    f"store server on {self.host}:{self._port} failed to start"
                ) from self._failure
        except BaseException:
            self.stop()
            raise

    def _serve(self) -> None:
        assert self._server is not None and self._sock is not None
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported by start()/stop(); a server thread must not die silently
            self._failure = exc
            logger.exception("store server on %s:%s failed", self.host, self._port)
        finally:
            self._sock.close()

    def stop(self, timeout: float | None = None) -> None:
        """Stop serving and join the thread; idempotent. The port can be bound again at once."""
        thread, server = self._thread, self._server
        if thread is not None and server is not None and thread.is_alive():
            server.request_stop()
            bound = timeout if timeout is not None else self.graceful_seconds + 5.0
            thread.join(bound)
            if thread.is_alive():
                server.force_exit = True
                thread.join(2.0)
            if thread.is_alive():
                logger.error("store server thread %s did not stop within %.1f s", thread.name, bound + 2.0)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> LightningStoreServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port if self._port is not None else self._requested_port}"
        return f"<LightningStoreServer {where} running={self.running}>"
