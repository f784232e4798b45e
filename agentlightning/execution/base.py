"""``ExecutionStrategy``: how an algorithm bundle and its runner bundles are run, and stopped.

A strategy's ``execute(algorithm, runner, store)`` is a blocking call from ordinary code. It awaits
``algorithm(store, event)`` once and ``runner(store, worker_id, event)`` once per worker, all sharing one
stop event, and returns only when every bundle is done and everything it started is gone. The contract
catalogue (``CONTRACTS.md``, checked by ``pytest --strategy=...``) says exactly what that means.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from agentlightning.execution.events import ExecutionEvent
from agentlightning.store.base import LightningStore

__all__ = ["CAPABILITY_NAMES", "AlgorithmBundle", "ExecutionStrategy", "RunnerBundle"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True


class AlgorithmBundle(Protocol):
    """The algorithm side: awaited exactly once per ``execute()``."""

    async def __call__(self, store: LightningStore, event: ExecutionEvent) -> None: ...


class RunnerBundle(Protocol):
    """The runner side: awaited once per worker, ``worker_id`` in ``0 .. n_runners - 1``."""

    async def __call__(self, store: LightningStore, worker_id: int, event: ExecutionEvent) -> None: ...


CAPABILITY_NAMES: frozenset[str] = frozenset(
    {
        "uses_processes",
        "shares_caller_store",
        "can_cancel_blocking_code",
        "supports_start_methods",
        "supports_unmanaged_store",
        "grace_seconds",
        "terminate_seconds",
        "join_seconds",
        "start_seconds",
        "runs_on_many_hosts",
        "host_sides",
        "host_test_options",
        "host_loss_seconds",
        "host_loss_policy",
        "partition_seconds",
        "late_store_seconds",
    }
)
"""Keys a strategy may declare in ``capabilities`` (the conformance kit rejects any other key)."""


class ExecutionStrategy(ABC):
    """Base class of every execution strategy.

    ``alias`` is the short name the registry knows it by. ``capabilities`` is a data manifest that says
    what the strategy is, for the conformance kit to read: ``uses_processes`` (bundles run in child
    processes), ``shares_caller_store`` (the store passed to ``execute`` holds every write afterwards),
    ``can_cancel_blocking_code`` (a bundle stuck in sync code can be stopped), ``supports_start_methods``
    (multiprocessing start methods that work), ``supports_unmanaged_store`` (``managed_store=False``
    hands bundles the caller's object), the declared bounds ``grace_seconds``, ``terminate_seconds``,
    ``join_seconds``, ``start_seconds`` (how long one ``execute()`` may take to start its bundles, e.g.
    placing them on a cluster: the kit waits that much longer per run before it calls a run hung), and
    for strategies whose runners can live on other machines ``runs_on_many_hosts``
    and ``host_sides`` (how to start its algorithm side and a runner side; docs/multi-host-strategies.md)
    with the bounds and policy of section D (``host_loss_seconds``, ``host_loss_policy``,
    ``partition_seconds``, ``late_store_seconds``) and ``host_test_options`` (the constructor options the
    kit's section D builds it with, so that it checks short but realistic bounds).
    Instances may refine it through the ``capabilities`` property.
    """

    alias: ClassVar[str] = ""
    n_runners: int = 1
    capability_manifest: ClassVar[Mapping[str, Any]] = {}

    @property
    def capabilities(self) -> dict[str, Any]:
        """This instance's manifest (class manifest plus instance-specific bounds)."""
        return dict(self.capability_manifest)

    @abstractmethod
    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        """Run the bundles to completion; re-raise the first bundle error or ``KeyboardInterrupt``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_runners={self.n_runners})"
