"""The ``shm`` strategy against contracts L, K, E, R, S and G, each test named by its contract ID.

Bundles synchronise with ``threading.Event``s and the stop event, never with bare sleeps; time bounds are
generous hang bounds. SIGINT scenarios run in a child process (``shm_child.py``) so that no signal ever
reaches pytest or an xdist worker.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from claims_bundles import (
    RETRYING,
    ClaimThenDie,
    assert_given_up,
    check_given_up,
    check_kept_alive,
    read_journal,
)

from agentlightning.execution.events import ExecutionEvent, ThreadingEvent, wait_async
from agentlightning.execution.shared_memory import SharedMemoryExecutionStrategy
from agentlightning.store.claims import ClaimTrackingStore
from agentlightning.store.memory import InMemoryLightningStore

HANG = 20.0  # hang bound for anything that should happen "at once"
CHILD = Path(__file__).with_name("shm_child.py")


def shm(**kwargs: Any) -> SharedMemoryExecutionStrategy:
    kwargs.setdefault("managed_store", False)
    kwargs.setdefault("graceful_delay", 10.0)
    kwargs.setdefault("join_timeout", 10.0)
    return SharedMemoryExecutionStrategy(**kwargs)


@pytest.fixture(autouse=True)
def _no_thread_left() -> Iterator[None]:
    """R1 for every test: no thread started by execute() outlives it (unless a test releases its own)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left:
            return
        left[0].join(0.05)
    pytest.fail(f"threads left behind: {[t.name for t in left]}")


async def until_stopped(event: ExecutionEvent) -> None:
    assert await wait_async(event, HANG), "the stop event was never set"


# -- L: lifecycle --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_runners", [1, 3])
def test_L1_bundles_called_once_with_distinct_worker_ids(n_runners: int) -> None:
    calls: list[tuple[str, Any, Any, Any]] = []
    lock = threading.Lock()
    all_runners = threading.Barrier(n_runners + 1)

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        with lock:
            calls.append(("algorithm", None, store, event))
        await asyncio.to_thread(all_runners.wait, HANG)

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        assert threading.current_thread() is not threading.main_thread()
        with lock:
            calls.append(("runner", worker_id, store, event))
        await asyncio.to_thread(all_runners.wait, HANG)
        await until_stopped(event)

    store = InMemoryLightningStore()
    assert shm(n_runners=n_runners).execute(algorithm, runner, store) is None
    assert [c[0] for c in calls].count("algorithm") == 1
    assert sorted(c[1] for c in calls if c[0] == "runner") == list(range(n_runners))
    assert all(c[2] is store for c in calls)
    events = {id(c[3]) for c in calls}
    assert len(events) == 1 and isinstance(calls[0][3], ThreadingEvent)


@pytest.mark.parametrize("main_thread", ["algorithm", "runner"])
def test_L2_algorithm_return_sets_event_and_stops_runners(main_thread: str) -> None:
    seen: list[str] = []
    runner_running = threading.Event()
    on_main: dict[str, bool] = {}

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        on_main["algorithm"] = threading.current_thread() is threading.main_thread()
        await asyncio.to_thread(runner_running.wait, HANG)

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        on_main["runner"] = threading.current_thread() is threading.main_thread()
        runner_running.set()
        await until_stopped(event)
        seen.append(f"runner {worker_id} saw stop")

    shm(main_thread=main_thread).execute(algorithm, runner, InMemoryLightningStore())
    assert seen == ["runner 0 saw stop"]
    assert on_main == {"algorithm": main_thread == "algorithm", "runner": main_thread == "runner"}


def test_L2_runner_on_main_thread_ignoring_event_does_not_hang_after_algorithm_returns() -> None:
    """The case where a widely used implementation hangs forever: main_thread='runner', algorithm first."""
    journal: list[str] = []
    runner_running = threading.Event()

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        await asyncio.to_thread(runner_running.wait, HANG)
        journal.append("algorithm returns")

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        runner_running.set()
        try:
            await asyncio.sleep(HANG * 10)  # never looks at the event
        except asyncio.CancelledError:
            journal.append("runner cancelled")
            raise

    start = time.monotonic()
    shm(main_thread="runner", graceful_delay=0.2).execute(algorithm, runner, InMemoryLightningStore())
    assert journal == ["algorithm returns", "runner cancelled"]
    assert time.monotonic() - start < HANG


@pytest.mark.parametrize("main_thread", ["algorithm", "runner"])
def test_L3_runner_return_does_not_set_event(main_thread: str) -> None:
    n_runners = 2 if main_thread == "algorithm" else 1
    first_runner_returned = threading.Event()
    journal: list[str] = []

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        await asyncio.to_thread(first_runner_returned.wait, HANG)
        journal.append(f"algorithm sees event set={event.is_set()}")

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        if worker_id == 0:
            journal.append("runner 0 returns")
            first_runner_returned.set()
            return
        await until_stopped(event)
        journal.append("runner 1 saw stop")

    shm(n_runners=n_runners, main_thread=main_thread).execute(algorithm, runner, InMemoryLightningStore())
    expected = ["runner 0 returns", "algorithm sees event set=False"]
    if n_runners == 2:
        expected.append("runner 1 saw stop")
    assert journal == expected


@pytest.mark.parametrize("setter", ["algorithm", "runner 2"])
def test_L4_event_set_by_any_bundle_wakes_every_other(setter: str) -> None:
    n_runners = 3
    ready = threading.Barrier(n_runners + 1)
    woke: dict[str, float] = {}
    set_at: list[float] = []

    async def watch(who: str, event: ExecutionEvent) -> None:
        await asyncio.to_thread(ready.wait, HANG)
        if who == setter:
            set_at.append(time.monotonic())
            event.set()
            return
        await until_stopped(event)
        woke[who] = time.monotonic()

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        await watch("algorithm", event)

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        await watch(f"runner {worker_id}", event)

    shm(n_runners=n_runners).execute(algorithm, runner, InMemoryLightningStore())
    assert set(woke) == {"algorithm", "runner 0", "runner 1", "runner 2"} - {setter}
    assert max(woke.values()) - set_at[0] < 0.5  # L4's own bound, event-driven wake-ups are ~ms


@pytest.mark.parametrize("main_thread", ["algorithm", "runner"])
def test_L6_bundle_ignoring_event_cancelled_after_grace_finally_runs(main_thread: str) -> None:
    journal: list[str] = []
    runner_running = threading.Event()

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        await asyncio.to_thread(runner_running.wait, HANG)

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        runner_running.set()
        try:
            await asyncio.sleep(HANG * 10)
        except asyncio.CancelledError:
            journal.append(f"cancelled, event set={event.is_set()}")
            raise
        finally:
            journal.append("finally ran")

    grace = 0.3
    start = time.monotonic()
    shm(main_thread=main_thread, graceful_delay=grace).execute(algorithm, runner, InMemoryLightningStore())
    elapsed = time.monotonic() - start
    assert journal == ["cancelled, event set=True", "finally ran"]
    assert grace <= elapsed < grace + HANG


def test_L6_cancellation_by_the_strategy_is_not_an_error() -> None:
    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        return

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        await asyncio.Event().wait()

    shm(n_runners=2, graceful_delay=0.0).execute(algorithm, runner, InMemoryLightningStore())


def test_L7_blocking_runner_left_behind_logged_by_name(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    blocked = threading.Event()
    threads: list[threading.Thread] = []

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        await asyncio.to_thread(blocked.wait, HANG)

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        threads.append(threading.current_thread())
        blocked.set()
        release.wait(HANG * 3)  # blocking code: no await, cannot be cancelled in a thread

    grace, join = 0.1, 0.5
    start = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="agentlightning"):
            shm(graceful_delay=grace, join_timeout=join).execute(algorithm, runner, InMemoryLightningStore())
        elapsed = time.monotonic() - start
        assert elapsed < grace + join + 5.0  # returned within its join bound, not after the block
        (straggler,) = threads
        assert straggler.is_alive() and straggler.daemon
        assert straggler.name == "agl-shm-runner-0"
        assert "'agl-shm-runner-0' did not stop" in caplog.text
    finally:
        release.set()
        for thread in threads:
            thread.join(HANG)


def test_L7_declared_in_manifest() -> None:
    from conformance.capabilities import validate_manifest

    caps = validate_manifest(shm(graceful_delay=1.5, join_timeout=2.5).capabilities, owner="shm")
    assert caps["can_cancel_blocking_code"] is False
    assert caps["uses_processes"] is False
    assert caps["shares_caller_store"] is True
    assert caps["supports_unmanaged_store"] is True
    assert (caps["grace_seconds"], caps["join_seconds"]) == (1.5, 2.5)


# -- K: KeyboardInterrupt ------------------------------------------------------------------------------


@pytest.mark.parametrize("main_thread", ["algorithm", "runner"])
def test_K1_keyboard_interrupt_in_algorithm_reraised(main_thread: str) -> None:
    runner_running = threading.Event()
    journal: list[str] = []

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        await asyncio.to_thread(runner_running.wait, HANG)
        raise KeyboardInterrupt

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        runner_running.set()
        await until_stopped(event)
        journal.append("runner stopped")

    with pytest.raises(KeyboardInterrupt):
        shm(main_thread=main_thread).execute(algorithm, runner, InMemoryLightningStore())
    assert journal == ["runner stopped"]


@pytest.mark.parametrize(("main_thread", "n_runners"), [("algorithm", 3), ("runner", 1)])
def test_K2_keyboard_interrupt_in_runner_reraised(main_thread: str, n_runners: int) -> None:
    journal: list[str] = []
    lock = threading.Lock()

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        await until_stopped(event)
        journal.append("algorithm stopped")

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        if worker_id == 0:
            raise KeyboardInterrupt
        await until_stopped(event)
        with lock:
            journal.append(f"runner {worker_id} stopped")

    with pytest.raises(KeyboardInterrupt):
        shm(n_runners=n_runners, main_thread=main_thread).execute(algorithm, runner, InMemoryLightningStore())
    assert sorted(journal) == ["algorithm stopped"] + [f"runner {i} stopped" for i in range(1, n_runners)]


def run_child(
    scenario: str, main_thread: str = "algorithm", n_runners: int = 2, how: str = "process"
) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(CHILD), scenario, main_thread, str(n_runners), how],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "AGL_MANAGED_STORE": "0"},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_clean(result: dict[str, Any]) -> None:
    assert result["threads_left"] == [], result
    assert result["handler_restored"] and result["loop_restored"], result  # R7


@pytest.mark.parametrize("how", ["process", "main-thread", "other-thread"])
@pytest.mark.parametrize(("main_thread", "n_runners"), [("algorithm", 2), ("runner", 1)])
def test_K3_sigint_while_all_run_reraises(main_thread: str, n_runners: int, how: str) -> None:
    result = run_child("running", main_thread, n_runners, how)
    assert result["outcome"] == "KeyboardInterrupt", result
    assert result["latency"] < 1.0, result  # K3's own bound; typically a few ms
    n_bundles = 1 + n_runners
    assert sum(entry.endswith("saw stop") for entry in result["journal"]) == n_bundles
    assert sum(entry.endswith("finally") for entry in result["journal"]) == n_bundles
    assert_clean(result)


def test_K3_sigint_interrupts_blocking_code_on_main_thread() -> None:
    # Only a signal the main thread receives can interrupt sync code there (as with a terminal's Ctrl+C).
    result = run_child("blocking-main", "algorithm", 1, "main-thread")
    assert result["outcome"] == "KeyboardInterrupt", result
    assert "algorithm got KeyboardInterrupt" in result["journal"]
    assert "runner 0 saw stop" in result["journal"]
    assert_clean(result)


@pytest.mark.parametrize(("main_thread", "n_runners"), [("algorithm", 2), ("runner", 1)])
def test_K3_sigint_during_startup_lands_in_strategy_code_safely(main_thread: str, n_runners: int) -> None:
    result = run_child("before-start", main_thread, n_runners)
    assert result["outcome"] == "KeyboardInterrupt", result
    # Deferred, not raised inside the start-up code: every bundle still ran once (L1) and saw the stop.
    n_bundles = 1 + n_runners
    assert sum(entry.endswith("started") for entry in result["journal"]) == n_bundles
    assert sum(entry.endswith("saw stop") for entry in result["journal"]) == n_bundles
    assert_clean(result)


@pytest.mark.parametrize("how", ["process", "other-thread"])
def test_K3_sigint_during_shutdown_reraises(how: str) -> None:
    # "other-thread": the signal reaches a thread that is not waiting; the main thread, waiting for the
    # runners, must still wake at once (the signal wakeup fd), not when the runners end.
    result = run_child("shutdown", "algorithm", 2, how)
    assert result["outcome"] == "KeyboardInterrupt", result
    assert (
        result["journal"].count("runner 0 stopped") == 1 and result["journal"].count("runner 1 stopped") == 1
    )
    assert_clean(result)


@pytest.mark.parametrize(("main_thread", "n_runners"), [("algorithm", 2), ("runner", 1)])
def test_K5_second_sigint_cancels_without_waiting_for_grace(main_thread: str, n_runners: int) -> None:
    result = run_child("second-sigint", main_thread, n_runners)  # grace is 60 s in this scenario
    assert result["outcome"] == "KeyboardInterrupt", result
    assert result["latency"] < 30.0, result
    for worker_id in range(n_runners):
        assert f"runner {worker_id} cancelled" in result["journal"]
        assert f"runner {worker_id} finally" in result["journal"]
    assert_clean(result)


@pytest.mark.parametrize(("main_thread", "n_runners"), [("algorithm", 1), ("runner", 1)])
def test_K5_third_sigint_stops_waiting_for_a_bundle_that_swallows_cancellation(
    main_thread: str, n_runners: int
) -> None:
    result = run_child("third-sigint", main_thread, n_runners)  # grace 60 s, join_timeout 10 s
    assert result["outcome"] == "KeyboardInterrupt", result
    assert result["latency"] < 10.0, result
    assert "runner 0 swallowed a cancellation" in result["journal"]
    assert result["handler_restored"] and result["loop_restored"], result
    # The last resort leaves a runner thread that swallows cancellation behind (reported, daemon).
    assert result["threads_left"] in ([], ["agl-shm-runner-0"]), result


# -- E: exceptions -------------------------------------------------------------------------------------


class AlgorithmFailed(Exception):
    pass


def _raise_from_here(message: str) -> None:
    raise AlgorithmFailed(message)


@pytest.mark.parametrize("main_thread", ["algorithm", "runner"])
def test_E1_algorithm_error_reraised_with_type_message_and_traceback(main_thread: str) -> None:
    stopped = threading.Event()

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        _raise_from_here("bad batch")

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        await until_stopped(event)
        stopped.set()

    with pytest.raises(AlgorithmFailed, match="bad batch") as info:
        shm(main_thread=main_thread).execute(algorithm, runner, InMemoryLightningStore())
    assert stopped.is_set()
    assert "_raise_from_here" in [entry.name for entry in info.traceback]


def test_E2_runner_error_reraised_and_stops_everyone() -> None:
    journal: list[str] = []
    lock = threading.Lock()

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        await until_stopped(event)
        journal.append("algorithm stopped")

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        if worker_id == 1:
            raise LookupError(f"runner {worker_id} failed")
        await until_stopped(event)
        with lock:
            journal.append(f"runner {worker_id} stopped")

    with pytest.raises(LookupError, match="runner 1 failed"):
        shm(n_runners=3).execute(algorithm, runner, InMemoryLightningStore())
    assert sorted(journal) == ["algorithm stopped", "runner 0 stopped", "runner 2 stopped"]


def test_E3_first_error_wins_later_ones_attached(caplog: pytest.LogCaptureFixture) -> None:
    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        await until_stopped(event)  # set by runner 0's failure, which is therefore first
        raise RuntimeError("second failure")

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        raise ValueError("first failure")

    with caplog.at_level(logging.DEBUG, logger="agentlightning"), pytest.raises(ValueError) as info:
        shm().execute(algorithm, runner, InMemoryLightningStore())
    assert str(info.value) == "first failure"
    if sys.version_info >= (3, 11):
        assert info.value.__notes__ == ["also failed: algorithm: RuntimeError: second failure"]
    assert "RuntimeError: second failure" in caplog.text


def test_E4_cleanup_error_does_not_mask_bundle_error(monkeypatch: pytest.MonkeyPatch) -> None:
    threaded = pytest.importorskip("agentlightning.store.threaded")

    def broken_close(self: Any) -> None:
        raise OSError("store close failed")

    monkeypatch.setattr(threaded.ThreadedLightningStore, "close_sync", broken_close)

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        raise AlgorithmFailed("original")

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        await until_stopped(event)

    with pytest.raises(AlgorithmFailed, match="original") as info:
        shm(managed_store=True).execute(algorithm, runner, InMemoryLightningStore())
    if sys.version_info >= (3, 11):
        assert any("store close failed" in note for note in info.value.__notes__)


def test_E4_error_in_bundle_finally_during_cancellation_does_not_mask_first_error() -> None:
    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        raise AlgorithmFailed("original")

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        try:
            await asyncio.sleep(HANG * 10)
        finally:
            raise OSError("cleanup in runner failed")

    with pytest.raises(AlgorithmFailed, match="original"):
        shm(graceful_delay=0.0).execute(algorithm, runner, InMemoryLightningStore())


@pytest.mark.parametrize("main_thread", ["algorithm", "runner"])
def test_E5_immediate_failure_before_others_start_no_hang(main_thread: str) -> None:
    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        await until_stopped(event)

    def runner(store: Any, worker_id: int, event: ExecutionEvent) -> Any:
        raise ImportError("runner could not even start")  # fails before returning a coroutine

    n_runners = 4 if main_thread == "algorithm" else 1
    with pytest.raises(ImportError, match="could not even start"):
        shm(n_runners=n_runners, main_thread=main_thread).execute(algorithm, runner, InMemoryLightningStore())


@pytest.mark.parametrize("where", ["algorithm", "runner"])
def test_E6_system_exit_not_swallowed(where: str) -> None:
    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        if where == "algorithm":
            raise SystemExit(7)
        await until_stopped(event)

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        if where == "runner":
            raise SystemExit(7)
        await until_stopped(event)

    with pytest.raises(SystemExit) as info:
        shm().execute(algorithm, runner, InMemoryLightningStore())
    assert info.value.code == 7


def test_E6_system_exit_from_a_subtask_on_main_thread_not_swallowed() -> None:
    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        async def child() -> None:
            raise SystemExit(3)  # asyncio lets this escape the loop; the strategy must still catch it

        task = asyncio.get_running_loop().create_task(child())
        await until_stopped(event)
        assert task.done()

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        await until_stopped(event)

    with pytest.raises(SystemExit):
        shm().execute(algorithm, runner, InMemoryLightningStore())


# -- R: resources --------------------------------------------------------------------------------------


def test_R1_R6_no_thread_left_over_repeated_runs() -> None:
    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        await asyncio.sleep(0)

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        await until_stopped(event)

    before = {t.ident for t in threading.enumerate()}
    strategy = shm(n_runners=4)
    for _ in range(20):
        strategy.execute(algorithm, runner, InMemoryLightningStore())
        assert {t.ident for t in threading.enumerate()} == before


def test_R5_leftover_tasks_and_generators_finalised_without_warnings() -> None:
    journal: list[str] = []

    async def ticker() -> Any:
        try:
            while True:
                yield 1
                await asyncio.sleep(0)
        finally:
            journal.append("generator closed")

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        async def forgotten() -> None:
            try:
                await asyncio.sleep(HANG * 10)
            finally:
                journal.append("leftover task cancelled")

        asyncio.get_running_loop().create_task(forgotten())
        gen = ticker()
        await gen.__anext__()  # left suspended: shutdown_asyncgens must close it
        journal.append("algorithm returns")
        asyncio.get_running_loop().run_in_executor(None, lambda: None)

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        await until_stopped(event)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shm().execute(algorithm, runner, InMemoryLightningStore())
        gc.collect()
    assert sorted(journal) == ["algorithm returns", "generator closed", "leftover task cancelled"]


def test_R7_caller_state_restored_in_process() -> None:
    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        return

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        await until_stopped(event)

    handler = signal.getsignal(signal.SIGINT)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    root = logging.getLogger()
    logging_state = (root.level, list(root.handlers))
    try:
        shm().execute(algorithm, runner, InMemoryLightningStore())
        with pytest.raises(ValueError):
            shm().execute(_raising_algorithm, runner, InMemoryLightningStore())
        assert signal.getsignal(signal.SIGINT) is handler
        assert asyncio.get_event_loop_policy().get_event_loop() is loop
        assert (root.level, list(root.handlers)) == logging_state
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_R7_caller_sigint_handler_and_wakeup_fd_left_alone() -> None:
    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        assert signal.getsignal(signal.SIGINT) is callers_handler  # not replaced while running either

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        await until_stopped(event)

    def callers_handler(signum: int, frame: Any) -> None:
        raise AssertionError("no signal is sent in this test")

    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = signal.signal(signal.SIGINT, callers_handler)
    previous_fd = signal.set_wakeup_fd(writer.fileno())
    try:
        shm().execute(algorithm, runner, InMemoryLightningStore())
        assert signal.getsignal(signal.SIGINT) is callers_handler
        assert signal.set_wakeup_fd(writer.fileno()) == writer.fileno()
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGINT, previous)
        reader.close()
        writer.close()


def test_R7_wakeup_fd_restored_after_default_handler_replaced() -> None:
    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # the relay is in

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        await until_stopped(event)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_fd = signal.set_wakeup_fd(-1)
    try:
        shm().execute(algorithm, runner, InMemoryLightningStore())
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.set_wakeup_fd(-1) == -1
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGINT, previous)


def test_execute_inside_a_running_loop_is_a_clear_error() -> None:
    async def caller() -> None:
        with pytest.raises(RuntimeError, match=r"asyncio\.to_thread"):
            shm().execute(_raising_algorithm, _raising_algorithm, InMemoryLightningStore())  # type: ignore[arg-type]

    asyncio.run(caller())


async def _raising_algorithm(store: Any, event: ExecutionEvent) -> None:
    raise ValueError("error path")


def test_R7_no_current_loop_left_on_main_thread() -> None:
    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        return

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        await until_stopped(event)

    asyncio.set_event_loop(None)
    shm().execute(algorithm, runner, InMemoryLightningStore())
    assert asyncio.get_event_loop_policy()._local._loop is None  # type: ignore[attr-defined]


# -- S: store ------------------------------------------------------------------------------------------


def _exactly_once_bundles(n_rollouts: int, completed: dict[int, list[str]]) -> tuple[Any, Any]:
    lock = threading.Lock()
    ids: list[str] = []

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        for i in range(n_rollouts):
            ids.append((await store.enqueue_rollout(input={"i": i})).rollout_id)
        done = await store.wait_for_rollouts(rollout_ids=ids, timeout=HANG)
        assert len(done) == n_rollouts  # S2: runners' writes are visible to the algorithm

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        while not event.is_set():
            rollout = await store.dequeue_rollout()
            if rollout is None:
                await wait_async(event, 0.001)
                continue
            await store.update_attempt(rollout.rollout_id, rollout.attempt.attempt_id, status="succeeded")
            with lock:
                completed.setdefault(worker_id, []).append(rollout.rollout_id)

    return algorithm, runner


@pytest.mark.parametrize("managed", [False, True])
def test_S1_S2_S3_exactly_once_across_runners(managed: bool) -> None:
    if managed:
        pytest.importorskip("agentlightning.store.threaded")
    n_rollouts = 300
    completed: dict[int, list[str]] = {}
    algorithm, runner = _exactly_once_bundles(n_rollouts, completed)
    store = InMemoryLightningStore()
    shm(n_runners=4, managed_store=managed).execute(algorithm, runner, store)
    everything = [rid for ids in completed.values() for rid in ids]
    assert len(everything) == len(set(everything)) == n_rollouts
    rollouts = asyncio.run(store.query_rollouts())
    assert {r.rollout_id for r in rollouts} == set(everything)  # S3: the caller's store holds the writes
    assert {r.status for r in rollouts} == {"succeeded"}


def test_S6_unmanaged_store_is_the_callers_object() -> None:
    seen: list[Any] = []

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        seen.append(store)

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        seen.append(store)
        await until_stopped(event)

    store = InMemoryLightningStore()
    shm(n_runners=2, managed_store=False).execute(algorithm, runner, store)
    assert len(seen) == 3 and all(s is store for s in seen)


def test_S6_managed_store_wraps_the_callers_object() -> None:
    threaded = pytest.importorskip("agentlightning.store.threaded")
    seen: list[Any] = []

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        seen.append(store)

    async def runner(store: Any, worker_id: int, event: ExecutionEvent) -> None:
        seen.append(store)
        await until_stopped(event)

    store = InMemoryLightningStore()
    shm(n_runners=2, managed_store=True).execute(algorithm, runner, store)
    assert len(seen) == 3
    algorithm_store, *runner_stores = sorted(seen, key=lambda s: isinstance(s, ClaimTrackingStore))
    assert isinstance(algorithm_store, threaded.ThreadedLightningStore) and algorithm_store.inner is store
    # Each runner's own view of that same wrapper records what it claims (T3).
    assert all(isinstance(s, ClaimTrackingStore) and s.inner is algorithm_store for s in runner_stores)
    assert sorted(s.client for s in runner_stores) == ["runner 0", "runner 1"]


# -- T3: claims of a runner that is gone ---------------------------------------------------------------


@pytest.mark.parametrize(("how", "error"), [("raise", RuntimeError), ("return", None)])
@pytest.mark.parametrize(("config", "expected"), [({}, "failed"), (RETRYING, "requeuing")])
def test_T3_a_runner_that_ends_holding_a_claim_has_it_given_up(
    tmp_path: Path, how: str, error: type[BaseException] | None, config: dict[str, Any], expected: str
) -> None:
    """Given up as the runner's bundle ends (raising, or returning: L3, the others run on), while the
    algorithm still runs, by the retry policy."""
    check_given_up(shm(n_runners=2, managed_store=True), str(tmp_path), how, config, expected, error)


def test_T3_a_runner_left_behind_in_blocking_code_has_its_claim_given_up(tmp_path: Path) -> None:
    directory, store, release = str(tmp_path), InMemoryLightningStore(), threading.Event()

    async def algorithm(store: Any, event: ExecutionEvent) -> None:
        await store.enqueue_rollout({"task": 1})
        while not any(line.startswith("runner claimed") for line in read_journal(directory)):
            await asyncio.sleep(0.002)  # bounded by the test's timeout: a handshake, not a delay

    strategy = shm(n_runners=1, managed_store=True, graceful_delay=0.05, join_timeout=0.2)
    try:
        strategy.execute(algorithm, ClaimThenDie(directory, "block", release), store)  # L7: left behind
        assert_given_up(store, "failed")
    finally:
        release.set()  # the straggler returns; the autouse fixture joins it


def test_T3_a_live_but_silent_runner_is_kept_claimed_by_heartbeats(tmp_path: Path) -> None:
    """The store's clock only moves once a heartbeat came: without them the attempt expires at once."""
    check_kept_alive(shm(n_runners=1, managed_store=True), str(tmp_path))


# -- G: configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"n_runners": 0}, "n_runners"),
        ({"n_runners": True}, "n_runners"),
        ({"n_runners": 2.0}, "n_runners"),
        ({"n_runners": "2"}, "n_runners"),
        ({"main_thread": "both"}, "main_thread"),
        ({"main_thread": "runner", "n_runners": 2}, "main_thread"),
        ({"graceful_delay": -1}, "graceful_delay"),
        ({"graceful_delay": float("nan")}, "graceful_delay"),
        ({"graceful_delay": True}, "graceful_delay"),
        ({"graceful_delay": "5"}, "graceful_delay"),
        ({"join_timeout": 0}, "join_timeout"),
        ({"join_timeout": float("inf")}, "join_timeout"),
        ({"managed_store": "yes"}, "managed_store"),
        ({"managed_store": 1}, "managed_store"),
    ],
)
def test_G2_invalid_parameters_name_parameter_and_value(kwargs: dict[str, Any], names: str) -> None:
    with pytest.raises(ValueError, match=names) as info:
        SharedMemoryExecutionStrategy(**kwargs)
    bad = kwargs[names] if names in kwargs else kwargs["n_runners"]
    assert repr(bad) in str(info.value)


def test_G2_invalid_environment_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGL_MANAGED_STORE", "maybe")
    with pytest.raises(ValueError, match="AGL_MANAGED_STORE"):
        SharedMemoryExecutionStrategy()


@pytest.mark.parametrize(("raw", "expected"), [("0", False), ("1", True)])
def test_G2_environment_default_for_managed_store(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool
) -> None:
    monkeypatch.setenv("AGL_MANAGED_STORE", raw)
    assert SharedMemoryExecutionStrategy().managed_store is expected
    assert SharedMemoryExecutionStrategy(managed_store=not expected).managed_store is (not expected)


def test_G1_alias_and_repr() -> None:
    strategy = SharedMemoryExecutionStrategy(
        n_runners=2, graceful_delay=1, join_timeout=2, managed_store=False
    )
    assert SharedMemoryExecutionStrategy.alias == "shm"
    assert repr(strategy) == (
        "SharedMemoryExecutionStrategy(n_runners=2, main_thread='algorithm', graceful_delay=1.0, "
        "join_timeout=2.0, managed_store=False)"
    )
