"""One side of a multi-host strategy on a test host (section D): ``python -m conformance.host_side SPEC``.

The D checks start this module once per host, inside the host's network namespace. SPEC (JSON) holds
the target (``strategy``, ``options`` with the side's placement merged in, ``store_factory``), the
scripts of both bundles, the journal this host's bundles append to and the result file. Every side gets
both bundles and a fresh store, as the kit hands them; the strategy's side decides which it runs.

The side starts with the signal state of a program started from a terminal (``signal_defaults``),
whatever the kit inherited. It journals ``side execute`` just before ``execute()`` (imports and
construction done). A side started ahead (``gate`` in SPEC) journals ``side ready`` once built and
calls ``execute()`` only when the kit opens that gate: its imports overlap the other sides' start-up,
and what the checks time starts at ``side execute`` as before. The result file (JSON) says how
``execute()`` ended (``outcome``, and for a raise the type, message and traceback), when (``ended``:
``time.monotonic()``, comparable across hosts on one machine), the strategy's ``repr`` and, when
``history`` is asked for, every rollout of the side's store with its attempts: the record D2 and D3
count lost and twice-completed rollouts in.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from conformance.bundles import ScriptedAlgorithm, ScriptedRunner
from conformance.faults import gate_is_open
from conformance.journal import write_record
from conformance.scenarios import Script, Step
from conformance.signal_defaults import restore_default_signals
from conformance.target import build_store, build_strategy, make_target

__all__ = ["EXECUTE_GATE", "script_from_json", "script_to_json", "side_spec"]

EXECUTE_GATE = "execute"
"""The gate (in the host's journal directory) a side started ahead waits at before ``execute()``."""
_GATE_POLL = 0.01  # seconds between looks at the gate, as the scripted bundles' gate steps


def script_to_json(script: Script) -> list[dict[str, Any]]:
    """A script as JSON data (steps keep their kind, seconds and arguments)."""
    return [{"kind": step.kind, "seconds": step.seconds, "args": dict(step.args)} for step in script.steps]


def script_from_json(data: Sequence[Mapping[str, Any]]) -> Script:
    return Script(tuple(Step(str(s["kind"]), float(s["seconds"]), dict(s["args"])) for s in data))


def side_spec(
    *,
    strategy: str,
    options: Mapping[str, Any],
    store_factory: str,
    algorithm: Script,
    runner: Script,
    journal: str,
    result: str,
    history: bool,
    gate: str | None = None,
) -> str:
    """The SPEC argument of one side (JSON); with ``gate`` (a directory) the side waits there at
    ``EXECUTE_GATE`` before ``execute()``."""
    return json.dumps(
        {
            "strategy": strategy,
            "options": dict(options),
            "store_factory": store_factory,
            "algorithm": script_to_json(algorithm),
            "runner": script_to_json(runner),
            "journal": journal,
            "result": result,
            "history": history,
            "gate": gate,
        }
    )


async def _history(store: Any) -> list[dict[str, Any]]:
    """Every rollout of ``store`` with the status of each of its attempts and the worker that held it."""
    rollouts = []
    for rollout in await store.query_rollouts():
        attempts = await store.query_attempts(rollout.rollout_id)
        spans = await store.query_spans(rollout.rollout_id)
        rollouts.append(
            {
                "rollout_id": rollout.rollout_id,
                "status": str(rollout.status),
                "spans": len(spans),
                "attempts": [
                    {"attempt_id": a.attempt_id, "status": str(a.status), "worker_id": a.worker_id}
                    for a in attempts
                ],
            }
        )
    return rollouts


def _write(path: str, result: Mapping[str, Any]) -> None:
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as file:
        json.dump(result, file)
    os.replace(partial, path)  # the check never reads half a result


def main(argv: Sequence[str]) -> int:
    # As a program started from a terminal, however the kit was started (a background job of a
    # non-interactive shell inherits SIGINT ignored): D1's Ctrl+C must reach the side's execute().
    restore_default_signals()
    spec = json.loads(argv[0])
    target = make_target(spec["strategy"], spec["options"], store_factory=spec["store_factory"])
    result: dict[str, Any] = {"pid": os.getpid()}
    try:
        strategy = build_strategy(target)
    except BaseException as error:  # a side that refuses to start is an outcome too (D5: no credentials)
        result.update(outcome="refused", type=type(error).__qualname__, message=str(error))
        result.update(traceback=traceback.format_exc(), ended=time.monotonic(), repr="")
        _write(spec["result"], result)
        return 2
    result["repr"] = repr(strategy)
    store = build_store(target)
    algorithm = ScriptedAlgorithm(script_from_json(spec["algorithm"]), spec["journal"])
    runner = ScriptedRunner([script_from_json(spec["runner"])], spec["journal"])
    status = 0
    if spec.get("gate"):
        write_record(spec["journal"], "side", "ready", repr(strategy).split("(", 1)[0])
        while not gate_is_open(spec["gate"], EXECUTE_GATE):
            time.sleep(_GATE_POLL)
    # What the side's own time is measured from: imports and construction are done.
    write_record(spec["journal"], "side", "execute", repr(strategy).split("(", 1)[0])
    try:
        strategy.execute(algorithm, runner, store)
        result["outcome"] = "returned"
    except BaseException as error:
        result.update(outcome="raised", type=type(error).__qualname__, message=str(error))
        result["traceback"] = traceback.format_exc()
        status = 1
    result["ended"] = time.monotonic()
    if spec["history"]:
        result["history"] = asyncio.run(_history(store))
    _write(spec["result"], result)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
