"""Breaks E3 (first-error-wins): with several failures, the last one is raised.

The failures are collected in order, then ``raise failures[-1]`` ("the most recent error is the most
relevant"): the error that started the shutdown is replaced by a follow-up failure it caused.
"""

from __future__ import annotations

from strategies.thread_pool import Run, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "LastErrorWinsStrategy"]

BREAKS = "E3"


class LastErrorWinsStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example, raising the last failure."""

    def _raise_outcome(self, run: Run) -> None:
        if run.failures:
            raise run.failures[-1][1]
