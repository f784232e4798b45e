"""Check for T9 history: hypothesis-drawn concurrent workloads, recorded and checked as histories.

One item per access path. Every workload (``conformance.store_workload``) runs against a fresh store
built by the user's factory and reached through the item's path (a server of its own on ``http`` and
``ipc``): the set-up and the final audit from the check's loop, the client programs concurrently, in
threads and, on ``http`` and ipc, the first of them in a client process. The history of each is checked
by ``conformance.history`` against T1-T7 with no knowledge of the store's internals. A failing workload
is shrunk, re-run ``RERUNS`` times (one that never fails again is reported as timing-dependent, still a
failure), and printed with its history and the one command that replays it on the same path
(``--conformance-replay``).

Profiles: the CI profile stops generating after ``CI_BUDGET`` seconds or ``CI_EXAMPLES`` workloads per
path, whichever comes first (a server start per workload makes ``http`` the slowest path);
``--conformance-examples N`` runs N workloads per path with no time budget.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Sequence

from conformance.exploration import describe_reproduction
from conformance.history import Event
from conformance.scenarios import Target
from conformance.store_job import StoreRun, store_contract
from conformance.store_paths import Client, open_path, run_clients
from conformance.store_workload import (
    ClientProgram,
    Workload,
    WorkloadExploration,
    WorkloadFinding,
    WorkloadRun,
    encode,
    explore,
    record_workload,
    replay,
    run_client,
)

__all__ = [
    "CI_BUDGET",
    "CI_EXAMPLES",
    "PROCESS_CLIENTS",
    "RERUNS",
    "SHRINK_BUDGET",
    "SHRINK_RUNS",
    "replay_command",
]

CI_EXAMPLES = 150
CI_BUDGET = 5.0  # seconds of generation per access path; shrinking and re-runs come on top on failure
SHRINK_RUNS = 100
SHRINK_BUDGET = 20.0  # seconds of shrinking at most; the smallest failure so far is kept
RERUNS = 3
PROCESS_CLIENTS = 1  # client processes on http and ipc: the first client of each workload runs there


def replay_command(target: Target, path: str, encoding: str, *, timeout_scale: float = 1.0) -> str:
    """The one shell command that replays the encoded workload against the same store, on ``path``."""
    parts = ["pytest", f"--store={target.store_factory}"]
    parts += [f"--store-option={key}={json.dumps(value)}" for key, value in target.store_options.items()]
    if timeout_scale != 1.0:
        parts.append(f"--conformance-timeout-scale={timeout_scale}")
    parts += ["--conformance-only", "--conformance-replay", encoding, "-k", f"T9 and {path}"]
    return " ".join(shlex.quote(part) for part in parts)


async def _client(store: object, program: ClientProgram) -> list[Event]:
    """A client program in ``store_paths``' calling convention (module-level: it runs in processes)."""
    return await run_client(program, store)  # type: ignore[arg-type]


async def _record(run: StoreRun, workload: Workload, number: int) -> WorkloadRun:
    """One workload against a fresh store on the run's access path, its history checked."""
    from conformance.target import build_store

    run.step(f"workload {number} on a fresh store: {encode(workload)}")
    store = build_store(run.job.target)
    try:
        thread_safe = bool(run.capabilities["thread_safe"])
        async with open_path(run.job.path, store, thread_safe=thread_safe) as path:

            async def clients(programs: Sequence[ClientProgram]) -> list[list[Event]]:
                where = run.spread(len(programs))
                programs_at = zip(programs, where, strict=True)
                outcomes = await run_clients(
                    path, [Client(_client, (p,), w) for p, w in programs_at], run.processes
                )
                broken = [o for o in outcomes if o.error is not None]
                if broken:  # run_client records every store error: this is the client machinery's
                    first = broken[0]
                    raise RuntimeError(f"T9 client {first.index} ({first.where}) broke:\n{first.traceback}")
                return [list(o.value) for o in outcomes]

            return await record_workload(workload, path.store, clients)
    finally:
        close = getattr(store, "close", None)
        if callable(close):
            await close()


def _fail(run: StoreRun, finding: WorkloadFinding, exploration: WorkloadExploration | None) -> None:
    broken = ", ".join(finding.contracts)
    searched = ""
    if exploration is not None:
        searched = (
            f"found after {exploration.examples} workload(s) of the {exploration.profile} profile, shrunk "
            f"in {exploration.shrink_runs} run(s), {exploration.seconds:.1f} s; "
        )
    run.fail(
        expected="every history of concurrent clients is one a store keeping T1-T7 could have produced",
        observed=f"the minimal workload's history breaks {broken}: {finding.violations[0]}"
        + (f" (and {len(finding.violations) - 1} more)" if len(finding.violations) > 1 else ""),
        figure=searched + describe_reproduction(finding.reproduced, finding.reruns, "workload"),
        details="\n".join(f"  {line}" for line in finding.report().splitlines()),
    )


@store_contract("T9", process_clients=PROCESS_CLIENTS)
async def _history(run: StoreRun) -> None:
    """T9: drawn workloads of concurrent clients, each history checked against T1-T7; a failure shrunk."""
    numbered = iter(range(1, 1 << 62))

    def run_one(workload: Workload) -> WorkloadRun:
        # The search runs in a worker thread; each workload runs on the check's own loop, as T1-T8 do.
        return asyncio.run_coroutine_threadsafe(_record(run, workload, next(numbered)), run.loop).result()

    def command(encoding: str) -> str:
        return replay_command(run.job.target, run.job.path, encoding, timeout_scale=run.scale)

    replayed = run.job.options.get("replay")
    if replayed is not None:
        finding = await asyncio.to_thread(
            replay, replayed, runner=run_one, replay_command=command, runs=RERUNS
        )
        if finding is not None:
            _fail(run, finding, None)
        return
    examples = run.job.options.get("examples")
    exploration = await asyncio.to_thread(
        explore,
        runner=run_one,
        seed=run.job.seed,
        max_examples=examples or CI_EXAMPLES,
        budget=None if examples else CI_BUDGET,
        thorough=bool(examples),
        replay_command=command,
        reruns=RERUNS,
        shrink_runs=SHRINK_RUNS,
        shrink_budget=SHRINK_BUDGET,
    )
    if exploration.finding is not None:
        _fail(run, exploration.finding, exploration)
