"""Tiny strategies for the engine's own tests (never shipped): one good, several deliberately bad.

``LoopStrategy`` runs every bundle as a task on one event loop in the calling thread: the algorithm's
return sets the event, errors and KeyboardInterrupt cancel the rest after a short grace and are re-raised.
The others each break one thing on purpose, so the tests can see the sandbox report it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from typing import Any


class _Event:
    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


class LoopStrategy:
    capability_manifest = {"uses_processes": False, "grace_seconds": 0.5, "can_cancel_blocking_code": False}
    capabilities = capability_manifest

    def __init__(self, n_runners: int = 1, grace: float = 0.5) -> None:
        self.n_runners = n_runners
        self.grace = grace

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        asyncio.run(self._main(algorithm, runner, store))

    async def _main(self, algorithm: Any, runner: Any, store: Any) -> None:
        event = _Event()
        algo = asyncio.ensure_future(algorithm(store, event))
        runners = [asyncio.ensure_future(runner(store, i, event)) for i in range(self.n_runners)]
        tasks = [algo, *runners]
        first_error: BaseException | None = None
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.cancelled():
                        continue
                    error = task.exception()
                    if error is not None and first_error is None:
                        first_error = error
                    if task is algo or error is not None:
                        event.set()
                if event.is_set() and pending:
                    _, pending = await asyncio.wait(pending, timeout=self.grace)
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    pending = set()
        except BaseException:
            event.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if first_error is not None:
            raise first_error


class LeakyThreadStrategy(LoopStrategy):
    """Leaves a thread named ``leaky-thread`` running after execute() returns."""

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        super().execute(algorithm, runner, store)
        threading.Thread(target=time.sleep, args=(60,), name="leaky-thread", daemon=True).start()


class RemoteLeakStrategy(LoopStrategy):
    """Reports, through the kit's ``remote_resources`` hook, a remote worker it never stops."""

    def remote_resources(self) -> list[str]:
        return ["cluster worker 'runner-0' on node n1 still running"]


class RemoteSettlingStrategy(LoopStrategy):
    """A remote worker that is reported alive for the first two looks, then gone (slow teardown)."""

    looks = 0

    def remote_resources(self) -> list[str]:
        type(self).looks += 1
        return ["cluster worker 'runner-0' stopping"] if type(self).looks <= 2 else []


class RemoteProbeFailsStrategy(LoopStrategy):
    """Its remote probe cannot look: that must be a finding, never a silent pass."""

    def remote_resources(self) -> list[str]:
        raise ConnectionError("cluster unreachable")


class ZombieStrategy(LoopStrategy):
    """Forks a child that exits at once and never reaps it: a zombie."""

    zombie_pid = 0

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        super().execute(algorithm, runner, store)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        while True:  # wait until the child is a zombie, so the snapshot cannot race its exit
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.001)


class StateChangingStrategy(LoopStrategy):
    """Installs its own SIGTERM handler and leaves it behind (R7)."""

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        import signal

        signal.signal(signal.SIGTERM, _on_term)
        super().execute(algorithm, runner, store)


def _on_term(*_: Any) -> None:
    pass


class HangingStrategy(LoopStrategy):
    """Never returns from execute(), parked in sync code."""

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        _park_forever()


def _park_forever() -> None:
    while True:
        time.sleep(0.5)


class ProcessStrategy:
    """Each runner in its own forked process; the algorithm in the calling thread. Minimal, for F tests."""

    capability_manifest = {"uses_processes": True}

    def __init__(self, n_runners: int = 1) -> None:
        self.n_runners = n_runners

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        ctx = multiprocessing.get_context("fork")
        flag = ctx.Event()
        procs = [
            ctx.Process(target=_run_runner, args=(runner, store, i, flag)) for i in range(self.n_runners)
        ]
        for proc in procs:
            proc.start()
        try:
            asyncio.run(algorithm(store, flag))
            flag.set()
            for proc in procs:
                proc.join()
            dead = [proc for proc in procs if proc.exitcode != 0]
            if dead:
                raise RuntimeError(f"worker pid {dead[0].pid} exited with {dead[0].exitcode}")
        finally:
            flag.set()
            for proc in procs:
                proc.join(2)
                if proc.is_alive():
                    proc.kill()
                    proc.join()


def _run_runner(runner: Any, store: Any, worker_id: int, flag: Any) -> None:
    asyncio.run(runner(store, worker_id, flag))


class NullStore:
    """A store with no state, for scenarios that do not touch the store."""


def sandbox_facts(tag: str) -> dict[str, Any]:
    """A ``run_call`` target: where it ran."""
    import os
    import tempfile

    return {"tag": tag, "pid": os.getpid(), "sid": os.getsid(0), "tmp": tempfile.gettempdir()}


def raise_value_error(message: str) -> None:
    """A ``run_call`` target that raises."""
    raise ValueError(message)


def return_a_lock() -> Any:
    """A ``run_call`` target whose value cannot cross the sandbox boundary."""
    import threading

    return threading.Lock()


class _FakeCluster:
    """A cluster client library in miniature: one module-level connection per process, as Ray's."""

    address: str | None = None


class _FakeConnection:
    def describe(self) -> str:
        address = _FakeCluster.address
        return f"connected to {address}" if address is not None else "not connected"


class CallerConnectedStrategy(LoopStrategy):
    """Runs against a cluster connection its caller opened (the kit's ``caller_connection`` hook)."""

    def caller_connection(self) -> _FakeConnection:
        _FakeCluster.address = "fake-cluster:6379"
        return _FakeConnection()


class ConnectionClosingStrategy(CallerConnectedStrategy):
    """Closes the caller's cluster connection after its run (as a ``ray.shutdown()`` not its own)."""

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        try:
            super().execute(algorithm, runner, store)
        finally:
            _FakeCluster.address = None


class ConnectionFailsToDescribeStrategy(CallerConnectedStrategy):
    """Its connection cannot say what it is after the run: a finding, never a silent pass."""

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        super().execute(algorithm, runner, store)
        _FakeCluster.address = None
        _FakeConnection.describe = _describe_fails  # type: ignore[method-assign]


def _describe_fails(self: Any) -> str:
    raise ConnectionError("cluster unreachable")
