"""``HttpLightningStore``: a ``LightningStore`` whose every method is a request to a ``LightningStoreServer``.

Errors keep their meaning across the wire: the server's 400/404/409/422 answers re-raise as ``ValueError``
with the server's message, 401 as ``PermissionError``, other failures as ``StoreServerError``. A server that
cannot be reached raises ``StoreServerUnreachable`` (a ``ConnectionError``) naming host and port.

Retries never do harm, within ``retry_seconds`` in total: reads (lookups, queries, ``wait_for_rollouts``)
are retried on any transport failure, and so are writes, each of which carries one request id
(``x-agl-request-id``, ``replays.py``) across its retries: a write whose answer was lost (connection
reset, partition) is sent again and the server answers it from its table of recent answers instead of
applying it twice. A 503 ``busy`` answer (the server was at its connection cap and read nothing) is
retried too. A connection that carried a 5xx answer is never reused, and idle
connections are dropped before the server's keep-alive bound, so a write never lands on a connection the
server is closing. A TLS certificate that does not verify is an error at once, never retried.

``https://`` URLs verify the server's certificate against ``tls_ca`` (default ``AGL_SERVER_TLS_CA``) or
the system's CAs. The token is sent as a bearer token and never appears in the client's repr or errors.

The client is picklable (it travels to runner processes) and opens one connection pool per event loop
it is used from; ``close()`` releases the current loop's pool. A client may name itself to the server
(``named()``: the ``x-agl-client`` header on every request), so the server can tell which runner made
which claim (``store.claims``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import ssl
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import TypeAdapter

from agentlightning.store.base import UNSET, LightningStore, Unset
from agentlightning.store.claims import CLIENT_HEADER
from agentlightning.store.http.replays import REQUEST_ID_HEADER
from agentlightning.store.http.security import client_ssl_context, resolve_ca, resolve_token
from agentlightning.store.values import DEFAULT_LIMITS, ValueLimits, check_json, check_span
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

__all__ = ["HttpLightningStore", "StoreServerError", "StoreServerUnreachable"]

_API = "/v1/"
# Below the server's keep-alive bound (limits.DEFAULT_KEEPALIVE_SECONDS, 5 s; a test keeps them in step),
# written out so that a runner process never imports the server's framework (limits.py needs uvicorn).
_KEEPALIVE_SECONDS = 3.0

# Calls that only read (or are idempotent): safe to send again whatever happened to an earlier try.
_RETRY_SAFE = frozenset(
    {
        "claims/release",  # giving up a client twice is giving it up once
        "query_rollouts",
        "get_rollout_by_id",
        "wait_for_rollouts",
        "query_attempts",
        "get_latest_attempt",
        "query_spans",
        "get_latest_resources",
        "get_resources_by_id",
    }
)

_ROLLOUT = TypeAdapter(Rollout)
_ROLLOUTS = TypeAdapter(list[Rollout])
_ATTEMPTED = TypeAdapter(AttemptedRollout)
_MAYBE_ATTEMPTED = TypeAdapter(AttemptedRollout | None)
_MAYBE_ROLLOUT = TypeAdapter(Rollout | None)
_ATTEMPT = TypeAdapter(Attempt)
_ATTEMPTS = TypeAdapter(list[Attempt])
_MAYBE_ATTEMPT = TypeAdapter(Attempt | None)
_SPAN = TypeAdapter(Span)
_SPANS = TypeAdapter(list[Span])
_RESOURCES = TypeAdapter(ResourcesUpdate)
_MAYBE_RESOURCES = TypeAdapter(ResourcesUpdate | None)


class StoreServerError(RuntimeError):
    """The server answered with an error that is not the caller's bad input (5xx, unexpected answer)."""


class StoreServerUnreachable(ConnectionError):
    """The store server could not be reached (refused, timed out, connection lost) within the bound."""


class HttpLightningStore(LightningStore):
    """A ``LightningStore`` served by a ``LightningStoreServer`` at ``base_url``.

    ``token`` (default ``AGL_SERVER_TOKEN``; at least ``MIN_TOKEN_LENGTH`` characters) is sent as a
    bearer token. ``tls_ca``: the PEM CA bundle an ``https://`` server's certificate is verified with
    (default ``AGL_SERVER_TLS_CA``, else the system's CAs). ``request_timeout`` bounds one request
    (``wait_for_rollouts`` adds its own timeout); ``retry_seconds`` bounds the total time spent retrying
    one call before ``StoreServerUnreachable`` is raised. Every value sent is first checked by the
    store's value rule with ``value_limits`` (``values.py``; keep them the server's).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        request_timeout: float = 30.0,
        retry_seconds: float = 10.0,
        wait_chunk_seconds: float = 25.0,
        tls_ca: str | None = None,
        value_limits: ValueLimits = DEFAULT_LIMITS,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ValueError(f"base_url must look like http://host:port (no path), got {base_url!r}")
        if parts.scheme == "http" and tls_ca is not None:
            raise ValueError(f"tls_ca verifies an https:// server, but base_url is {base_url!r}")
        if request_timeout <= 0:
            raise ValueError(f"request_timeout must be positive, got {request_timeout!r}")
        if retry_seconds < 0:
            raise ValueError(f"retry_seconds must be >= 0, got {retry_seconds!r}")
        if wait_chunk_seconds <= 0:
            raise ValueError(f"wait_chunk_seconds must be positive, got {wait_chunk_seconds!r}")
        self.base_url = base_url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.token = resolve_token(token)
        # The environment's CA only says how to verify a server, not whether to use TLS.
        self.tls_ca = resolve_ca(tls_ca) if parts.scheme == "https" else None
        self.request_timeout = request_timeout
        self.retry_seconds = retry_seconds
        self.wait_chunk_seconds = wait_chunk_seconds
        if not isinstance(value_limits, ValueLimits):
            raise ValueError(f"value_limits must be a ValueLimits, got {type(value_limits).__name__}")
        self.value_limits = value_limits
        self.client_name: str | None = None
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._ssl: ssl.SSLContext | None = None

    def named(self, client_name: str) -> HttpLightningStore:
        """A copy of this client (no connection shared) that names itself ``client_name`` to the server."""
        if not isinstance(client_name, str) or not client_name or not client_name.isprintable():
            raise ValueError(f"client_name must be a non-empty printable str, got {client_name!r}")
        clone = copy.copy(self)
        clone._sessions = {}
        clone.client_name = client_name
        return clone

    # -- transport ------------------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            # Pools of loops that are gone cannot be closed any more; forget them.
            for stale in [lp for lp in self._sessions if lp.is_closed()]:
                del self._sessions[stale]
            headers = {"content-type": "application/json"}
            if self.token:
                headers["authorization"] = f"Bearer {self.token}"
            if self.base_url.startswith("https:") and self._ssl is None:
                self._ssl = client_ssl_context(self.tls_ca)
            if self.client_name is not None:
                headers[CLIENT_HEADER] = self.client_name
            session = aiohttp.ClientSession(
                self.base_url,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
                connector=aiohttp.TCPConnector(
                    limit=8,
                    # Idle connections go before the server's keep-alive bound closes them under a request.
                    keepalive_timeout=_KEEPALIVE_SECONDS,
                    ssl=self._ssl if self._ssl is not None else True,
                ),
                trust_env=False,  # a proxy from the environment must not sit between runners and the store
            )
            self._sessions[loop] = session
        return session

    async def post(
        self,
        route: str,
        body: dict[str, Any] | None = None,
        *,
        idempotent: bool = False,
        extra_timeout: float = 0.0,
    ) -> bytes:
        """``POST /v1/<route>`` with ``body`` (checked by the value rule), under this client's token, pools
        and retries; the answer's bytes. For the routes a user of the server adds (``extra_routes``):
        ``idempotent`` says a retry is harmless as it is (otherwise each call carries one request id, so
        the server applies it once however often it arrives); ``extra_timeout`` is how long the server
        may hold it beyond ``request_timeout``. Errors are raised as for the store's methods."""
        return await self._request(route, body, extra_timeout, idempotent=idempotent)

    async def _request(
        self, method: str, body: Any = None, extra_timeout: float = 0.0, *, idempotent: bool | None = None
    ) -> bytes:
        session = self._session()
        if idempotent is None:
            idempotent = method in _RETRY_SAFE
        # A write keeps one id across its retries: the server applies it once whatever reaches it twice.
        headers = None if idempotent else {REQUEST_ID_HEADER: uuid.uuid4().hex}
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        tries = 0
        timeout = aiohttp.ClientTimeout(total=self.request_timeout + extra_timeout)
        data = b"" if body is None else self._encode(body)
        while True:
            tries += 1
            try:
                async with session.post(
                    _API + method, data=data, timeout=timeout, headers=headers
                ) as response:
                    content = await response.read()
                    if response.status >= 500:
                        # Whatever failed on the server, its connection is not trusted with the next call.
                        response.close()
                    if response.status != 503:
                        return self._check(method, response.status, content)
                    # 503 ``busy``: the server refused the connection before reading the request.
                    error: Exception = StoreServerError(self._describe(content, 503))
            except aiohttp.ClientConnectorCertificateError as exc:
                raise self._unverified(exc) from exc
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # Nothing sent, a read, or a write the server recognises by its id: all may try again.
                error = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreServerUnreachable(
                    f"cannot reach the store server at {self.host}:{self.port} ({self.base_url}) for "
                    f"{method}: {type(error).__name__}: {error or 'no answer'} "
                    f"({tries} tries over {self.retry_seconds:.1f} s)"
                ) from error
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)

    def _encode(self, body: dict[str, Any]) -> bytes:
        """The JSON of a request body, each field first checked by the store's value rule: a value the
        server would refuse is a ``ValueError`` naming its field here, without a round trip."""
        limits = self.value_limits
        return json.dumps({name: check_json(name, value, limits) for name, value in body.items()}).encode()

    def _unverified(self, exc: aiohttp.ClientConnectorCertificateError) -> StoreServerUnreachable:
        return StoreServerUnreachable(
            f"the store server at {self.host}:{self.port} presented a certificate that does not verify "
            f"({exc.certificate_error}); give the CA that signed it as tls_ca or AGL_SERVER_TLS_CA"
        )

    @staticmethod
    def _describe(content: bytes, status: int) -> str:
        try:
            payload = json.loads(content)
            detail = str(payload.get("detail", payload)) if isinstance(payload, dict) else str(payload)
        except ValueError:
            detail = content[:500].decode(errors="replace") or f"HTTP {status}"
        return detail

    def _check(self, method: str, status: int, content: bytes) -> bytes:
        if status < 300:
            return content
        detail = self._describe(content, status)
        if status in (400, 404, 409, 413, 422):
            raise ValueError(detail)
        if status == 401:
            raise PermissionError(f"store server at {self.host}:{self.port} refused {method}: {detail}")
        raise StoreServerError(
            f"store server at {self.host}:{self.port} failed {method} ({status}): {detail}"
        )

    # -- rollouts -------------------------------------------------------------------------------------

    @staticmethod
    def _create_body(
        input: TaskInput,
        mode: RolloutMode | None,
        resources_id: str | None,
        config: RolloutConfig | None,
        metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return {
            "input": input,
            "mode": mode,
            "resources_id": resources_id,
            "config": _dump(config),
            "metadata": metadata,
        }

    async def start_rollout(
        self,
        input: TaskInput,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AttemptedRollout:
        body = self._create_body(input, mode, resources_id, config, metadata)
        return _ATTEMPTED.validate_json(await self._request("start_rollout", body))

    async def enqueue_rollout(
        self,
        input: TaskInput,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Rollout:
        body = self._create_body(input, mode, resources_id, config, metadata)
        return _ROLLOUT.validate_json(await self._request("enqueue_rollout", body))

    async def dequeue_rollout(self) -> AttemptedRollout | None:
        return _MAYBE_ATTEMPTED.validate_json(await self._request("dequeue_rollout"))

    async def start_attempt(self, rollout_id: str) -> AttemptedRollout:
        return _ATTEMPTED.validate_json(await self._request("start_attempt", {"rollout_id": rollout_id}))

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
        body = _given(
            rollout_id=rollout_id,
            input=input,
            mode=mode,
            resources_id=resources_id,
            status=status,
            config=config,
            metadata=metadata,
        )
        return _ROLLOUT.validate_json(await self._request("update_rollout", body))

    async def query_rollouts(
        self,
        *,
        status: Sequence[RolloutStatus] | None = None,
        rollout_ids: Sequence[str] | None = None,
    ) -> list[Rollout]:
        body = {
            "status": None if status is None else list(status),
            "rollout_ids": None if rollout_ids is None else list(rollout_ids),
        }
        return _ROLLOUTS.validate_json(await self._request("query_rollouts", body))

    async def get_rollout_by_id(self, rollout_id: str) -> Rollout | None:
        return _MAYBE_ROLLOUT.validate_json(
            await self._request("get_rollout_by_id", {"rollout_id": rollout_id})
        )

    async def wait_for_rollouts(
        self, *, rollout_ids: list[str], timeout: float | None = None
    ) -> list[Rollout]:
        """Waits in chunks of at most ``wait_chunk_seconds`` (the server bounds each request too)."""
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        ids = list(rollout_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            chunk = self.wait_chunk_seconds if remaining is None else min(remaining, self.wait_chunk_seconds)
            raw = await self._request("wait_for_rollouts", {"rollout_ids": ids, "timeout": chunk}, chunk)
            done = _ROLLOUTS.validate_json(raw)
            if len(done) >= len(set(ids)) or (deadline is not None and time.monotonic() >= deadline):
                return done

    # -- attempts -------------------------------------------------------------------------------------

    async def query_attempts(self, rollout_id: str) -> list[Attempt]:
        return _ATTEMPTS.validate_json(await self._request("query_attempts", {"rollout_id": rollout_id}))

    async def get_latest_attempt(self, rollout_id: str) -> Attempt | None:
        raw = await self._request("get_latest_attempt", {"rollout_id": rollout_id})
        return _MAYBE_ATTEMPT.validate_json(raw)

    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str | Literal["latest"],
        status: AttemptStatus | Unset = UNSET,
        worker_id: str | Unset | None = UNSET,
        last_heartbeat_time: float | Unset = UNSET,
        metadata: dict[str, Any] | Unset = UNSET,
    ) -> Attempt:
        body = _given(
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            status=status,
            worker_id=worker_id,
            last_heartbeat_time=last_heartbeat_time,
            metadata=metadata,
        )
        return _ATTEMPT.validate_json(await self._request("update_attempt", body))

    # -- spans ----------------------------------------------------------------------------------------

    async def add_span(self, span: Span) -> Span:
        if not isinstance(span, Span):
            raise ValueError(f"span must be a Span, got {type(span).__name__}")
        check_span(span, self.value_limits)  # named as the store names them (span.attributes...)
        return _SPAN.validate_json(await self._request("add_span", span.model_dump(mode="json")))

    async def query_spans(
        self, rollout_id: str, attempt_id: str | Literal["latest"] | None = None
    ) -> list[Span]:
        raw = await self._request("query_spans", {"rollout_id": rollout_id, "attempt_id": attempt_id})
        return _SPANS.validate_json(raw)

    # -- resources ------------------------------------------------------------------------------------

    async def add_resources(self, resources: NamedResources) -> ResourcesUpdate:
        return _RESOURCES.validate_json(await self._request("add_resources", {"resources": resources}))

    async def get_latest_resources(self) -> ResourcesUpdate | None:
        return _MAYBE_RESOURCES.validate_json(await self._request("get_latest_resources"))

    async def get_resources_by_id(self, resources_id: str) -> ResourcesUpdate | None:
        raw = await self._request("get_resources_by_id", {"resources_id": resources_id})
        return _MAYBE_RESOURCES.validate_json(raw)

    async def release_claims(self, client_names: Sequence[str]) -> int:
        """Tell the server these clients are gone: the attempts they hold are marked unresponsive.

        Answered by a server that tracks claims (``store.claims``); the number of attempts marked.
        """
        raw = await self._request("claims/release", {"clients": list(client_names)})
        return int(json.loads(raw)["marked"])

    # -- lifecycle ------------------------------------------------------------------------------------

    async def health(self) -> None:
        """Check that the server answers (and accepts the token), retrying for ``retry_seconds``."""
        session = self._session()
        deadline = time.monotonic() + self.retry_seconds
        while True:
            try:
                async with session.get(_API + "health") as response:
                    self._check("health", response.status, await response.read())
                    return
            except aiohttp.ClientConnectorCertificateError as exc:
                raise self._unverified(exc) from exc
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise StoreServerUnreachable(
                        f"cannot reach the store server at {self.host}:{self.port} ({self.base_url}): "
                        f"{type(exc).__name__}: {exc or 'no answer'} (waited {self.retry_seconds:.1f} s)"
                    ) from exc
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Close the connection pool of the running loop (others are dropped with their loops)."""
        with contextlib.suppress(RuntimeError):
            session = self._sessions.pop(asyncio.get_running_loop(), None)
            if session is not None:
                await session.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sessions"] = {}
        state["_ssl"] = None  # rebuilt from tls_ca where it is used
        return state

    def __repr__(self) -> str:
        return f"HttpLightningStore({self.base_url!r})"


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _given(**fields: Any) -> dict[str, Any]:
    """The keywords that are not ``UNSET``, ready for JSON (omitted ones stay unchanged on the server)."""
    return {name: _dump(value) for name, value in fields.items() if value is not UNSET}
