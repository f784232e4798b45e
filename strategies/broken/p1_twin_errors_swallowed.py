"""P1 zoo: an error is swallowed when two bundles fail together with the same exception type.

Found only by P1 (random schedules): the fixed checks never make two bundles fail with one type.
Built on the public API only (the ``shm`` strategy, subclassed).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from agentlightning import AlgorithmBundle, LightningStore, RunnerBundle
from agentlightning.execution.shared_memory import SharedMemoryExecutionStrategy

__all__ = ["P1TwinErrorsSwallowed"]


class P1TwinErrorsSwallowed(SharedMemoryExecutionStrategy):
    """Broken for P1: two failures of the same type cancel out and ``execute()`` returns ``None``.

    Defect: failure reports are de-duplicated by exception type, meant to drop the echo of one failure
    reported twice; when two bundles really fail together with the same type, both reports are dropped as
    echoes of each other and nothing is raised (E1/E2/E3 broken). One failure, or two of different types
    (as in the fixed E3 and E4 checks), is raised correctly.
    """

    def __init__(
        self,
        n_runners: int = 1,
        graceful_delay: float = 1.0,
        join_timeout: float = 5.0,
        managed_store: bool | None = None,
    ) -> None:
        super().__init__(
            n_runners=n_runners,
            graceful_delay=graceful_delay,
            join_timeout=join_timeout,
            managed_store=managed_store,
        )

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        lock = threading.Lock()
        reported: list[type[BaseException]] = []

        def report(exc: BaseException) -> None:
            if not isinstance(exc, asyncio.CancelledError):
                with lock:
                    reported.append(type(exc))

        async def watched_algorithm(store: Any, event: Any) -> None:
            try:
                await algorithm(store, event)
            except BaseException as exc:
                report(exc)
                raise

        async def watched_runner(store: Any, worker_id: int, event: Any) -> None:
            try:
                await runner(store, worker_id, event)
            except BaseException as exc:
                report(exc)
                raise

        try:
            super().execute(watched_algorithm, watched_runner, store)
        except BaseException as exc:
            with lock:
                twins = reported.count(type(exc))
            if twins >= 2:
                return None  # DEFECT: "the same failure reported twice": both dropped
            raise
