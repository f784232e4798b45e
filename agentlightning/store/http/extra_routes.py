"""Routes a ``LightningStoreServer`` serves beside the store's own: how a user of the server adds routes.

The server serves a store; a strategy that needs more from the same server (the ``cs`` strategy's stop
event and its runner-side bookkeeping, ``agentlightning.execution.remote_stop``) declares each extra route
as an ``ExtraRoute`` and hands them to ``LightningStoreServer(routes=...)`` (or ``create_app``). Each is
``POST /v1/<name>``: its JSON body is validated into ``body`` (strictly: unknown fields, ``NaN`` and
``Infinity`` are refused, and every value passes the store's value rule), ``handler`` is awaited on the
server's event loop, and its ``answer`` model is the JSON answer. The token, the limits, the error answers
and the OpenAPI document apply to these routes as to the store's. A client calls them with
``HttpLightningStore.post``.

This module does not import the server's framework, so the module that declares the routes, and the
client side next to them, stay importable by runner processes that only need the client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel

from agentlightning.store.methods import RequestBody

__all__ = ["ExtraRoute", "RequestBody", "RouteCall"]


@dataclass(frozen=True)
class RouteCall:
    """What a route's handler learns about the request beside its body."""

    client_host: str | None
    """The address the request came from (``None`` where the server cannot tell)."""
    max_wait_seconds: float
    """The server's bound on a held request: a handler that waits waits at most this long."""


@dataclass(frozen=True)
class ExtraRoute:
    """One ``POST /v1/<name>`` route: ``handler(body, call)`` (``handler(call)`` without a ``body``)."""

    name: str
    answer: type[BaseModel]
    handler: Callable[..., Awaitable[BaseModel]]
    body: type[RequestBody] | None = None
    summary: str = ""

    def __post_init__(self) -> None:
        if (
            not self.name
            or self.name.startswith("/")
            or not all(part.isidentifier() for part in self.name.split("/"))
        ):
            raise ValueError(f"an extra route's name must look like 'word' or 'word/word', got {self.name!r}")
