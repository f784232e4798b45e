"""Breaks S4 (store-fault): a store ``ConnectionError`` in a bundle ends the run quietly, without error.

"When the store goes away there is nothing left to do: stop cleanly" — the strategy logs a
``ConnectionError`` (any ``OSError``) from a bundle at INFO level, sets the event and lets ``execute()``
return normally. A run cut short by a store outage looks like a finished one.
"""

from __future__ import annotations

import logging

from strategies.thread_pool import Bundle, Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "StoreErrorsSwallowedStrategy"]

BREAKS = "S4"

logger = logging.getLogger(__name__)


class StoreErrorsSwallowedStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, ignoring connection errors of bundles."""

    def _bundle_failed(self, run: Run, bundle: Bundle, exc: BaseException) -> None:
        if isinstance(exc, OSError):
            logger.info("%s lost its store connection (%s); stopping the run", bundle.name, exc)
            run.event.set()
            return
        super()._bundle_failed(run, bundle, exc)
