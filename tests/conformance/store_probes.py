"""What the kit's own store-suite tests run in the sandbox (module-level: the sandbox finds them by name).

``probe_path`` opens one access path on a reference store with client processes forked first, runs
client programs through it and reports what each saw; the store classes are small variations for the
plugin and capability tests.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from agentlightning.store.memory import InMemoryLightningStore
from conformance.store_job import StoreRun
from conformance.store_paths import Client, ClientProcesses, open_path, run_clients


class NotThreadSafeStore(InMemoryLightningStore):
    """The reference store, declaring (by its attribute) that it must not be called from two threads."""

    thread_safe = False


class DurableManifestStore(InMemoryLightningStore):
    """Declares its capabilities as a manifest."""

    capability_manifest = {"durable": True, "thread_safe": True}


class MisspelledManifestStore(InMemoryLightningStore):
    capability_manifest = {"durabel": False}


class OptionStore(InMemoryLightningStore):
    """Takes a factory keyword, to check --store-option."""

    def __init__(self, *, label: str) -> None:
        if not label:
            raise ValueError("label must be a non-empty string")
        super().__init__()
        self.label = label


def not_a_store() -> object:
    return object()


async def identify(store: Any, tag: str) -> dict[str, Any]:
    """A client: enqueue one rollout through the path and say where it ran."""
    rollout = await store.enqueue_rollout({"tag": tag})
    return {
        "rollout_id": rollout.rollout_id,
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "handle": type(store).__name__,
    }


async def refuse(store: Any) -> None:
    """A client that fails the way a store refusal does."""
    await store.get_latest_resources()
    raise ValueError("refused by the client program")


def probe_path(path: str, directory: str, journal: str, thread_safe: bool) -> dict[str, Any]:
    """Through ``path``: two thread clients and (where possible) two process clients enqueue at once;
    then one client raises. Returns their outcomes and the rollouts the store holds."""
    processes = ClientProcesses(2, journal_path=journal, directory=directory)
    store = InMemoryLightningStore() if thread_safe else NotThreadSafeStore()

    async def main() -> dict[str, Any]:
        async with open_path(path, store, thread_safe=thread_safe) as opened:
            where = ["thread", "thread", *(["process", "process"] if opened.processes else [])]
            clients = [Client(identify, (f"c{i}",), w) for i, w in enumerate(where)]  # type: ignore[arg-type]
            outcomes = await run_clients(opened, clients, processes)
            (failed,) = await run_clients(opened, [Client(refuse)], processes)
            stored = [r.rollout_id for r in await opened.store.query_rollouts()]
            refused_process = None
            if not opened.processes:
                try:
                    await run_clients(opened, [Client(refuse, (), "process")], processes)
                except ValueError as error:
                    refused_process = str(error)
            return {
                "outcomes": [(o.where, o.pid, o.thread, o.value, o.error) for o in outcomes],
                "failed": (failed.where, type(failed.error).__name__, str(failed.error), failed.traceback),
                "stored": stored,
                "refused_process": refused_process,
                "sandbox_pid": os.getpid(),
            }

    try:
        return asyncio.run(main())
    finally:
        processes.close()


async def hangs_in_a_client(run: StoreRun) -> None:
    """A store-check body whose client never returns: the sandbox must report a hang with stacks."""
    run.step("running a client that never returns")
    await run.clients([Client(wait_forever)])


async def wait_forever(store: Any) -> None:
    await asyncio.Event().wait()


async def fails_with_a_finding(run: StoreRun) -> None:
    run.step("checking nothing in particular")
    await run.store.enqueue_rollout({"probe": 1})
    run.fail(expected="the probe to fail", observed="it failed", figure="1 of 1")


async def store_raises(run: StoreRun) -> None:
    run.step("asking for an unknown rollout's attempt")
    await run.store.update_attempt("no-such-rollout", "latest", status="running")


async def clients_from_a_thread(run: StoreRun) -> None:
    """A body whose synchronous helper, in another thread, runs clients through ``clients_from_thread``."""
    run.step("running clients from a worker thread")

    def search() -> list[Any]:
        outcomes = run.clients_from_thread([Client(identify, ("sync",), where) for where in run.spread(3)])
        return [(o.where, o.value["rollout_id"]) for o in outcomes]

    found = await asyncio.to_thread(search)
    stored = sorted(r.rollout_id for r in await run.store.query_rollouts())
    wheres = sorted(where for where, _ in found)
    run.fail(expected="nothing", observed=f"{wheres} {sorted(rid for _, rid in found) == stored}")
