"""Tiny strategies for the plugin's own tests (copied into each ``pytester`` project, never shipped).

``Strict``, ``Lax`` and ``Misspelled`` are only constructed, never executed: those tests select the
in-process G1/G2 checks, which need no sandbox. ``Strict`` validates like a real strategy; ``Lax``
accepts anything (G2 fails for it); ``Misspelled`` declares a capability with a typo. ``Loop`` really
runs bundles (one event loop, one thread) and keeps the S contracts; ``PrivateStore`` breaks S3;
``OneRunner`` starts one runner whatever ``n_runners`` says (breaks L1, a prerequisite); ``Moody``
validates ``n_runners=0`` every other time (G2 flaky across repeats); ``BadHostOptions`` declares a
section D test option (``host_test_options``) that it refuses. ``WithService`` declares a session
service (``service``: a real child process) and journals to ``$PLUGIN_SERVICE_LOG`` each build with the
environment the service exports; ``WithFailingService`` declares one that fails to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any


class Strict:
    capability_manifest = {"uses_processes": False, "can_cancel_blocking_code": False}

    def __init__(self, n_runners: int = 1, grace_seconds: float = 1.0) -> None:
        if isinstance(n_runners, bool) or not isinstance(n_runners, int) or n_runners < 1:
            raise ValueError(f"n_runners must be a positive int, got {n_runners!r}")
        if (
            isinstance(grace_seconds, bool)
            or not isinstance(grace_seconds, (int, float))
            or grace_seconds < 0
        ):
            raise ValueError(f"grace_seconds must be a number >= 0, got {grace_seconds!r}")
        self.n_runners = n_runners
        self.grace_seconds = grace_seconds

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        raise NotImplementedError("the plugin tests never execute this strategy")


class Lax(Strict):
    def __init__(self, n_runners: Any = 1) -> None:
        self.n_runners = n_runners


class Moody(Strict):
    zero_attempts = 0

    def __init__(self, n_runners: Any = 1, grace_seconds: float = 1.0) -> None:
        if n_runners == 0:
            type(self).zero_attempts += 1
            if type(self).zero_attempts % 2 == 0:
                self.n_runners = n_runners  # accepted every other time
                return
        super().__init__(n_runners, grace_seconds)


class Misspelled(Strict):
    capability_manifest = {"uses_process": False}


class BadHostOptions(Strict):
    capability_manifest = {**Strict.capability_manifest, "host_test_options": {"grace_seconds": -1.0}}


def not_a_class() -> None:
    """A callable that is not a strategy class."""


class _Event:
    """The stop event for bundles of one thread (the protocol's four methods, nothing more)."""

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


class Loop:
    """Runs every bundle as a task of one event loop in the calling thread; enough for the S contracts.

    The algorithm's return sets the event; a bundle error sets it, cancels the rest and is re-raised.
    """

    capability_manifest = {
        "uses_processes": False,
        "can_cancel_blocking_code": False,
        "grace_seconds": 1.0,
    }

    def __init__(self, n_runners: int = 1, managed_store: bool = True) -> None:
        if isinstance(n_runners, bool) or not isinstance(n_runners, int) or n_runners < 1:
            raise ValueError(f"n_runners must be a positive int, got {n_runners!r}")
        self.n_runners = n_runners
        self.managed_store = managed_store  # one thread: the caller's store is safe either way

    def store_for_bundles(self, store: Any) -> Any:
        return store

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        asyncio.run(self._main(algorithm, runner, self.store_for_bundles(store)))

    async def _main(self, algorithm: Any, runner: Any, store: Any) -> None:
        event = _Event()

        async def run_algorithm() -> None:
            try:
                await algorithm(store, event)
            finally:
                event.set()

        tasks = [asyncio.ensure_future(run_algorithm())]
        tasks += [asyncio.ensure_future(runner(store, i, event)) for i in range(self.n_runners)]
        try:
            done, pending = await asyncio.wait(tasks, timeout=30.0, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            await asyncio.gather(*pending)
        finally:
            event.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class PrivateStore(Loop):
    """Broken on purpose: hands the bundles a private store, so the caller's store sees no write (S3) and
    bundles never get the caller's object (S6)."""

    def store_for_bundles(self, store: Any) -> Any:
        return type(store)()


class OneRunner(Loop):
    """Broken on purpose: starts a single runner whatever ``n_runners`` says (L1)."""

    def execute(self, algorithm: Any, runner: Any, store: Any) -> None:
        asked, self.n_runners = self.n_runners, 1
        try:
            super().execute(algorithm, runner, store)
        finally:
            self.n_runners = asked


@contextlib.contextmanager
def service() -> Iterator[dict[str, str]]:
    """A session service that is a real process: started once, stopped (and journaled) at the end."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.environ["PLUGIN_SERVICE_LOG"], "a", encoding="utf-8") as log:
        log.write(f"started {child.pid} by {os.getpid()}\n")
    try:
        yield {"PLUGIN_SERVICE_PID": str(child.pid)}
    finally:
        child.kill()
        child.wait()
        with open(os.environ["PLUGIN_SERVICE_LOG"], "a", encoding="utf-8") as log:
            log.write(f"stopped {child.pid}\n")


@contextlib.contextmanager
def failing_service() -> Iterator[dict[str, str]]:
    raise OSError("no cluster for you")
    yield {}


class WithService(Strict):
    conformance_session_service = "plugin_strategies:service"

    def __init__(self, n_runners: int = 1, grace_seconds: float = 1.0) -> None:
        with open(os.environ["PLUGIN_SERVICE_LOG"], "a", encoding="utf-8") as log:
            log.write(f"built by {os.getpid()} with {os.environ.get('PLUGIN_SERVICE_PID')}\n")
        super().__init__(n_runners, grace_seconds)


class WithFailingService(Strict):
    conformance_session_service = "plugin_strategies:failing_service"


class WithMalformedService(Strict):
    conformance_session_service = "plugin_strategies.service"
