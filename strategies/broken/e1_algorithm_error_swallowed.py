"""Breaks E1 (algorithm-error): an exception in the algorithm is logged and ``execute()`` returns.

"The algorithm is done, one way or another": its failure is logged, the runners are stopped, and the
caller gets ``None`` — a training run that crashed on its first step looks like a finished one.
"""

from __future__ import annotations

import logging

from strategies.thread_pool import Bundle, Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "AlgorithmErrorSwallowedStrategy"]

BREAKS = "E1"

logger = logging.getLogger(__name__)


class AlgorithmErrorSwallowedStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, logging the algorithm's errors instead of raising them."""

    def _bundle_failed(self, run: Run, bundle: Bundle, exc: BaseException) -> None:
        if bundle.name == "algorithm" and isinstance(exc, Exception):
            logger.error("the algorithm failed: %r; stopping the runners", exc)
            self._algorithm_returned(run)
            return
        super()._bundle_failed(run, bundle, exc)
