"""``shm``: the algorithm and the runners as threads of one process, sharing one store and one event.

Each bundle runs on its own thread with an event loop of its own (created and closed here; never left
as a thread's current loop). One side runs on the calling thread - the main thread in a normal
program - so that Ctrl+C lands in that side's code: the algorithm by default, or the single runner with
``main_thread="runner"``. The machinery lives in ``threads.py`` (bundles, SIGINT, bounded join) and
``failures.py`` (which failure is raised); this module configures it.

Stop model:

- Algorithm returns: the event is set (L2); runners that watch it return, the others are cancelled
  after ``graceful_delay`` seconds (``CancelledError`` at their ``await``; their ``finally`` runs, L6);
  ``execute()`` returns ``None``. This holds whichever side runs on the main thread.
- A runner returns: nothing else happens (L3); the others keep going.
- Any bundle sets the event: the same stop as above, waiters wake at once (no polling tick, L4).
- A bundle raises (any type, ``SystemExit`` and ``KeyboardInterrupt`` too): the event is set, everyone
  stops as above, and ``execute()`` raises the first failure with its own type and traceback (E1, E2, E6,
  K1, K2); later ones are attached as notes (3.11+) or logged (E3). ``KeyboardInterrupt`` and other
  non-``Exception`` exceptions outrank ordinary errors. Cleanup errors never mask a failure (E4).
- Ctrl+C (SIGINT, only ever delivered to the main thread): if it interrupts bundle code it is raised
  there, as in any Python program; if it interrupts this strategy's own code or an idle loop it is
  deferred, so shutdown is never torn. Either way the event is set, everyone stops as above, and
  ``execute()`` raises ``KeyboardInterrupt`` (K1-K3).
- Second Ctrl+C: every bundle is cancelled at once, grace skipped (K5). Third: nothing is waited for.
- A bundle stuck in blocking code (no ``await``) cannot be cancelled in a thread: ``execute()`` returns
  ``graceful_delay + join_timeout`` seconds after the stop anyway, logs the thread by name and leaves it as
  a daemon thread (L7, declared as ``can_cancel_blocking_code: False``). On the main thread only a
  SIGINT the main thread receives (a terminal's Ctrl+C does) interrupts such code.

Claims of a runner that is gone (T3). Each runner gets a store of its own (``store.claims``'s
``ClaimTrackingStore`` around the shared one) that records the attempts it claims. When a runner's bundle
ends - returns, raises, is cancelled - the attempts it still holds are marked ``unresponsive``, so each
rollout's ``RolloutConfig`` requeues or fails it while the others run on; after the group has stopped, the
claims of a runner left behind in blocking code (L7) are settled the same way, before ``execute()``
returns or raises. The runner's store also sends heartbeats for the attempts it holds (a third of their
``unresponsive_seconds`` apart, from the runner's loop), so a live but slow runner is not given up on by
the store's own window. With ``managed_store=False`` runners get the caller's object itself: nothing sees
their claims, so none of this applies (the store's unresponsive window still does).

What is lost when the process dies: with an in-memory store, everything - the queue, every rollout,
attempt, span and resource lives in it. A durable store, which would survive it, is planned but does not
exist yet.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from agentlightning.execution.base import AlgorithmBundle, ExecutionStrategy, RunnerBundle
from agentlightning.execution.events import ThreadingEvent
from agentlightning.execution.failures import FailureCollector
from agentlightning.execution.threads import BundleGroup, BundleRun, refuse_running_loop, run_on_private_loop
from agentlightning.store.base import LightningStore
from agentlightning.store.claims import ClaimLedger, ClaimTrackingStore

__all__ = ["SharedMemoryExecutionStrategy"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

_log = logging.getLogger(__name__)

_MAIN_THREAD_CHOICES = ("algorithm", "runner")


class SharedMemoryExecutionStrategy(ExecutionStrategy):
    """Threads in one process; see the module docstring for the stop model.

    ``n_runners``: runner bundles (>= 1). ``main_thread``: which side runs on the calling thread,
    ``"algorithm"`` or ``"runner"`` (only with one runner). ``graceful_delay``: seconds a bundle may take
    to return once the event is set before it is cancelled. ``join_timeout``: seconds, past the grace, to
    wait for a thread stuck in blocking code before leaving it behind. ``managed_store``: hand bundles a
    ``ThreadedLightningStore`` around the caller's store (``True``), or the caller's object itself
    (``False``, for a store that is already thread-safe); ``None`` reads ``AGL_MANAGED_STORE`` (default on).
    """

    alias: ClassVar[str] = "shm"
    capability_manifest: ClassVar[dict[str, Any]] = {
        "uses_processes": False,
        "shares_caller_store": True,
        "can_cancel_blocking_code": False,
        "supports_start_methods": (),
        "supports_unmanaged_store": True,
        "runs_on_many_hosts": False,  # threads of one process: D1-D5 are n/a
    }

    def __init__(
        self,
        n_runners: int = 1,
        main_thread: Literal["algorithm", "runner"] = "algorithm",
        graceful_delay: float = 5.0,
        join_timeout: float = 5.0,
        managed_store: bool | None = None,
    ) -> None:
        if isinstance(n_runners, bool) or not isinstance(n_runners, int) or n_runners < 1:
            raise ValueError(f"n_runners must be an int >= 1, got {n_runners!r}")
        if main_thread not in _MAIN_THREAD_CHOICES:
            raise ValueError(f"main_thread must be 'algorithm' or 'runner', got {main_thread!r}")
        if main_thread == "runner" and n_runners != 1:
            raise ValueError(
                f"main_thread='runner' needs n_runners=1 (one runner can own the main thread), "
                f"got n_runners={n_runners!r}"
            )
        managed_store = _managed_store_setting(managed_store)
        self.n_runners = n_runners
        self.main_thread: Literal["algorithm", "runner"] = main_thread
        self.graceful_delay = _seconds("graceful_delay", graceful_delay, allow_zero=True)
        self.join_timeout = _seconds("join_timeout", join_timeout, allow_zero=False)
        self.managed_store = managed_store

    @property
    def capabilities(self) -> dict[str, Any]:
        return {
            **self.capability_manifest,
            "grace_seconds": self.graceful_delay,
            "join_seconds": self.join_timeout,
        }

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        """Run the algorithm and ``n_runners`` runners to completion; raise as the stop model says."""
        refuse_running_loop()
        event = ThreadingEvent()
        failures = FailureCollector(_log)
        bundle_store, close_store = self._bundle_store(store)
        claims = ClaimLedger() if self.managed_store else None
        try:
            runs = self._runs(algorithm, runner, bundle_store, event, failures, claims)
            main = runs[0] if self.main_thread == "algorithm" else runs[1]
            others = [run for run in runs if run is not main]
            BundleGroup(
                main,
                others,
                event=event,
                failures=failures,
                grace=self.graceful_delay,
                join_timeout=self.join_timeout,
            ).run()
        except BaseException as exc:  # a caller-installed SIGINT handler raised, or our machinery failed
            event.set()
            failures.record(exc, "execute()")
        finally:
            if claims is not None:
                # Left by runners cancelled half-way through giving them up, or stuck in blocking code.
                with failures.cleanup("marking the attempts of runners that are gone unresponsive"):
                    run_on_private_loop(claims.give_up_all(bundle_store, "has stopped"))
            if close_store is not None:
                with failures.cleanup("closing the managed store"):
                    close_store()
        failures.raise_first()

    def _bundle_store(self, store: LightningStore) -> tuple[LightningStore, Callable[[], None] | None]:
        if not self.managed_store:
            if not getattr(store, "thread_safe", False):
                _log.warning(
                    "managed_store=False with %s, which does not declare thread_safe: %d threads share it",
                    type(store).__qualname__,
                    self.n_runners + 1,
                )
            return store, None
        from agentlightning.store.threaded import ThreadedLightningStore

        wrapped = ThreadedLightningStore(store)
        return wrapped, wrapped.close_sync

    def _runs(
        self,
        algorithm: AlgorithmBundle,
        runner: RunnerBundle,
        store: LightningStore,
        event: ThreadingEvent,
        failures: FailureCollector,
        claims: ClaimLedger | None,
    ) -> list[BundleRun]:
        common: dict[str, Any] = {
            "event": event,
            "failures": failures,
            "grace": self.graceful_delay,
            "teardown_timeout": self.join_timeout,
        }
        runs = [
            BundleRun(
                "algorithm",
                lambda: algorithm(store, event),
                sets_event_on_return=True,
                thread_name="agl-shm-algorithm",
                **common,
            )
        ]
        for worker_id in range(self.n_runners):
            name = f"runner {worker_id}"
            # Each runner's own view of the store records its claims; once its bundle has ended, whatever
            # it still holds nobody will finish, so they are given up (T3).
            own = (
                None
                if claims is None
                else ClaimTrackingStore(store, ledger=claims, client=name, heartbeats=True)
            )
            runs.append(
                BundleRun(
                    name,
                    _runner_call(runner, store if own is None else own, worker_id, event),
                    sets_event_on_return=False,
                    thread_name=f"agl-shm-runner-{worker_id}",
                    after=None if own is None else own.give_up,
                    **common,
                )
            )
        return runs

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_runners={self.n_runners}, main_thread={self.main_thread!r}, "
            f"graceful_delay={self.graceful_delay}, join_timeout={self.join_timeout}, "
            f"managed_store={self.managed_store})"
        )


def _runner_call(runner: RunnerBundle, store: LightningStore, worker_id: int, event: ThreadingEvent) -> Any:
    return lambda: runner(store, worker_id, event)


def _seconds(name: str, value: Any, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound} seconds, got {value!r}")
    return float(value)


def _managed_store_setting(value: object) -> bool:
    from agentlightning.env import managed_store_setting

    return managed_store_setting(value)
