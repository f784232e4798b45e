"""One store check (section T) in its sandbox: the body that runs there, and the verdict it comes back as.

A T check is a module-level ``async def body(run: StoreRun) -> None`` registered with
``@store_contract("T2")``: one item per access path (the situations of its catalogue entry), each calling
``run_store_check(ctx, body)``. The body runs in a fresh sandbox process (``sandbox.run_call``) that forks
the client processes the check asked for, builds the store with the user's factory, opens the situation's
access path and awaits the body on its own event loop. The body calls the store through ``run.store`` and
``run.clients``, and ends through ``run.fail`` (expected, observed, the figure against its bound) or by
returning (pass). A store call that raises where the contract expects none is a failure too, naming what the
check was doing. A hung body is killed with its whole process group and reported as a hang with every stack.
"""

from __future__ import annotations

import asyncio
import functools
import random
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from conformance.checks import CheckContext, contract
from conformance.journal import write_record
from conformance.scenarios import Target
from conformance.store_paths import (
    PATH_MODULES,
    AccessPath,
    Client,
    ClientOutcome,
    ClientProcesses,
    open_path,
    run_clients,
)

__all__ = [
    "Finding",
    "StoreBody",
    "StoreJob",
    "StoreRun",
    "run_store_check",
    "run_store_job",
    "store_contract",
]

StoreBody = Callable[["StoreRun"], Awaitable[None]]

_HANG_BOUND = 60.0  # seconds (scaled) before a store check is killed and reported as a hang


@dataclass(frozen=True)
class Finding:
    """Why a store check failed, as it crosses back from the sandbox."""

    expected: str
    observed: str
    figure: str = ""
    details: str = ""


class _Failed(Exception):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.observed)
        self.finding = finding


@dataclass(frozen=True)
class StoreJob:
    """Everything the sandbox needs to run one store check (picklable: the body goes by reference)."""

    contract_id: str
    path: str
    body: StoreBody
    target: Target
    capabilities: Mapping[str, Any]
    timeout_scale: float
    seed: int
    process_clients: int = 0
    # Kit-wide run options a check may read (T9: ``examples`` from --conformance-examples, ``replay``
    # from --conformance-replay); empty when not given.
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class StoreRun:
    """What a store check's body sees: the store through one access path, its clients, bounds, ``fail``.

    ``store`` is the path's handle for the body's own loop. ``clients`` runs client programs together
    (threads; processes where the path allows them, up to the ``process_clients`` the check asked for).
    ``random`` is seeded from the run's seed, the contract and the path. ``step`` labels what the body is
    doing, so an unexpected exception from the store says when it happened.
    """

    job: StoreJob
    path: AccessPath
    processes: ClientProcesses | None
    journal_path: str = ""
    current_step: str = "opening the access path"
    random: random.Random = field(init=False, repr=False)
    loop: asyncio.AbstractEventLoop = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.random = random.Random(f"{self.job.seed}:{self.job.contract_id}:{self.job.path}")
        self.loop = asyncio.get_running_loop()

    @property
    def store(self) -> Any:
        return self.path.store

    @property
    def capabilities(self) -> Mapping[str, Any]:
        return self.job.capabilities

    @property
    def scale(self) -> float:
        return self.job.timeout_scale

    @property
    def in_processes(self) -> bool:
        """Whether clients in other processes can reach the store on this path (and were forked)."""
        return self.path.processes and self.processes is not None and bool(self.processes.workers)

    def bound(self, seconds: float) -> float:
        """A time bound of the catalogue, scaled by ``--conformance-timeout-scale``."""
        return seconds * self.job.timeout_scale

    def step(self, text: str) -> None:
        """Label what the body does next: named by an unexpected error, and journaled, so a hang's
        report says where it hung (a stack dump cannot show a suspended coroutine)."""
        self.current_step = text
        if self.journal_path:
            write_record(self.journal_path, "check", "step", text)

    def spread(self, count: int) -> list[Literal["thread", "process"]]:
        """Where ``count`` clients run: up to the forked processes in processes (on a path that has
        them), the rest in threads; processes first, so a short list still crosses a process boundary."""
        available = len(self.processes.workers) if self.in_processes and self.processes else 0
        return ["process" if i < available else "thread" for i in range(count)]

    async def clients(self, clients: Sequence[Client]) -> list[ClientOutcome]:
        return await run_clients(self.path, clients, self.processes)

    def clients_from_thread(self, clients: Sequence[Client]) -> list[ClientOutcome]:
        """``clients`` for synchronous code in another thread of the sandbox (a hypothesis search run
        with ``asyncio.to_thread``): runs them on the body's loop and blocks until they are done."""
        return asyncio.run_coroutine_threadsafe(self.clients(clients), self.loop).result()

    def fail(self, *, expected: str, observed: str, figure: str = "", details: str = "") -> NoReturn:
        raise _Failed(Finding(expected, observed, figure, details))


def run_store_job(job: StoreJob, directory: str, journal_path: str) -> Finding | None:
    """The sandbox side: fork the client processes, build the store, open the path, run the body."""
    from conformance.target import build_store

    processes = None
    if job.process_clients and job.path in ("http", "ipc"):
        processes = ClientProcesses(job.process_clients, journal_path=journal_path, directory=directory)
    try:
        store = build_store(job.target)
        return asyncio.run(_run_body(job, store, processes, journal_path))
    finally:
        if processes is not None:
            processes.close()


async def _run_body(
    job: StoreJob, store: Any, processes: ClientProcesses | None, journal_path: str
) -> Finding | None:
    run: StoreRun | None = None
    try:
        async with open_path(job.path, store, thread_safe=bool(job.capabilities["thread_safe"])) as path:
            run = StoreRun(job, path, processes, journal_path)
            run.step("starting the check")
            await job.body(run)
    except _Failed as failed:
        return failed.finding
    except Exception as exc:
        step = run.current_step if run is not None else "opening the access path"
        return Finding(
            expected="every store call of the check returns or raises as the contract says",
            observed=f"while {step}: {type(exc).__module__}.{type(exc).__qualname__}: {exc}",
            details="  traceback:\n"
            + _indent("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))),
        )
    finally:
        close = getattr(store, "close", None)
        if callable(close):
            try:
                await close()
            except Exception as exc:  # the verdict stands; the report says the close failed
                print(f"closing the store failed: {type(exc).__name__}: {exc}")
    return None


def run_store_check(ctx: CheckContext, body: StoreBody, *, process_clients: int = 0) -> None:
    """The pytest side: run ``body`` on the situation's access path in a sandbox; its finding, a hang or
    a crash end the check as ``fail``."""
    from conformance.sandbox import JOURNAL, SANDBOX_DIR, run_call

    job = StoreJob(
        contract_id=ctx.contract_id,
        path=ctx.situation,
        body=body,
        target=ctx.target,
        capabilities=dict(ctx.capabilities),
        timeout_scale=ctx.timeout_scale,
        seed=ctx.seed,
        process_clients=process_clients,
        options=dict(ctx.kit_options),
    )
    result = run_call(
        run_store_job,
        (job, SANDBOX_DIR, JOURNAL),
        target=ctx.target,
        hang_bound=_HANG_BOUND,
        timeout_scale=ctx.timeout_scale,
        seed=ctx.seed,
        preload=(body.__module__, *PATH_MODULES[ctx.situation]),
    )
    if result.outcome == "hang":
        steps = [record.detail for record in result.journal if record.kind == "step"]
        where = f" while {steps[-1]}" if steps else ""
        ctx.fail(
            expected=f"the {ctx.title} check finishes within its {result.hang_bound:g} s hang bound",
            observed=f"it hung{where} on the {ctx.situation} path and was killed with its process group",
            figure=f"{result.duration:.1f} s > {result.hang_bound:g} s",
            details="  stacks of every thread of every process of the check:\n" + _indent(result.stacks),
        )
    if result.outcome == "crashed":
        ctx.fail(
            expected=f"the {ctx.title} check's sandbox process reports its result",
            observed=f"it died (exit status {result.exit_status})",
            details="  sandbox stderr:\n" + _indent(result.stderr[-4000:]),
        )
    if result.outcome == "raised" and result.exception is not None:
        info = result.exception
        ctx.fail(
            expected=f"the store can be built and checked on the {ctx.situation} path",
            observed=f"{info.type_name}: {info.message}",
            details="  traceback:\n" + _indent(info.traceback),
        )
    finding = result.value
    if isinstance(finding, Finding):
        ctx.fail(
            expected=finding.expected,
            observed=finding.observed,
            figure=finding.figure,
            details=finding.details,
        )


def store_contract(contract_id: str, *, process_clients: int = 0) -> Callable[[StoreBody], StoreBody]:
    """Register ``body`` as the check of ``contract_id`` in each of its situations: the access paths
    (``ACCESS_PATHS``) its catalogue entry declares, one item each.

    ``process_clients`` client processes are forked for it on the paths other processes can reach.
    The body is returned as it is: it stays module-level, so the sandbox can find it by name.
    """

    def register(body: StoreBody) -> StoreBody:
        @functools.wraps(body)
        def check(ctx: CheckContext) -> None:
            run_store_check(ctx, body, process_clients=process_clients)

        contract(contract_id)(check)
        return body

    return register


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.rstrip().splitlines())
