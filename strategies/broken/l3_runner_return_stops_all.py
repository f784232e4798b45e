"""Breaks L3 (runner-return-is-local): a runner that returns normally sets the event, stopping everyone.

"Any bundle finishing means the run is over": the strategy treats every bundle like the algorithm, so
one runner running out of work stops the algorithm and the other runners.
"""

from __future__ import annotations

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.events import ExecutionEvent
from agentlightning.store.base import LightningStore
from strategies.thread_pool import Bundle, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "RunnerReturnStopsAllStrategy"]

BREAKS = "L3"


class RunnerReturnStopsAllStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, where any bundle's return sets the event."""

    def _bundles(
        self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore, event: ExecutionEvent
    ) -> list[Bundle]:
        bundles = super()._bundles(algorithm, runner, store, event)
        for bundle in bundles:
            bundle.sets_event_on_return = True
        return bundles
