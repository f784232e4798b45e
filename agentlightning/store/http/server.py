"""Serve a ``LightningStore`` over HTTP: the FastAPI application and the thread that runs it (uvicorn).

Every store method is one route, ``POST /v1/<method>``, made from the method table (``store/methods.py``):
its JSON body holds the method's keywords (validated by the method's request model) and its response is
the model the method returns (FastAPI publishes the schema at ``/openapi.json``; it describes every answer,
errors included). A user of the server may add routes of its own (``routes=``, ``extra_routes.py``). Ids
travel in bodies, never in paths, so any id string is safe.
Bad input never reaches the store and never takes the server down; every error answer has the shape
``{"error": code, "detail": message, ...}`` (``errors.ErrorBody``):

- malformed JSON (``NaN`` and ``Infinity`` included): 400 ``invalid_json``; wrong or missing fields: 422
  ``invalid_request`` naming each field; a value the store's rule refuses (``values.py``: a lone
  surrogate, nesting too deep, a non-finite number...): 422 ``invalid_value`` naming its path in
  ``field``, checked before the store is called, whatever store is served;
- an operation on an unknown rollout or attempt: 404 ``not_found`` naming the id (lookups such as
  ``get_rollout_by_id`` keep the store's meaning and answer ``null``);
- any other ``ValueError`` of the store (an illegal transition): 409 ``conflict`` with its message;
- a missing or wrong token: 401 ``unauthorized``; two ``Authorization`` headers: 400 ``bad_request``;
- a body over ``max_body_bytes`` or with more than ``max_json_elements`` JSON elements: 413; the other
  limits an anonymous client is held to (connections, header time and size) are in ``limits.py``;
- an unexpected failure: 500 ``internal_error`` with a ``request_id`` the server logs with the traceback;
  the answer never carries the failure's own text, and the connection stays usable.

``LightningStoreServer`` binds the socket itself (so a taken port is a clear ``ServerBindError`` naming host
and port before anything else starts, and port 0 yields the real port at once), then runs uvicorn on its own
event loop in one thread. Stopping is event-driven (no polling tick) and leaves no thread or socket behind.
Tokens and TLS: ``security.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hmac
import inspect
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, MutableMapping
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentlightning.store.base import LightningStore
from agentlightning.store.claims import CLIENT_HEADER, CURRENT_CLIENT, ClaimTrackingStore
from agentlightning.store.http.errors import ERROR_RESPONSES, ApiError, internal_error
from agentlightning.store.http.extra_routes import ExtraRoute, RequestBody, RouteCall
from agentlightning.store.http.limits import (
    DEFAULT_MAX_BODY_BYTES,
    LimitedConfig,
    ServerLimits,
    count_json_elements,
    parse_json_body,
)
from agentlightning.store.http.replays import Replays
from agentlightning.store.http.security import (
    SERVER_CIPHERS,
    ServerTLS,
    check_unix_socket,
    is_loopback,
    resolve_server_tls,
    resolve_token,
)
from agentlightning.store.methods import METHODS, StoreMethod
from agentlightning.store.values import DEFAULT_LIMITS, InvalidValueError, ValueLimits, check_json
from agentlightning.types import Span

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_WAIT_SECONDS",
    "LightningStoreServer",
    "ServerBindError",
    "create_app",
    "is_loopback",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_WAIT_SECONDS = 30.0
"""Longest a single ``wait_for_rollouts`` request is held; clients wanting longer ask again."""

API_PREFIX = "/v1"

_CLIENT_HEADER = CLIENT_HEADER.encode()
_ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


class ServerBindError(OSError):
    """The server could not listen on its address (taken port, unknown host, no permission)."""


# -- request bodies ---------------------------------------------------------------------------------------


class Health(BaseModel):
    status: str


class ClaimsReleaseRequest(RequestBody):
    """Clients (as they named themselves, ``CLIENT_HEADER``) that are gone."""

    clients: list[str] = Field(max_length=10_000)


class ClaimsReleased(BaseModel):
    marked: int
    """Attempts still in flight that were marked unresponsive."""


# -- errors -----------------------------------------------------------------------------------------------


async def _rejection(
    store: LightningStore, exc: ValueError, rollout_ids: list[str], attempt_id: str | None
) -> ApiError:
    """Classify a store ``ValueError``: 404 when a named rollout/attempt does not exist, else 409."""
    if rollout_ids:
        known = {r.rollout_id for r in await store.query_rollouts(rollout_ids=rollout_ids)}
        missing = [rid for rid in rollout_ids if rid not in known]
        if missing:
            if len(missing) == 1:
                return ApiError(404, "not_found", str(exc), rollout_id=missing[0])
            return ApiError(404, "not_found", str(exc), rollout_ids=missing)
        if attempt_id is not None and attempt_id != "latest":
            attempts = await store.query_attempts(rollout_ids[0])
            if all(a.attempt_id != attempt_id for a in attempts):
                return ApiError(404, "not_found", str(exc), rollout_id=rollout_ids[0], attempt_id=attempt_id)
        return ApiError(409, "conflict", str(exc))
    return ApiError(400, "bad_request", str(exc))


def _named_ids(arguments: dict[str, Any]) -> tuple[list[str], str | None]:
    """The rollout ids and attempt id a call names (to tell an unknown id from a conflict)."""
    span = arguments.get("span")
    if isinstance(span, Span):
        return [span.rollout_id], span.attempt_id
    rollout_id = arguments.get("rollout_id")
    ids = [rollout_id] if isinstance(rollout_id, str) else list(arguments.get("rollout_ids") or ())
    return ids, arguments.get("attempt_id")


async def _serve_method(
    store: LightningStore, method: StoreMethod, arguments: dict[str, Any], max_wait_seconds: float
) -> bytes:
    """Call ``method`` of the served store with ``arguments`` (validated): its result's JSON.

    A waiting method is held at most ``max_wait_seconds``. The store's ``ValueError`` becomes the matching
    HTTP error (404 naming an unknown id, else 409); any other exception is a 500 for the caller's guard.
    """
    if method.waits:
        timeout = arguments.get("timeout")
        arguments["timeout"] = max_wait_seconds if timeout is None else min(timeout, max_wait_seconds)
    try:
        result = await getattr(store, method.name)(**arguments)
    except ValueError as exc:
        rollout_ids, attempt_id = _named_ids(arguments)
        raise await _rejection(store, exc, rollout_ids, attempt_id) from exc
    return method.encode(result)


def _describe_validation(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
        return ApiError(400, "invalid_json", f"malformed JSON body: {ctx.get('error', 'cannot be parsed')}")
    parts, fields = [], []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        fields.append(loc)
        parts.append(f"{loc}: {e.get('msg')}")
    return ApiError(422, "invalid_request", "; ".join(parts), field=fields[0] if fields else "body")


def _check_fields(fields: dict[str, Any], limits: ValueLimits, prefix: str = "") -> dict[str, Any]:
    """Every field of a decoded body under the store's value rule (``values.check_json``), before any
    store sees it (a user's own store served here is protected too): 422 ``invalid_value`` naming the
    field path otherwise."""
    try:
        return {name: check_json(prefix + name, value, limits) for name, value in fields.items()}
    except InvalidValueError as exc:
        raise ApiError(422, "invalid_value", str(exc), field=exc.field) from None


def _value_limits(store: LightningStore, value_limits: ValueLimits | None) -> ValueLimits:
    if value_limits is None:
        own = getattr(store, "limits", None)
        return own if isinstance(own, ValueLimits) else DEFAULT_LIMITS
    if not isinstance(value_limits, ValueLimits):
        raise ValueError(f"value_limits must be a ValueLimits, got {type(value_limits).__name__}")
    return value_limits


_HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


# -- admission: token and body size -----------------------------------------------------------------------


_UNAUTHORIZED = ApiError(401, "unauthorized", "missing or wrong token (the server's AGL_SERVER_TOKEN)")
_TWO_TOKENS = ApiError(400, "bad_request", "more than one Authorization header")


class _Admission:
    """Who may call and how much they may send: the shared token and the body limits.

    One object for the two places that check them: the ``_Gate`` middleware and the ``_HotPath`` front.
    """

    def __init__(self, token: str | None, limits: ServerLimits) -> None:
        self.limits = limits
        self._expected = f"Bearer {token}".encode() if token else None

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> tuple[ApiError | None, bytes | None]:
        """(why the request is refused or ``None``, its declared Content-Length or ``None``), in one pass."""
        authorization: bytes | None = None
        declared: bytes | None = None
        for name, value in headers:
            if name == b"authorization":
                if authorization is not None:
                    return _TWO_TOKENS, declared
                authorization = value
            elif name == b"content-length":
                declared = value
        expected = self._expected
        if expected is not None and (
            authorization is None or not hmac.compare_digest(authorization, expected)
        ):
            return _UNAUTHORIZED, declared
        return None, declared


class _Gate:
    """ASGI middleware: token (401), body size (413) before any parsing, and the last word on failures.

    An exception that escapes the application becomes a 500 ``internal_error`` here (logged with a
    request id) instead of reaching the framework's error middleware, which would answer in its own shape
    and make uvicorn close a connection the client is about to reuse.
    """

    def __init__(self, app: _ASGIApp, admission: _Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal, declared = self.admission.check(scope.get("headers") or ())
        if refusal is not None:
            await _send_error(send, refusal)
            return
        limit = self.admission.limits.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_error(
                send, ApiError(413, "payload_too_large", f"body of {int(declared)} bytes exceeds {limit}")
            )
            return
        # A body without a declared length (chunked) is counted as it arrives; past the limit the app is
        # told the client left, and whatever it then tries to send is dropped in favour of our 413.
        received = 0
        rejected = False
        started = completed = False

        async def counted_receive() -> Any:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    rejected = True
                    await _send_error(send, ApiError(413, "payload_too_large", f"body exceeds {limit} bytes"))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started, completed
            if rejected:
                return
            started = True
            if message["type"] == "http.response.body" and not message.get("more_body"):
                completed = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception as exc:
            error = internal_error(logger, f"{scope.get('method')} {scope.get('path')}", exc)
            if not started and not rejected:
                await _send_error(send, error)
            elif not completed and not rejected:
                raise  # half an answer is out: only closing the connection can tell the client


async def _send_error(send: Any, error: ApiError) -> None:
    headers: list[tuple[bytes, bytes]] = []
    if error.status == 401:
        # An unauthenticated peer gets no idle connection to keep.
        headers = [(b"www-authenticate", b"Bearer"), (b"connection", b"close")]
    await _send_json(send, error.status, error.body(), headers)


async def _send_json(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- the runners' hot path --------------------------------------------------------------------------------


class _HotPath:
    """ASGI front that answers the store's methods without the framework's routing layers.

    ``dequeue_rollout`` and ``update_attempt`` are most of a busy server's requests, and FastAPI's
    middleware, dependency and serialisation layers cost more CPU than the store call itself (the server
    shares one GIL with the algorithm, so that CPU is the strategy's throughput). Only a request that is
    in every way ordinary is answered here: the token checks, the body has a declared length within the
    limits, holds no ``NaN``/``Infinity``, and its fields pass the value rule and validate
    (``StoreMethod.arguments``, what the application checks too). Anything else (and every other route)
    goes to the application with its body replayed, so error answers have one implementation. Store
    errors use the same ``_serve_method``; an unexpected one is a 500 with a request id, as in ``_Gate``.

    Being the server's front, it also names the caller of every request (the ``x-agl-client`` header its
    client sends, ``HttpLightningStore.named``) in ``claims.CURRENT_CLIENT`` for the store to read.
    """

    def __init__(
        self,
        app: _ASGIApp,
        store: LightningStore,
        admission: _Admission,
        value_limits: ValueLimits,
        max_wait_seconds: float,
    ) -> None:
        self.app, self.store, self.admission, self.value_limits = app, store, admission, value_limits
        self.max_wait_seconds = max_wait_seconds
        self._routes = {f"{API_PREFIX}/{name}": method for name, method in METHODS.items()}

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        named = CURRENT_CLIENT.set(_client_of(scope))
        try:
            await self._serve(scope, receive, send)
        finally:
            CURRENT_CLIENT.reset(named)

    async def _serve(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        method = self._routes.get(scope.get("path", ""))
        if method is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        refusal, declared = self.admission.check(scope.get("headers") or ())
        limits = self.admission.limits
        if (
            refusal is not None
            or declared is None
            or not declared.isdigit()
            or int(declared) > limits.max_body_bytes
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
        if count_json_elements(body) > limits.max_json_elements or b"NaN" in body or b"Infinity" in body:
            await self.app(scope, _replay(body), send)  # the application words the refusal
            return
        try:
            arguments = self._arguments(method, body)
            if arguments is None:
                await self.app(scope, _replay(body), send)  # the application words the 400/422
                return
            answer = await _serve_method(self.store, method, arguments, self.max_wait_seconds)
        except ApiError as error:
            await _send_error(send, error)
            return
        except Exception as exc:
            await _send_error(send, internal_error(logger, f"POST {scope['path']}", exc))
            return
        await _send_json(send, 200, answer)

    def _arguments(self, method: StoreMethod, body: bytes) -> dict[str, Any] | None:
        """The store keywords the body carries, or ``None`` when the application has to word a refusal."""
        if not method.parameters:
            return {} if not body.strip() else None
        try:
            fields = json.loads(body)
            if method.body_model is not None:
                fields = {method.parameters[0].name: fields}
            if type(fields) is not dict:
                return None
            return method.arguments(fields, self.value_limits)
        except InvalidValueError as exc:
            raise ApiError(422, "invalid_value", str(exc), field=exc.field) from None
        except ValueError:  # malformed JSON, or fields that do not validate
            return None


def _client_of(scope: MutableMapping[str, Any]) -> str | None:
    """The name the request's client goes by (``CLIENT_HEADER``), if it sent one."""
    for name, value in scope.get("headers") or ():
        if name == _CLIENT_HEADER:
            return str(value.decode("latin-1"))
    return None


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


class _StrictJsonRequest(Request):
    """A request whose JSON body is read by ``limits.parse_json_body`` (element limit, strict JSON), and
    whose every field then passes the store's value rule (``_check_fields``)."""

    field_prefix = ""

    async def json(self) -> Any:
        if not hasattr(self, "_strict_json"):
            state = self.app.state
            value = parse_json_body(await self.body(), state.max_json_elements)
            if isinstance(value, dict):
                value = _check_fields(value, state.value_limits, self.field_prefix)
            else:
                value = _check_fields({"body": value}, state.value_limits)["body"]
            self._strict_json = value
        return self._strict_json


class _StrictJsonRoute(APIRoute):
    """A route that parses its body strictly before FastAPI validates it (FastAPI's documented way to
    customise request handling: a ``Request`` subclass handed in by the route class)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        # A body that is one model argument (add_span's span): its fields are named as the store names them.
        method = METHODS.get(self.path.removeprefix(f"{API_PREFIX}/"))
        prefix = f"{method.parameters[0].name}." if method is not None and method.body_model else ""

        async def strict(request: Request) -> Response:
            request = _StrictJsonRequest(request.scope, request.receive)
            request.field_prefix = prefix
            if await request.body():
                await request.json()  # refusals raise here, outside FastAPI's own body handling
            return await handler(request)

        return strict


def _post(
    app: FastAPI,
    name: str,
    body: type[BaseModel] | None,
    answer: Any,
    serve: Callable[[Any, Request], Awaitable[Any]],
    description: str | None,
) -> None:
    """Serve ``POST /v1/<name>``: ``serve(body, request)`` answers; ``body`` and ``answer`` document it."""

    async def endpoint(request: Request, **fields: Any) -> Any:
        return await serve(fields.get("body"), request)

    parameters = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)]
    if body is not None:
        parameters.append(inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body))
    endpoint.__signature__ = inspect.Signature(parameters, return_annotation=answer)  # type: ignore[attr-defined]
    app.add_api_route(
        f"{API_PREFIX}/{name}",
        endpoint,
        methods=["POST"],
        response_model=answer,
        name=name.replace("/", "_"),
        description=inspect.cleandoc(description) if description else None,
    )


def _serve_store_method(
    app: FastAPI, store: LightningStore, method: StoreMethod, max_wait_seconds: float
) -> None:
    """The route of one store method (``methods.METHODS``), for requests the hot path left to the app."""
    body = method.body_model or (method.request if method.parameters else None)

    async def serve(given: Any, request: Request) -> Response:
        if given is None:
            arguments: dict[str, Any] = {}
        elif method.body_model is not None:
            arguments = {method.parameters[0].name: given}
        else:
            arguments = given.given()
        answer = await _serve_method(store, method, arguments, max_wait_seconds)
        return Response(answer, media_type="application/json")

    _post(app, method.name, body, method.returns, serve, method.doc)


def _serve_extra_route(app: FastAPI, route: ExtraRoute, max_wait_seconds: float) -> None:
    """Serve ``route`` (``extra_routes``) as ``POST /v1/<name>``, validated and documented like the rest."""
    handler = route.handler

    async def serve(body: Any, request: Request) -> BaseModel:
        call = RouteCall(request.client.host if request.client is not None else None, max_wait_seconds)
        return await (handler(call) if route.body is None else handler(body, call))

    _post(app, route.name, route.body, route.answer, serve, route.summary)


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
    max_body_bytes: int | None = None,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    routes: Iterable[ExtraRoute] = (),
    limits: ServerLimits | None = None,
    value_limits: ValueLimits | None = None,
) -> FastAPI:
    """The FastAPI application serving ``store``: one ``POST /v1/<method>`` route per store method.

    ``routes`` are served beside them (``extra_routes.ExtraRoute``: what a user of the server adds, such
    as the ``cs`` strategy's stop event); a handler that waits is told ``max_wait_seconds``. ``token``
    (checked as ``resolve_token`` does) and
    ``limits`` (``max_body_bytes`` overrides its field) are enforced by the application itself; every
    decoded value passes the store's value rule with ``value_limits`` (default: the store's ``limits``
    when it has them, else ``values.DEFAULT_LIMITS``) before the store is called.
    A ``ClaimTrackingStore`` (it knows who claims what) also gets ``POST /v1/claims/release``: the attempts
    the named clients still hold are marked unresponsive.
    """
    limits = _limits(limits, max_body_bytes)
    if max_wait_seconds <= 0:
        raise ValueError(f"max_wait_seconds must be positive, got {max_wait_seconds!r}")
    token = resolve_token(token)
    app = FastAPI(
        title="Agent-Lightning store",
        version="1",
        docs_url=None,
        redoc_url=None,
        responses=ERROR_RESPONSES,
        **_NO_TELEMETRY,
    )
    app.router.route_class = _StrictJsonRoute
    app.state.max_json_elements = limits.max_json_elements
    app.state.value_limits = _value_limits(store, value_limits)
    app.add_middleware(_Gate, admission=_Admission(token, limits))

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return Response(exc.body(), exc.status, media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return await _api_error(_, _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_ERROR_CODES.get(exc.status_code, "bad_request")
        detail = (
            f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
        )
        return await _api_error(request, ApiError(exc.status_code, code, str(detail)))

    @app.get(f"{API_PREFIX}/health")
    async def health() -> Health:
        """Readiness probe (also checks the token)."""
        return Health(status="ok")

    for method in METHODS.values():
        _serve_store_method(app, store, method, max_wait_seconds)

    if isinstance(store, ClaimTrackingStore):
        tracked = store

        @app.post(f"{API_PREFIX}/claims/release")
        async def release_claims(body: ClaimsReleaseRequest) -> ClaimsReleased:
            """A runner machine reports runners of its own that are gone: their claims are given up."""
            marked = 0
            for client in body.clients:
                gone = await tracked.ledger.give_up(tracked.inner, client, "was reported gone by its machine")
                marked += len(gone)
            return ClaimsReleased(marked=marked)

    for route in routes:
        _serve_extra_route(app, route, max_wait_seconds)

    return app


# -- the server thread ------------------------------------------------------------------------------------


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


def _bind_unix(path: str, backlog: int) -> socket.socket:
    """A listening Unix domain socket at ``path``; ``ServerBindError`` naming it when impossible."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ServerBindError(exc.errno, f"cannot listen on {path}: {exc.strerror or exc}") from None
    return sock


class _ServerLoop(asyncio.SelectorEventLoop):
    """The server thread's event loop: its TLS handshakes are bounded like request headers are.

    uvicorn creates the listening server itself and offers no handshake bound; asyncio's default (60 s)
    would let anonymous peers hold connections that the connection cap, which counts from the end of
    the handshake, does not see.
    """

    def __init__(self, handshake_timeout: float) -> None:
        super().__init__()
        self.handshake_timeout = handshake_timeout

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", self.handshake_timeout)
        return await super().create_server(*args, **kwargs)


def _run_on_own_loop(
    main: Coroutine[Any, Any, None], loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """``asyncio.run`` on a loop of our own making (``asyncio.Runner`` where it exists)."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main)
        return
    loop = loop_factory()
    try:
        loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


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


def _limits(limits: ServerLimits | None, max_body_bytes: int | None) -> ServerLimits:
    limits = limits if limits is not None else ServerLimits()
    if not isinstance(limits, ServerLimits):
        raise ValueError(f"limits must be a ServerLimits, got {type(limits).__name__}")
    if max_body_bytes is not None:
        limits = dataclasses.replace(limits, max_body_bytes=max_body_bytes)  # validated again there
    return limits


class LightningStoreServer:
    """Serves a store over HTTP from its own thread; ``start()`` binds, ``stop()`` leaves nothing behind.

    The store is called from the server's event loop: hand it a store that is safe to use from that
    thread (the ``cs`` strategy wraps the caller's store for this). ``routes`` are served beside the
    store's (``extra_routes``; see ``create_app``). ``host`` is honoured exactly. ``token`` (default:
    ``AGL_SERVER_TOKEN``; at least ``MIN_TOKEN_LENGTH`` characters) must then be on every request as
    ``Authorization: Bearer <token>``; a non-loopback host requires one. ``tls_cert`` / ``tls_key``
    (default: ``AGL_SERVER_TLS_CERT`` / ``AGL_SERVER_TLS_KEY``) serve HTTPS. ``limits`` bound what each
    client may cost (``limits.py``; ``max_body_bytes`` overrides its field). ``unix_socket``: a path where
    the server also listens, on a Unix domain socket (clients on this machine: ``HttpLightningStore``'s
    ``unix_socket``); the same HTTP, token and limits as on ``host:port``, and the path is removed on
    ``stop()``. Put it in a directory only its owner can enter. The token never appears in the server's
    repr, logs or errors.
    """

    def __init__(
        self,
        store: LightningStore,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        max_body_bytes: int | None = None,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
        graceful_seconds: float = 1.0,
        backlog: int = 2048,
        routes: Iterable[ExtraRoute] = (),
        limits: ServerLimits | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        value_limits: ValueLimits | None = None,
        unix_socket: str | None = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
        if graceful_seconds < 0:
            raise ValueError(f"graceful_seconds must be >= 0, got {graceful_seconds!r}")
        token = resolve_token(token)
        if token is None and not is_loopback(host):
            raise ValueError(
                f"refusing to serve the store on non-loopback host {host!r} without a token: anyone who "
                f"reaches {host} could read and change it; set AGL_SERVER_TOKEN (or pass token=...) on the "
                f"server and every runner"
            )
        self.store = store
        self.host = host
        self.token = token
        self.tls: ServerTLS | None = resolve_server_tls(tls_cert, tls_key)
        self.limits = _limits(limits, max_body_bytes)
        self.value_limits = _value_limits(store, value_limits)
        self.graceful_seconds = graceful_seconds
        self.max_wait_seconds = max_wait_seconds
        self.unix_socket = check_unix_socket(unix_socket)
        self._requested_port = port
        self._backlog = backlog
        self._app = create_app(
            store,
            token=token,
            max_wait_seconds=max_wait_seconds,
            routes=routes,
            limits=self.limits,
            value_limits=self.value_limits,
        )
        self._sock: socket.socket | None = None
        self._unix_sock: socket.socket | None = None
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
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets once bound: what a process forked from this one must close."""
        return tuple(sock for sock in (self._sock, self._unix_sock) if sock is not None)

    def bind(self) -> None:
        """Listen on the address now (``ServerBindError`` naming host and port), without serving yet.

        Connections wait in the backlog until ``start()``. Between the two this process has no thread
        of the server's, so it can still fork safely (its children must close ``sockets``).
        """
        if self._sock is not None:
            raise RuntimeError("the server is already bound")
        sock = _bind(self.host, self._requested_port, self._backlog)
        if self.unix_socket is not None:
            try:
                self._unix_sock = _bind_unix(self.unix_socket, self._backlog)
            except BaseException:
                sock.close()
                raise
        self._sock = sock
        self._port = sock.getsockname()[1]

    def start(self, timeout: float = 10.0) -> None:
        """Bind (unless ``bind()`` did) and serve; returns once requests are accepted."""
        if self._thread is not None:
            raise RuntimeError("the server was already started")
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        tls: dict[str, Any] = {}
        if self.tls is not None:
            tls = {"ssl_certfile": self.tls.cert, "ssl_keyfile": self.tls.key, "ssl_ciphers": SERVER_CIPHERS}
        admission = _Admission(self.token, self.limits)
        front = _HotPath(self._app, self.store, admission, self.value_limits, self.max_wait_seconds)
        # A write sent again under the same request id is answered from the table, not applied again.
        config = LimitedConfig(
            Replays(front, lambda scope: admission.check(scope.get("headers") or ())[0] is None),
            self.limits,
            lifespan="off",
            log_config=None,  # leave the caller's logging configuration alone (R7)
            log_level="warning",
            access_log=False,
            date_header=False,
            server_header=False,
            proxy_headers=False,  # clients are runners, not proxies: no forwarded-address rewriting
            ws="none",
            loop="asyncio",
            **tls,
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
            _run_on_own_loop(
                self._server.serve(sockets=list(self.sockets)),
                lambda: _ServerLoop(self.limits.header_timeout),
            )
        except BaseException as exc:  # reported by start()/stop(); a server thread must not die silently
            self._failure = exc
            logger.exception("store server on %s:%s failed", self.host, self._port)
        finally:
            self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()
        if self._unix_sock is not None and self.unix_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_socket)
            self._unix_sock = None

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
        self._close_sockets()

    def __enter__(self) -> LightningStoreServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port if self._port is not None else self._requested_port}"
        tls = " tls" if self.tls else ""
        return f"<LightningStoreServer {where}{tls} running={self.running}>"
