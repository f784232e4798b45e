"""The store's HTTP boundary: a FastAPI server exposing a ``LightningStore``, and a client implementing it.

``server.LightningStoreServer`` serves a store on one host/port from its own thread (uvicorn);
``client.HttpLightningStore`` is a ``LightningStore`` whose every method is a request to such a server.
Together they let runners on other processes or machines share the algorithm's store (the ``cs`` strategy).

The server's names are imported on first use: a runner process needs only the client, and importing the
server's framework (FastAPI, uvicorn) would cost every spawned worker a second of start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentlightning.store.http.client import HttpLightningStore, StoreServerUnreachable

if TYPE_CHECKING:
    from agentlightning.store.http.server import LightningStoreServer, ServerBindError, create_app

__all__ = [
    "HttpLightningStore",
    "LightningStoreServer",
    "ServerBindError",
    "StoreServerUnreachable",
    "create_app",
]

_SERVER_NAMES = frozenset({"LightningStoreServer", "ServerBindError", "create_app"})


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        return getattr(importlib.import_module("agentlightning.store.http.server"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
