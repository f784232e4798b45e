"""P1 zoo: two errors reported at the same moment are both dropped and ``execute()`` returns ``None``.

Found only by P1 with its scheduling perturbation: a report takes a few microseconds, and two bundles
failing together almost never report at the same moment unless one of them is delayed while it stops
the others. Built on the public API only (the ``shm`` strategy, subclassed).
"""

from __future__ import annotations

import threading
from typing import Any

from agentlightning import AlgorithmBundle, LightningStore, RunnerBundle
from agentlightning.execution.shared_memory import SharedMemoryExecutionStrategy

__all__ = ["BREAKS", "INTERLEAVING_ONLY", "P1OverlappingErrorsDropped"]

BREAKS = "P1"
INTERLEAVING_ONLY = True


class _Reports:
    """Failure reports, de-duplicated: two reports in flight at once are taken for one failure seen twice."""

    def __init__(self, event: Any) -> None:
        self._event = event
        self._lock = threading.Lock()
        self._in_flight = 0
        self._overlapped = False
        self.errors: list[Exception] = []

    def report(self, exc: Exception) -> None:
        with self._lock:
            self._in_flight += 1
        self._event.set()  # stop the others first
        with self._lock:
            overlapped = self._overlapped or self._in_flight > 1
            self._overlapped = overlapped
            self._in_flight -= 1
            if not overlapped:
                self.errors.append(exc)
            # DEFECT: an overlapping report is dropped as an echo, and so is the one it overlapped


class P1OverlappingErrorsDropped(SharedMemoryExecutionStrategy):
    """Broken for P1: two failures whose reports overlap are both dropped; ``execute()`` returns ``None``.

    Defect: each bundle's error is caught by its wrapper, which sets the event and files a report; the
    strategy raises the first filed report once every bundle is done. Reports are de-duplicated (one
    failure can be reported by the bundle and by its thread's watcher): two reports in flight at the same
    moment are taken for one failure seen twice, and, neither knowing which copy to keep, both are
    dropped (E3/K1/E6 broken: nothing is raised). One failure, or two a moment apart, is raised.
    """

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        reports: _Reports | None = None

        async def reported_algorithm(store: Any, event: Any) -> None:
            try:
                await algorithm(store, event)
            except Exception as exc:
                _reports(event).report(exc)

        async def reported_runner(store: Any, worker_id: int, event: Any) -> None:
            try:
                await runner(store, worker_id, event)
            except Exception as exc:
                _reports(event).report(exc)

        lock = threading.Lock()

        def _reports(event: Any) -> _Reports:
            nonlocal reports
            with lock:
                if reports is None:
                    reports = _Reports(event)
                return reports

        super().execute(reported_algorithm, reported_runner, store)
        if reports is not None and reports.errors:
            raise reports.errors[0]
