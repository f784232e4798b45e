"""Breaks F4 (parent-death): a helper process survives its parent being killed.

A process strategy (the reference ``ipc``, subclassed) that also runs a metrics-exporter process for
the duration of each run. The exporter ignores SIGINT ("Ctrl+C must not cut a metrics write in half")
and is stopped through a ``multiprocessing.Event`` at the end of ``execute()`` — which never comes if
the caller is SIGKILLed (OOM killer, ``kill -9``): the exporter has no parent-death watch and runs on.
"""

from __future__ import annotations

import multiprocessing
import signal
from typing import Any

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.inter_process import InterProcessExecutionStrategy
from agentlightning.store.base import LightningStore

__all__ = ["BREAKS", "ExporterOutlivesParentStrategy"]

BREAKS = "F4"

_EXPORT_EVERY = 0.5


def _export_metrics(stop: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while not stop.wait(_EXPORT_EVERY):
        pass  # a real exporter would push counters to a metrics endpoint here


class ExporterOutlivesParentStrategy(InterProcessExecutionStrategy):
    """``ipc`` plus a metrics-exporter process without a parent-death watch."""

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        context = multiprocessing.get_context(self.start_method)
        stop = context.Event()
        exporter = context.Process(  # type: ignore[attr-defined]
            target=_export_metrics, args=(stop,), name="metrics-exporter"
        )
        exporter.start()
        try:
            super().execute(algorithm, runner, store)
        finally:
            stop.set()
            exporter.join()
            exporter.close()
