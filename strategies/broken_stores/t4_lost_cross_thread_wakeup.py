"""Breaks T4 (wait): a terminal transition resolves a waiter's future directly, from whatever thread it is on.

"The future is ours; set it": ``future.set_result`` from another thread than the waiter's loop is not
thread-safe and does not wake that loop. A ``wait_for_rollouts`` in one thread, with the rollout
completed from another (a runner thread, an ipc connection), sleeps on until its timeout.
"""

from __future__ import annotations

from agentlightning.store.memory import InMemoryLightningStore, _resolve, _Waiter

__all__ = ["BREAKS", "LostCrossThreadWakeupStore"]

BREAKS = "T4"


class LostCrossThreadWakeupStore(InMemoryLightningStore):
    """The reference store, waking waiters without ``call_soon_threadsafe``."""

    @staticmethod
    def _fire(waiter: _Waiter) -> None:
        _resolve(waiter.future)
