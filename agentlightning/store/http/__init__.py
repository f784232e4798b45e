"""The store's HTTP boundary: a FastAPI server exposing a ``LightningStore``, and a client implementing it.

``server.LightningStoreServer`` serves a store on one host/port from its own thread (uvicorn);
``client.HttpLightningStore`` is a ``LightningStore`` whose every method is a request to such a server.
Together they let runners on other processes or machines share the algorithm's store (the ``cs`` strategy).
"""

from __future__ import annotations

from agentlightning.store.http.client import HttpLightningStore, StoreServerUnreachable
from agentlightning.store.http.server import LightningStoreServer, ServerBindError, create_app

__all__ = [
    "HttpLightningStore",
    "LightningStoreServer",
    "ServerBindError",
    "StoreServerUnreachable",
    "create_app",
]
