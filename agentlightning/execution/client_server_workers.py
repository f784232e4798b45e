"""What ``cs`` runs in its worker processes: a runner, or (``main_process="runner"``) the algorithm.

Apart from ``client_server`` so that worker processes import only what they run: the store's HTTP client,
never the server's framework (FastAPI, uvicorn), which the serving side imports once with the strategy.
The forkserver preloads this module (``PRELOAD``), so workers forked from it start without importing.
"""

from __future__ import annotations

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.events import ExecutionEvent
from agentlightning.store.base import LightningStore
from agentlightning.store.claims import ClaimTrackingStore  # noqa: F401 - unpickled in every runner
from agentlightning.store.http.client import HttpLightningStore  # noqa: F401 - likewise

__all__ = ["PRELOAD", "run_algorithm", "run_runner"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

PRELOAD: tuple[str, ...] = (__name__,)
"""What the forkserver imports once for every worker it forks (this module and what it imports)."""


async def run_runner(
    runner: RunnerBundle, store: LightningStore, worker_id: int, event: ExecutionEvent
) -> None:
    """A runner process's bundle; its store is closed however it ends."""
    # A failure is not turned into event.set() here: the parent records it first and then sets the event,
    # so an error another bundle raises in reaction to the stop can never be recorded before it (E3).
    try:
        await runner(store, worker_id, event)
    finally:
        await store.close()


async def run_algorithm(algorithm: AlgorithmBundle, store: LightningStore, event: ExecutionEvent) -> None:
    """The algorithm in a process of its own (``main_process="runner"``); its return stops everyone."""
    try:
        await algorithm(store, event)
        event.set()  # the algorithm returning stops everyone (L2); a failure is the parent's to record (E3)
    finally:
        await store.close()
