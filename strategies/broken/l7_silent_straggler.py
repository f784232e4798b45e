"""Breaks L7 (blocking-bundle): a thread stuck in blocking code is left behind silently.

The strategy honours its join bound and returns, as a thread strategy must (its manifest declares
``can_cancel_blocking_code: False``), but it does not say which bundle it left behind: the user sees a
process that will not exit and no clue why.
"""

from __future__ import annotations

from strategies.thread_pool import Bundle, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "SilentStragglerStrategy"]

BREAKS = "L7"


class SilentStragglerStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, without the straggler warning."""

    def _report_stragglers(self, stragglers: list[Bundle]) -> None:
        return None
