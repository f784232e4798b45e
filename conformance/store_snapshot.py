"""Describe the store object a scenario passed to ``execute()``: what it is and every rollout it holds.

The sandbox calls ``describe_caller_store(store)`` after ``execute()`` when ``Scenario.inspect_caller_store``
is set and returns the dict in ``ScenarioResult.caller_store``. S3 checks that the caller's store holds
every write; S6 compares the object bundles received with the caller's (type, ``id``, pid). Only the
store's protocol method names are used, so a foreign store passed through ``--store`` works too.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

__all__ = ["describe_caller_store"]


async def _snapshot(store: Any) -> dict[str, Any]:
    rollouts = []
    for rollout in await store.query_rollouts():
        rollout_id = rollout.rollout_id
        attempts = await store.query_attempts(rollout_id)
        spans = await store.query_spans(rollout_id)
        rollouts.append(
            {
                "rollout_id": rollout_id,
                "status": str(rollout.status),
                "attempts": [str(attempt.status) for attempt in attempts],
                "spans": len(spans),
            }
        )
    latest = await store.get_latest_resources()
    return {"rollouts": rollouts, "latest_resources_id": getattr(latest, "resources_id", None)}


def describe_caller_store(store: Any, *, timeout: float = 10.0) -> dict[str, Any]:
    """``{"type", "id", "pid", "snapshot"}`` (or ``"error"`` when reading the store failed or hung).

    The snapshot runs its own event loop on a short-lived thread so the caller's thread keeps its event
    loop state exactly as ``execute()`` left it (R7 looks at that).
    """
    description: dict[str, Any] = {
        "type": f"{type(store).__module__}.{type(store).__qualname__}",
        "id": id(store),
        "pid": os.getpid(),
    }
    outcome: dict[str, Any] = {}

    def read() -> None:
        try:
            outcome["snapshot"] = asyncio.run(asyncio.wait_for(_snapshot(store), timeout))
        except BaseException as error:  # reported as data: the check decides what it means
            outcome["error"] = f"{type(error).__name__}: {error}"

    reader = threading.Thread(target=read, name="conformance-store-snapshot", daemon=True)
    reader.start()
    reader.join(timeout + 1.0)
    if reader.is_alive():
        outcome.setdefault("error", f"reading the store did not finish within {timeout:g} s")
    description.update(outcome)
    return description
