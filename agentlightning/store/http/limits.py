"""What one client may cost the store server: connections, header time and size, body size, JSON elements.

A server bound beyond loopback can be reached by anyone on its network before any token is checked, and
uvicorn alone holds every connection that never finishes its headers and buffers headers without bound.
``ServerLimits`` closes that door; its defaults (the ``DEFAULT_*`` constants) are:

- ``max_connections`` 512: open connections at once (``DEFAULT_MAX_CONNECTIONS``); one more is answered
  503 ``busy`` and closed at once, before it can send anything.
- ``header_timeout`` 10 s: a request line and headers must be complete within this time of the
  connection opening (or of the first byte of a later request on it); otherwise 408 and the connection is
  closed (slowloris). With TLS, the handshake has the same bound.
- ``max_header_bytes`` 64 KiB: request line and headers together; more gets 431 and the connection closed.
- ``max_body_bytes`` 16 MiB: checked before the body is read (413 ``payload_too_large``).
- ``max_json_elements`` 1,001,024 (the store's ``ValueLimits.max_items`` and room for the request's own
  fields): JSON containers and elements in one body, counted as the ``[``, ``{`` and ``,`` outside
  strings before anything is parsed (413 ``too_many_elements``): a small body such as
  ``[{},{},...]`` (a 16 MiB one holds 5.6 million) cannot become a gigabyte of objects, nor hold the
  server's event loop while they are built. The count is C-speed (``bytes.count``; strings are
  stripped by one regular expression only when the plain count is over the limit). Parsing refuses
  ``NaN`` and ``Infinity`` (400).
- ``keepalive_seconds`` 5 (whole seconds): an idle connection is closed after this (the client keeps
  its own idle connections for less, so it never sends on one the server is closing).

An authenticated client may still send ``max_body_bytes`` at a time; everything above holds before
authentication, which is what an anonymous peer can reach.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from agentlightning.store.http.errors import ApiError, error_json
from agentlightning.store.http.one_write import HeadWithBody
from agentlightning.store.values import DEFAULT_LIMITS

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_KEEPALIVE_SECONDS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_JSON_ELEMENTS",
    "LimitedConfig",
    "LimitedHttpProtocol",
    "ServerLimits",
    "count_json_elements",
    "parse_json_body",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_JSON_ELEMENTS = DEFAULT_LIMITS.max_items + 1024  # one value at the store's bound, and the request
DEFAULT_KEEPALIVE_SECONDS = 5


@dataclass(frozen=True)
class ServerLimits:
    """The bounds a store server holds every client to (see the module docstring for each)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_elements: int = DEFAULT_MAX_JSON_ELEMENTS
    keepalive_seconds: int = DEFAULT_KEEPALIVE_SECONDS

    def __post_init__(self) -> None:
        for name in (
            "max_connections",
            "max_header_bytes",
            "max_body_bytes",
            "max_json_elements",
            "keepalive_seconds",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        value = self.header_timeout
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise ValueError(f"header_timeout must be a positive number of seconds, got {value!r}")


# -- the JSON body ------------------------------------------------------------------------------------------

# A JSON string, escapes included, written so that the engine never backtracks.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def count_json_elements(body: bytes) -> int:
    """An upper bound of the JSON containers and elements in ``body``: its ``[``, ``{`` and ``,`` bytes."""
    return body.count(b"[") + body.count(b"{") + body.count(b",")


def _refuse_constant(name: str) -> Any:
    raise ApiError(400, "invalid_json", f"malformed JSON body: {name} is not a JSON number (send null)")


def parse_json_body(body: bytes, max_elements: int) -> Any:
    """The value of a JSON body, refused before parsing when it holds more than ``max_elements``
    containers and elements (413), and refused when it is not strict JSON (400): ``ApiError``."""
    if count_json_elements(body) > max_elements:
        # Brackets and commas inside strings cost nothing: count again without the strings.
        counted = count_json_elements(_STRING.sub(b"", body))
        if counted > max_elements:
            raise ApiError(
                413,
                "too_many_elements",
                f"the JSON body holds {counted} containers and elements, more than the server's limit of "
                f"{max_elements} (max_json_elements)",
            )
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"malformed JSON body: {exc.msg} at position {exc.pos}") from None
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "malformed JSON body: not UTF-8 text") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "malformed JSON body: nested too deeply to parse") from None


# -- connections --------------------------------------------------------------------------------------------


class LimitedConfig(uvicorn.Config):
    """uvicorn's configuration, carrying the limits its connections enforce (``LimitedHttpProtocol``)."""

    def __init__(self, app: Any, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(app, http=LimitedHttpProtocol, timeout_keep_alive=limits.keepalive_seconds, **kwargs)
        self.limits = limits
        self.last_refusal_logged = 0.0


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol (httptools) with the connection cap and the header time and size bounds.

    The header phase starts when the connection opens and again after each complete request; its bytes
    are counted before the parser sees them (a header that never ends is never buffered beyond the cap),
    and it ends when the parser reports the headers complete. Its timer runs from the connection's
    opening, and for a later request from the end of the first read that left its headers unfinished.
    """

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._config = config if isinstance(config, LimitedConfig) else None
        self._limits = self._config.limits if self._config is not None else ServerLimits()
        self._reading_headers = True
        self._message_begun = False
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # An answer's head and body go out in one write (one segment, one wake-up of the client).
        super().connection_made(HeadWithBody(transport))  # type: ignore[arg-type]
        if len(self.connections) > self._limits.max_connections:
            self._refuse(
                503, "busy", f"the store server has {self._limits.max_connections} connections open already"
            )
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        while data and not self.transport.is_closing():
            if not self._reading_headers:
                super().data_received(data)
                break
            room = self._limits.max_header_bytes - self._header_bytes
            if len(data) <= room:
                self._header_bytes += len(data)
                super().data_received(data)
                break
            head, data = data[:room], data[room:]
            self._header_bytes += len(head)
            super().data_received(head)
            if self._reading_headers and not self.transport.is_closing():
                self._refuse(
                    431, "headers_too_large", f"request headers exceed {self._limits.max_header_bytes} bytes"
                )
                return
        # A later request's headers are timed only when they did not arrive whole: most do, and they
        # cost no timer (an idle keep-alive connection is uvicorn's own keep-alive timeout's business).
        if self._message_begun and self._header_timer is None and not self.transport.is_closing():
            self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_begun = True

    def on_headers_complete(self) -> None:
        self._reading_headers = self._message_begun = False
        self._header_bytes = 0
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_headers = True

    def on_response_complete(self) -> None:
        if isinstance(self.transport, HeadWithBody):
            self.transport.flush()  # an answer without a body write (HEAD): its head goes now
        super().on_response_complete()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._limits.header_timeout, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._reading_headers and not self.transport.is_closing():
            self._refuse(
                408, "header_timeout", f"request headers not complete within {self._limits.header_timeout} s"
            )

    def _refuse(self, status: int, code: str, detail: str) -> None:
        """Answer ``status`` with an error body before any request is read, and close the connection."""
        self._disarm_header_timer()
        self._log_refusal(status, detail)
        body = error_json(code, detail)
        self.transport.write(
            b"".join(
                (
                    STATUS_LINE[status],
                    b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                )
            )
        )
        self.transport.close()

    def _log_refusal(self, status: int, detail: str) -> None:
        # A flood would otherwise write one line per connection: one warning a minute, the rest at debug.
        now = time.monotonic()
        config = self._config
        if config is not None and now - config.last_refusal_logged >= 60.0:
            config.last_refusal_logged = now
            logger.warning("store server refused a connection from %s: %s (%d)", self.client, detail, status)
        else:
            logger.debug("store server refused a connection from %s: %s (%d)", self.client, detail, status)
