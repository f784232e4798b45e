"""``HttpLightningStore``: a ``LightningStore`` whose every method is a request to a ``LightningStoreServer``.

The methods themselves are ``remote.RemoteLightningStore``'s (built from the method table, ``methods.py``);
this module is the HTTP transport: each call is ``POST /v1/<method>`` with its keywords as the JSON body.

Errors follow the rule of every remote path (``remote.py``): the server's 400/404/409/413/422 answers
re-raise as ``ValueError`` with the server's message, 401 as ``PermissionError``, other failures (a store
error that is not a ``ValueError`` is a 500 whose text stays in the server's log) as ``StoreServerError``.
A server that cannot be reached raises ``StoreServerUnreachable`` (a ``ConnectionError``) naming host and
port.

Retries never do harm, within ``retry_seconds`` in total: idempotent calls (the table's: lookups,
queries, ``wait_for_rollouts``) are retried on any transport failure, and so are writes, each of which
carries one request id
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
import itertools
import json
import os
import secrets
import ssl
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from agentlightning.store.claims import CLIENT_HEADER
from agentlightning.store.http.replays import REQUEST_ID_HEADER
from agentlightning.store.http.security import (
    check_unix_socket,
    client_ssl_context,
    resolve_ca,
    resolve_token,
)
from agentlightning.store.methods import StoreMethod
from agentlightning.store.remote import RemoteLightningStore, StoreServerError
from agentlightning.store.values import DEFAULT_LIMITS, ValueLimits, check_json

__all__ = ["HttpLightningStore", "StoreServerError", "StoreServerUnreachable"]

_API = "/v1/"
# Below the server's keep-alive bound (limits.DEFAULT_KEEPALIVE_SECONDS, 5 s; a test keeps them in step),
# written out so that a runner process never imports the server's framework (limits.py needs uvicorn).
_KEEPALIVE_SECONDS = 3.0
_UNREAD_HEADERS = ("Accept", "Accept-Encoding", "User-Agent")
"""Headers aiohttp adds by default that the store server never reads (it never compresses its answers)."""


class StoreServerUnreachable(ConnectionError):
    """The store server could not be reached (refused, timed out, connection lost) within the bound."""


_forks = 0
"""Incremented in a child process at each fork: a client's request ids start a new sequence there."""


def _count_fork() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_count_fork)


class _RequestIds:
    """Request ids for writes (``replays.py``): a random 128-bit prefix, then a counter.

    Unique without a random draw per write (a ``uuid4`` is a system call and a few microseconds on every
    write of a busy runner). The prefix is drawn on first use, again in a forked child, and a copy of a
    client (pickled to a runner, ``named()``) gets ids of its own: no two processes share a sequence.
    Threads may share a client: the state is one tuple swapped whole and ``itertools.count`` hands each
    caller its own number, so two threads never read the same one (two ids alike would make the server
    drop one write as a replay of the other).
    """

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state: tuple[int, str, Iterator[int]] | None = None

    def next(self) -> str:
        state = self._state
        if state is None or state[0] != _forks:
            state = self._state = (_forks, secrets.token_hex(16), itertools.count(1))
        return f"{state[1]}-{next(state[2]):x}"


class HttpLightningStore(RemoteLightningStore):
    """A ``LightningStore`` served by a ``LightningStoreServer`` at ``base_url``.

    ``token`` (default ``AGL_SERVER_TOKEN``; at least ``MIN_TOKEN_LENGTH`` characters) is sent as a
    bearer token. ``tls_ca``: the PEM CA bundle an ``https://`` server's certificate is verified with
    (default ``AGL_SERVER_TLS_CA``, else the system's CAs). ``request_timeout`` bounds one request
    (``wait_for_rollouts`` adds its own timeout); ``retry_seconds`` bounds the total time spent retrying
    one call before ``StoreServerUnreachable`` is raised. Every value sent is first checked by the
    store's value rule with ``value_limits`` (``values.py``; keep them the server's). ``unix_socket``: the
    path of a Unix domain socket the server also listens on (``LightningStoreServer``'s ``unix_socket``,
    on this machine): requests go through it, ``base_url`` still names the server.
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
        unix_socket: str | None = None,
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
        self.unix_socket = check_unix_socket(unix_socket)
        self.client_name: str | None = None
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._ssl: ssl.SSLContext | None = None
        self._request_ids = _RequestIds()

    def named(self, client_name: str) -> HttpLightningStore:
        """A copy of this client (no connection shared) that names itself ``client_name`` to the server."""
        if not isinstance(client_name, str) or not client_name or not client_name.isprintable():
            raise ValueError(f"client_name must be a non-empty printable str, got {client_name!r}")
        clone = copy.copy(self)
        clone._sessions = {}
        clone._request_ids = _RequestIds()
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
            # Idle connections go before the server's keep-alive bound closes them under a request.
            connector: aiohttp.BaseConnector
            if self.unix_socket is not None:
                connector = aiohttp.UnixConnector(
                    self.unix_socket, limit=8, keepalive_timeout=_KEEPALIVE_SECONDS
                )
            else:
                connector = aiohttp.TCPConnector(
                    limit=8,
                    keepalive_timeout=_KEEPALIVE_SECONDS,
                    ssl=self._ssl if self._ssl is not None else True,
                )
            session = aiohttp.ClientSession(
                self.base_url,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
                connector=connector,
                trust_env=False,  # a proxy from the environment must not sit between runners and the store
                # Headers the server never reads: each costs both ends a header to write and to parse.
                skip_auto_headers=_UNREAD_HEADERS,
            )
            self._sessions[loop] = session
        return session

    @property
    def _outgoing_limits(self) -> ValueLimits:
        return self.value_limits

    async def _call(self, method: StoreMethod, arguments: dict[str, Any]) -> bytes:
        if method.waits:
            return await self._wait(method, arguments)
        # A body that is one model argument (add_span's span) is that model's fields; no keywords, no body.
        body = arguments[method.parameters[0].name] if method.body_model is not None else arguments
        if not method.parameters:
            body = None
        return await self._request(method.name, body, idempotent=method.idempotent)

    async def _wait(self, method: StoreMethod, arguments: dict[str, Any]) -> bytes:
        """A waiting call in chunks of at most ``wait_chunk_seconds`` (the server bounds each request too),
        until its result is final (``method.done``) or the caller's ``timeout`` has passed."""
        timeout = arguments.get("timeout")
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            chunk = self.wait_chunk_seconds if remaining is None else min(remaining, self.wait_chunk_seconds)
            raw = await self._request(method.name, {**arguments, "timeout": chunk}, chunk, idempotent=True)
            done = method.done is None or method.done(arguments, method.decode(raw))
            if done or (deadline is not None and time.monotonic() >= deadline):
                return raw

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
        limits = self.value_limits
        checked = (
            None if body is None else {name: check_json(name, value, limits) for name, value in body.items()}
        )
        return await self._request(route, checked, extra_timeout, idempotent=idempotent)

    async def _request(
        self, method: str, body: Any = None, extra_timeout: float = 0.0, *, idempotent: bool
    ) -> bytes:
        """``POST /v1/<method>`` with ``body`` (checked already), retried as the module docstring says."""
        session = self._session()
        # A write keeps one id across its retries: the server applies it once whatever reaches it twice.
        headers = None if idempotent else {REQUEST_ID_HEADER: self._request_ids.next()}
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        tries = 0
        timeout = aiohttp.ClientTimeout(total=self.request_timeout + extra_timeout)
        data = b"" if body is None else json.dumps(body).encode()
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

    # -- beyond the store ------------------------------------------------------------------------------

    async def release_claims(self, client_names: Sequence[str]) -> int:
        """Tell the server these clients are gone: the attempts they hold are marked unresponsive.

        Answered by a server that tracks claims (``store.claims``); the number of attempts marked.
        """
        raw = await self.post("claims/release", {"clients": list(client_names)}, idempotent=True)
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
        state["_request_ids"] = _RequestIds()  # a copy draws ids of its own
        return state

    def __repr__(self) -> str:
        return f"HttpLightningStore({self.base_url!r})"
