"""Agent-Lightning execution layer: the store, execution strategies, the registry and a small Trainer.

Public names are imported lazily so that ``import agentlightning`` stays cheap in sandboxes and workers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time the names below are imported on first use
    from agentlightning.execution.base import AlgorithmBundle, ExecutionStrategy, RunnerBundle
    from agentlightning.execution.events import (
        ExecutionEvent,
        MultiprocessingEvent,
        ThreadingEvent,
        wait_async,
    )
    from agentlightning.execution.processes import WorkerDied
    from agentlightning.store.base import LightningStore
    from agentlightning.store.http.client import StoreServerUnreachable
    from agentlightning.store.ipc import StoreChannelError
    from agentlightning.store.memory import InMemoryLightningStore
    from agentlightning.store.remote import StoreServerError
    from agentlightning.store.threaded import ThreadedLightningStore
    from agentlightning.store.values import InvalidValueError
    from agentlightning.trainer.init_utils import build_component
    from agentlightning.trainer.registry import ExecutionStrategyRegistry
    from agentlightning.trainer.trainer import Trainer

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ExecutionStrategy": "agentlightning.execution.base",
    "AlgorithmBundle": "agentlightning.execution.base",
    "RunnerBundle": "agentlightning.execution.base",
    "ExecutionEvent": "agentlightning.execution.events",
    "ThreadingEvent": "agentlightning.execution.events",
    "MultiprocessingEvent": "agentlightning.execution.events",
    "wait_async": "agentlightning.execution.events",
    "WorkerDied": "agentlightning.execution.processes",
    "LightningStore": "agentlightning.store.base",
    "InMemoryLightningStore": "agentlightning.store.memory",
    "ThreadedLightningStore": "agentlightning.store.threaded",
    "InvalidValueError": "agentlightning.store.values",
    "StoreServerError": "agentlightning.store.remote",
    "StoreServerUnreachable": "agentlightning.store.http.client",
    "StoreChannelError": "agentlightning.store.ipc",
    "ExecutionStrategyRegistry": "agentlightning.trainer.registry",
    "build_component": "agentlightning.trainer.init_utils",
    "Trainer": "agentlightning.trainer.trainer",
}

__all__ = [  # noqa: RUF022 - the version first, then the names in alphabetical order
    "__version__",
    "AlgorithmBundle",
    "ExecutionEvent",
    "ExecutionStrategy",
    "ExecutionStrategyRegistry",
    "InMemoryLightningStore",
    "InvalidValueError",
    "LightningStore",
    "MultiprocessingEvent",
    "RunnerBundle",
    "StoreChannelError",
    "StoreServerError",
    "StoreServerUnreachable",
    "ThreadedLightningStore",
    "ThreadingEvent",
    "Trainer",
    "WorkerDied",
    "build_component",
    "wait_async",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentlightning' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
