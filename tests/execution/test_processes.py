"""``WorkerProcesses``: start methods (F3), outcomes and exception transport (E2, E6, K2), worker death
(F1), stop escalation (L6, L7), wake-ups (L4), no leaks (R2), and, in a child script, group SIGINT (K4),
a second SIGINT (K5) and parent death (F4).

Handshakes go over a pipe the workers write to; there is no bare sleep. Signal tests run in a separate
session so nothing can reach pytest.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from held_start import HeldStart, opened_when_the_stop_reaches
from python_script import run_script

from agentlightning.execution.events import MultiprocessingEvent, wait_async
from agentlightning.execution.processes import (
    START_METHODS,
    WorkerDied,
    WorkerProcesses,
    default_start_method,
    single_threaded,
    validate_start_method,
    validate_timeout,
)
from agentlightning.remote_errors import RemoteError

AVAILABLE = [m for m in START_METHODS if m in multiprocessing.get_all_start_methods()]
HANG = 30.0
CHILD_SCRIPT = Path(__file__).with_name("processes_child.py")
REPO = Path(__file__).resolve().parents[2]

Journal = multiprocessing.connection.Connection


# -- worker bodies (module level: picklable under spawn and forkserver) ------------------------------------


async def returns(journal: Journal) -> None:
    journal.send(("returned", os.getpid()))


async def reports_frozen_heap(journal: Journal) -> None:
    journal.send(("frozen" if gc.get_freeze_count() else "not frozen", os.getpid()))


async def reports_listening_sockets(journal: Journal) -> None:
    """Sends the local addresses of the listening sockets this worker holds."""
    held = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                with socket.socket(fileno=os.dup(int(name))) as sock:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                        held.append(sock.getsockname())
    journal.send((held, os.getpid()))


async def raises_value_error() -> None:
    raise ValueError("worker failed on purpose")


async def raises_unpicklable() -> None:
    raise ValueError("carries a lambda", lambda: 0)


async def raises_system_exit() -> None:
    raise SystemExit(3)


async def raises_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


async def exits_abruptly(journal: Journal) -> None:
    journal.send(("started", os.getpid()))
    os._exit(3)


async def waits(journal: Journal, event: MultiprocessingEvent) -> None:
    journal.send(("started", os.getpid()))
    await wait_async(event)
    journal.send(("saw-stop", os.getpid()))


async def sets_event(event: MultiprocessingEvent) -> None:
    event.set()


async def ignores_event(journal: Journal) -> None:
    try:
        journal.send(("started", os.getpid()))
        await asyncio.sleep(HANG * 10)
    except asyncio.CancelledError:
        journal.send(("cancelled", os.getpid()))
        raise
    finally:
        journal.send(("finally", os.getpid()))


async def blocks(journal: Journal) -> None:
    try:
        journal.send(("started", os.getpid()))
        while True:
            time.sleep(0.01)
    finally:
        journal.send(("finally", os.getpid()))


async def ignores_signals(journal: Journal) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    journal.send(("started", os.getpid()))
    while True:
        time.sleep(0.01)


# -- helpers --------------------------------------------------------------------------------------------


class Harness:
    """A worker group plus a journal pipe; everything is closed at teardown."""

    def __init__(
        self,
        start_method: str,
        graceful_timeout: float = 1.0,
        terminate_timeout: float = 1.0,
        close_in_child: tuple[socket.socket, ...] = (),
    ):
        ctx = multiprocessing.get_context(start_method)
        self.event = MultiprocessingEvent(ctx)
        self.reader, self.journal = ctx.Pipe(duplex=False)
        self.workers = WorkerProcesses(
            self.event,
            start_method=start_method,
            graceful_timeout=graceful_timeout,
            terminate_timeout=terminate_timeout,
            close_in_child=close_in_child,
        )
        self.pids: list[int] = []

    def expect(self, kind: str) -> int:
        """The next journal entry, which must be ``kind``; returns the pid that sent it."""
        assert self.reader.poll(HANG), f"no journal entry {kind!r} within {HANG}s"
        got, pid = self.reader.recv()
        assert got == kind, f"expected {kind!r}, got {got!r}"
        self.pids.append(pid)
        return int(pid)

    def wait_all(self) -> list[Any]:
        deadline = time.monotonic() + HANG
        while self.workers.running:
            assert time.monotonic() < deadline, f"workers still running: {self.workers.running}"
            self.workers.wait(HANG)
        return self.workers.outcomes

    def close(self) -> None:
        self.workers.close()
        self.event.close()
        self.reader.close()
        self.journal.close()


@pytest.fixture
def harness() -> Iterator[Any]:
    made: list[Harness] = []

    def make(start_method: str = "fork", **kwargs: Any) -> Harness:
        made.append(Harness(start_method, **kwargs))
        return made[-1]

    yield make
    for item in made:
        item.close()
    for pid in [pid for item in made for pid in item.pids]:
        assert not _alive(pid), f"R2: worker pid {pid} outlived its group"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- configuration (G2) ------------------------------------------------------------------------------------


def test_G2_start_method_validated() -> None:
    assert validate_start_method(None) == default_start_method()
    for method in AVAILABLE:
        assert validate_start_method(method) == method
    with pytest.raises(ValueError, match=r"start_method .*'forky'"):
        validate_start_method("forky")
    with pytest.raises(ValueError, match="start_method"):
        WorkerProcesses(MultiprocessingEvent(), start_method="threads")


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1", True, None])
def test_G2_timeouts_validated(bad: Any) -> None:
    with pytest.raises(ValueError, match="graceful_timeout"):
        validate_timeout(bad, "graceful_timeout")
    assert validate_timeout(0, "x") == 0.0


def test_default_start_method_is_not_fork() -> None:
    assert default_start_method() in ("forkserver", "spawn")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_single_threaded_counts_every_thread(tmp_path: Path) -> None:
    alone = "import json\nfrom agentlightning.execution.processes import single_threaded\n"
    alone += "print(json.dumps(single_threaded()))\n"
    assert run_script(tmp_path, alone) is True
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="held")
    thread.start()
    try:
        assert not single_threaded()
    finally:
        release.set()
        thread.join()


_DEFAULT_METHOD_SCRIPT = """
import json, multiprocessing, os, threading
from agentlightning.execution.events import MultiprocessingEvent
from agentlightning.execution.processes import WorkerProcesses

async def parent_pid(journal):
    journal.send(os.getppid())

def parents(workers, reader, writer, name):
    workers.start(name, parent_pid, writer)
    return reader.recv()

if __name__ == "__main__":
    event = MultiprocessingEvent()
    reader, writer = multiprocessing.Pipe(duplex=False)
    with WorkerProcesses(event) as workers:
        alone = parents(workers, reader, writer, "alone")
        release = threading.Event()
        thread = threading.Thread(target=release.wait)
        thread.start()
        threaded = parents(workers, reader, writer, "threaded")
        release.set()
        thread.join()
        workers.stop()
    event.close()
    print(json.dumps({"me": os.getpid(), "alone": alone, "threaded": threaded}))
"""


@pytest.mark.skipif("fork" not in AVAILABLE or not sys.platform.startswith("linux"), reason="forks on Linux")
def test_default_forks_only_while_the_caller_has_one_thread(tmp_path: Path) -> None:
    """The default start method forks a worker from a single-threaded caller (its code at the caller's
    addresses costs less CPU per round trip, see the module docstring), never from a threaded one."""
    seen = run_script(tmp_path, _DEFAULT_METHOD_SCRIPT)
    assert seen["alone"] == seen["me"], f"a single-threaded caller's worker was not forked from it: {seen}"
    assert seen["threaded"] != seen["me"], f"a worker was forked from a threaded caller: {seen}"


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_what_a_worker_inherits_is_never_collected_there(harness: Any, start_method: str) -> None:
    """A forked worker's collections must not walk the caller's heap (copy-on-write pages, CPU)."""
    h = harness(start_method)
    h.workers.start("w", reports_frozen_heap, h.journal)
    h.expect("frozen")
    assert [o.status for o in h.wait_all()] == ["returned"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("start_method", AVAILABLE)
def test_a_worker_holds_no_socket_the_caller_names(harness: Any, start_method: str) -> None:
    """``close_in_child``: a forked worker closes them first thing; other workers never inherit them (R3)."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        h = harness(start_method, close_in_child=(listening,))
        h.workers.start("w", reports_listening_sockets, h.journal)
        assert h.reader.poll(HANG), f"no report within {HANG}s"
        held, _ = h.reader.recv()
        assert [tuple(address) for address in held if tuple(address) == listening.getsockname()] == []
        assert [o.status for o in h.wait_all()] == ["returned"]
        assert listening.fileno() != -1  # the caller's own socket stays open


# -- outcomes (L1, F3, E2, E6, K2, F1) ---------------------------------------------------------------------


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_F3_workers_run_and_return(harness: Any, start_method: str) -> None:
    h = harness(start_method)
    for index in range(2):
        h.workers.start(f"w{index}", returns, h.journal)
    h.expect("returned")
    h.expect("returned")
    outcomes = h.wait_all()
    assert sorted((o.name, o.status, o.exitcode, o.error) for o in outcomes) == [
        ("w0", "returned", 0, None),
        ("w1", "returned", 0, None),
    ]
    assert set(h.pids) == {o.pid for o in outcomes}


async def reports_its_heap_at_exit(journal: Journal) -> None:
    """Registers an atexit handler that sends whether the heap is frozen when the worker shuts down."""

    def report() -> None:
        journal.send(("frozen at exit", gc.get_freeze_count() > 0))

    atexit.register(report)


def test_F3_a_spawned_worker_shuts_down_with_its_heap_frozen(harness: Any) -> None:
    """Under spawn the worker ends in a full interpreter shutdown while its parent waits to reap it: its
    heap is frozen by then, so shutdown's collections do not walk everything it imported; its atexit
    handlers still run."""
    h = harness("spawn")
    h.workers.start("w0", reports_its_heap_at_exit, h.journal)
    assert h.reader.poll(HANG), f"no report from the worker's atexit handler within {HANG}s"
    assert h.reader.recv() == ("frozen at exit", True)
    (outcome,) = h.wait_all()
    assert (outcome.status, outcome.exitcode) == ("returned", 0)


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_E2_error_keeps_type_message_traceback(harness: Any, start_method: str) -> None:
    h = harness(start_method)
    h.workers.start("runner-7", raises_value_error)
    (outcome,) = h.wait_all()
    assert outcome.status == "raised"
    assert type(outcome.error) is ValueError
    assert str(outcome.error) == "worker failed on purpose"
    frames = [frame.name for frame in traceback.extract_tb(outcome.error.__traceback__)]
    assert "raises_value_error" in frames
    assert outcome.error.__notes__ == [f"raised in worker process 'runner-7' (pid {outcome.pid})"]


def test_E2_unpicklable_error_degrades(harness: Any) -> None:
    h = harness("spawn")
    h.workers.start("w", raises_unpicklable)
    (outcome,) = h.wait_all()
    assert isinstance(outcome.error, RemoteError)
    assert outcome.error.type_name == "ValueError"
    assert "carries a lambda" in outcome.error.message
    assert "raises_unpicklable" in outcome.error.remote_traceback


def test_E6_system_exit_is_transported(harness: Any) -> None:
    h = harness("fork")
    h.workers.start("w", raises_system_exit)
    (outcome,) = h.wait_all()
    assert outcome.status == "raised"
    assert type(outcome.error) is SystemExit and outcome.error.code == 3


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_K2_keyboard_interrupt_in_worker(harness: Any, start_method: str) -> None:
    h = harness(start_method)
    h.workers.start("w", raises_keyboard_interrupt)
    (outcome,) = h.wait_all()
    assert outcome.status == "interrupted"
    assert isinstance(outcome.error, KeyboardInterrupt)


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_F1_killed_worker_named_with_exit_status(harness: Any, start_method: str) -> None:
    h = harness(start_method)
    h.workers.start("runner-1", waits, h.journal, h.event)
    h.workers.start("runner-0", waits, h.journal, h.event)
    h.expect("started")
    h.expect("started")
    h.workers.kill("runner-1")
    newly: list[Any] = []
    while not newly:
        newly = h.workers.wait(HANG)
    (outcome,) = newly
    assert (outcome.name, outcome.status, outcome.exitcode) == ("runner-1", "died", -9)
    assert isinstance(outcome.error, WorkerDied)
    message = str(outcome.error)
    assert "'runner-1'" in message and "SIGKILL" in message and "-9" in message
    assert h.workers.running == ["runner-0"]  # the others are the caller's to stop
    h.workers.stop()
    assert [o.status for o in h.workers.outcomes] == ["died", "returned"]


def test_started_tells_when_a_worker_reached_its_callable(harness: Any) -> None:
    h = harness("spawn")
    h.workers.start("runner-0", waits, h.journal, h.event)
    assert not h.workers.started("unknown")
    h.expect("started")  # its callable runs: its "started" report was sent before
    deadline = time.monotonic() + HANG
    while not h.workers.started("runner-0"):  # read by wait(), which wakes on the report
        assert time.monotonic() < deadline, "the worker's start was never read"
        h.workers.wait(HANG)
    h.workers.stop()
    assert not h.workers.started("runner-0")  # ended: no longer a running worker


def test_F1_silent_exit_is_reported(harness: Any) -> None:
    h = harness("fork")
    h.workers.start("w", exits_abruptly, h.journal)
    h.expect("started")
    (outcome,) = h.wait_all()
    assert outcome.status == "died"
    assert "exited with status 3" in str(outcome.error)


# -- waking and stopping (L4, L6, L7, R2) ------------------------------------------------------------------


def test_L4_wait_wakes_when_a_worker_sets_the_event(harness: Any) -> None:
    h = harness("fork")
    h.workers.start("waiter", waits, h.journal, h.event)
    h.expect("started")
    h.workers.start("setter", sets_event, h.event)
    while not h.event.is_set():
        h.workers.wait(HANG)
    h.expect("saw-stop")  # the other process saw it too
    outcomes = h.workers.stop()
    assert {o.name: o.status for o in outcomes} == {"waiter": "returned", "setter": "returned"}


def test_L4_wait_async_wakes_on_exit_and_event(harness: Any) -> None:
    h = harness("fork")
    h.workers.start("waiter", waits, h.journal, h.event)
    h.expect("started")

    async def supervise() -> list[str]:
        assert await h.workers.wait_async(timeout=0.01) == []  # nothing happened: times out
        loop = asyncio.get_running_loop()
        loop.call_soon(h.event.set)
        seen: list[str] = []
        while h.workers.running:
            seen += [o.status for o in await h.workers.wait_async()]
        return seen

    assert asyncio.run(supervise()) == ["returned"]


def test_wait_async_wakes_on_a_descriptor_it_is_given(harness: Any) -> None:
    """``wake_on``: a supervisor that also listens to its workers over a pipe of its own wakes on it."""
    h = harness("fork")
    h.workers.start("waiter", waits, h.journal, h.event)
    h.expect("started")
    reader, writer = multiprocessing.Pipe(duplex=False)

    async def supervise() -> list[Any]:
        asyncio.get_running_loop().call_soon(writer.send, "news")
        return await h.workers.wait_async(timeout=HANG, wake_on=[reader.fileno()])

    try:
        began = time.monotonic()
        assert asyncio.run(supervise()) == []  # woken by the pipe: nothing ended
        assert time.monotonic() - began < HANG
        assert reader.recv() == "news"
        h.event.set()
        assert [o.status for o in h.wait_all()] == ["returned"]
    finally:
        reader.close()
        writer.close()


def test_stop_of_cooperative_workers_sends_no_signal(harness: Any) -> None:
    h = harness("forkserver")
    for index in range(2):
        h.workers.start(f"w{index}", waits, h.journal, h.event)
    h.expect("started")
    h.expect("started")
    outcomes = h.workers.stop()
    assert [(o.status, o.signalled) for o in outcomes] == [("returned", None), ("returned", None)]


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_L6_awaiting_worker_is_cancelled_after_grace(harness: Any, start_method: str) -> None:
    h = harness(start_method, graceful_timeout=0.2)
    h.workers.start("w", ignores_event, h.journal)
    h.expect("started")
    (outcome,) = h.workers.stop()
    h.expect("cancelled")
    h.expect("finally")
    assert (outcome.status, outcome.signalled, outcome.error) == ("stopped", signal.SIGINT, None)


def test_L7_blocking_worker_is_interrupted(harness: Any) -> None:
    h = harness("spawn", graceful_timeout=0.1)
    h.workers.start("w", blocks, h.journal)
    h.expect("started")
    (outcome,) = h.workers.stop()
    h.expect("finally")  # KeyboardInterrupt in blocking code: its finally ran
    assert (outcome.status, outcome.signalled) == ("stopped", signal.SIGINT)


def test_L7_escalates_to_sigkill(harness: Any) -> None:
    h = harness("fork", graceful_timeout=0.05, terminate_timeout=0.2)
    h.workers.start("stubborn", ignores_signals, h.journal)
    h.expect("started")
    (outcome,) = h.workers.stop()
    assert (outcome.status, outcome.signalled, outcome.exitcode) == ("stopped", signal.SIGKILL, -9)


def test_urgency_skips_the_grace(harness: Any) -> None:
    h = harness("fork", graceful_timeout=HANG * 10)
    h.workers.start("w", ignores_event, h.journal)
    h.expect("started")
    began = time.monotonic()
    (outcome,) = h.workers.stop(urgency=1)
    assert time.monotonic() - began < HANG  # a hang bound: the grace was not waited out
    assert (outcome.status, outcome.signalled) == ("stopped", signal.SIGINT)
    assert h.reader.poll(HANG)
    # The SIGINT comes at once: it may even land before the worker reached its await.
    assert h.reader.recv()[0] in ("cancelled", "finally")


def test_L6_a_hurry_from_another_thread_skips_the_grace_without_a_keyboard_interrupt(harness: Any) -> None:
    """``hurry()`` (the ``ray`` actor's answer to ``ray.cancel``) moves the escalation one step on from
    another thread, as a further Ctrl+C does, but ``stop()`` returns instead of raising."""
    h = harness("fork", graceful_timeout=HANG * 10)
    h.workers.start("w", ignores_event, h.journal)
    h.expect("started")
    hurrier = threading.Timer(0.0, h.workers.hurry)
    with _hurried_once_stop_waits(h.workers, hurrier):
        (outcome,) = h.workers.stop()  # would wait out the grace (300 s) but for the hurry
    assert (outcome.status, outcome.signalled) == ("stopped", signal.SIGINT)
    assert h.reader.poll(HANG) and h.reader.recv()[0] == "cancelled"  # SIGINT: CancelledError, L6


@contextlib.contextmanager
def _hurried_once_stop_waits(workers: WorkerProcesses, hurrier: threading.Timer) -> Iterator[None]:
    """Starts ``hurrier`` once ``stop()`` waits for the first time (its grace), from another thread."""
    wait = workers.wait
    fired = False

    def waiting(*args: Any, **kwargs: Any) -> Any:
        nonlocal fired
        if not fired:
            fired = True
            hurrier.start()
        return wait(*args, **kwargs)

    workers.wait = waiting  # type: ignore[method-assign]
    try:
        yield
    finally:
        hurrier.join(HANG)
        del workers.wait


def test_L6_a_hurry_before_the_stop_wakes_the_wait_and_starts_one_step_on(harness: Any) -> None:
    h = harness("fork", graceful_timeout=HANG * 10)
    h.workers.start("w", ignores_event, h.journal)
    h.expect("started")
    assert not h.workers.hurried
    hurrier = threading.Thread(target=h.workers.hurry)
    hurrier.start()
    hurrier.join(HANG)
    assert h.workers.hurried
    assert h.workers.wait(HANG) == [] and h.workers.hurried  # woken, and the hurry still pending
    (outcome,) = h.workers.stop()  # takes it: SIGINT at once instead of the 300 s grace
    assert (outcome.status, outcome.signalled) == ("stopped", signal.SIGINT)
    assert not h.workers.hurried
    h.workers.close()
    h.workers.hurry()  # after close: nothing to write to, and nothing else's descriptor is touched
    assert not h.workers.hurried


def test_R2_close_kills_and_reaps_leftovers(harness: Any) -> None:
    h = harness("fork")
    h.workers.start("w", ignores_event, h.journal)
    pid = h.expect("started")
    h.workers.close()
    assert not _alive(pid)
    assert not h.workers.running
    h.workers.close()  # idempotent


async def journals_its_call(journal: Journal, held: HeldStart, event: MultiprocessingEvent) -> None:
    journal.send(("called", os.getpid()))
    await wait_async(event)  # set long ago: the stop came while this worker was starting


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_L1_a_worker_still_starting_when_the_grace_runs_out_calls_its_callable(
    harness: Any, start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The algorithm returned at once: the stop's grace ran out while the worker was still starting. A
    # cooperative worker that reached its callable needs far less than this grace to see the event.
    h = harness(start_method, graceful_timeout=HANG)
    gate = multiprocessing.get_context(start_method).Event()
    with opened_when_the_stop_reaches(gate, monkeypatch):
        h.workers.start("late", journals_its_call, h.journal, HeldStart(gate), h.event)
        (outcome,) = h.workers.stop(since=time.monotonic() - HANG)  # the grace is over already
    assert (outcome.status, outcome.signalled, outcome.error) == ("returned", None, None)
    h.expect("called")


@pytest.mark.parametrize("when", ["before-the-stop", "during-the-grace"])
def test_K4_a_hurry_terminates_a_worker_still_starting_instead_of_waiting_for_it(
    harness: Any, when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hurry (the ``ray`` actor's ``ray.cancel``) makes the stop an interrupted one: a worker still
    starting gets SIGTERM at once. A SIGINT would stay blocked in it until it had started (seconds, under
    load), and its callable would then run only to be interrupted."""
    h = harness("spawn", graceful_timeout=HANG * 10)
    gate = multiprocessing.get_context("spawn").Event()
    with opened_when_the_stop_reaches(gate, monkeypatch):  # any signal opens the gate: a SIGINT lets it start
        h.workers.start("late", journals_its_call, h.journal, HeldStart(gate), h.event)
        if when == "before-the-stop":
            h.workers.hurry()
            (outcome,) = h.workers.stop()
        else:
            with _hurried_once_stop_waits(h.workers, threading.Timer(0.0, h.workers.hurry)):
                (outcome,) = h.workers.stop()  # would wait out the grace (300 s) but for the hurry
    assert (outcome.status, outcome.signalled) == ("stopped", signal.SIGTERM)
    assert not h.reader.poll(0)  # its callable never ran


def test_worker_names_are_unique(harness: Any) -> None:
    h = harness("fork")
    h.workers.start("w", returns, h.journal)
    with pytest.raises(ValueError, match="'w'"):
        h.workers.start("w", returns, h.journal)
    h.expect("returned")
    h.wait_all()


# -- signals and parent death, in a child script -----------------------------------------------------------


def _spawn_child(mode: str, start_method: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.Popen(
        [sys.executable, str(CHILD_SCRIPT), mode, start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: a group SIGINT cannot reach pytest
    )


def _read_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            _, err = proc.communicate(timeout=HANG)
            raise AssertionError(f"child ended before {prefix!r}: rc={proc.returncode}\n{err}")
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"no {prefix!r} line within {HANG}s")


@contextlib.contextmanager
def _killed_on_failure(proc: subprocess.Popen[str]) -> Iterator[None]:
    """If the test fails midway, kill the child script's whole session (its workers too)."""
    try:
        yield
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=HANG)


def _finish(proc: subprocess.Popen[str]) -> tuple[dict[str, Any], str]:
    result = json.loads(_read_line(proc, "result "))
    _, err = proc.communicate(timeout=HANG)
    return result, err


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_F4_workers_die_with_their_parent(start_method: str) -> None:
    proc = _spawn_child("parent-death", start_method)
    try:
        pids = json.loads(_read_line(proc, "ready "))["pids"]
        workers = [psutil.Process(pid) for pid in pids]  # one awaiting, one in blocking code
        proc.kill()
        proc.wait(HANG)
        killed = time.monotonic()
        deadline = killed + HANG  # generous wait; the contract's bound is checked on the measurement
        while any(_alive(p.pid) for p in workers) and time.monotonic() < deadline:
            psutil.wait_procs([p for p in workers if _alive(p.pid)], timeout=0.05)
        elapsed = time.monotonic() - killed
        survivors = [p.pid for p in workers if _alive(p.pid)]
        assert not survivors, f"F4: workers {survivors} outlived their SIGKILLed parent by {HANG}s"
        assert elapsed <= 2.0, f"F4: workers outlived the parent by {elapsed:.2f}s (bound 2s)"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(HANG)


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_K4_group_sigint_stops_quietly(start_method: str) -> None:
    proc = _spawn_child("group-sigint", start_method)
    with _killed_on_failure(proc):
        pids = json.loads(_read_line(proc, "ready "))["pids"]
        os.killpg(proc.pid, signal.SIGINT)
        result, err = _finish(proc)
    assert proc.returncode == 0
    assert result["first"] == "KeyboardInterrupt"
    # Each worker ended on the group's SIGINT, or (slow under load) on the stop's own escalation.
    statuses = {o["status"] for o in result["outcomes"]}
    assert statuses <= {"interrupted", "returned", "stopped"}, result
    assert "Traceback" not in err, f"K4: a worker printed a traceback:\n{err}"
    assert not [pid for pid in pids if _alive(pid)]


def test_K5_second_sigint_hurries_the_stop() -> None:
    proc = _spawn_child("second-sigint", "fork")
    with _killed_on_failure(proc):
        pids = json.loads(_read_line(proc, "ready "))["pids"]
        os.kill(proc.pid, signal.SIGINT)
        _read_line(proc, "saw-stop")  # the stop began (the event is set); the grace is 60 s
        os.kill(proc.pid, signal.SIGINT)
        result, err = _finish(proc)
    assert result["first"] == "KeyboardInterrupt"
    assert result["stop"] == "KeyboardInterrupt"
    assert result["stop_seconds"] < HANG  # far below the 60 s grace: the second SIGINT skipped it
    assert [o["status"] for o in result["outcomes"]] == ["stopped"], (result, err)
    assert "Traceback" not in err, err
    assert not [pid for pid in pids if _alive(pid)]


def test_K5_a_sigint_taken_by_another_thread_still_hurries_the_stop() -> None:
    """The kernel may hand a process's SIGINT to any thread: the stop's wait must wake all the same."""
    proc = _spawn_child("sigint-elsewhere", "fork")
    with _killed_on_failure(proc):
        pids = json.loads(_read_line(proc, "ready "))["pids"]
        os.kill(proc.pid, signal.SIGINT)
        result, err = _finish(proc)
    assert result["first"] == "KeyboardInterrupt"
    assert result["stop"] == "KeyboardInterrupt"
    assert result["stop_seconds"] < HANG  # far below the 60 s grace
    assert "Traceback" not in err, err
    assert not [pid for pid in pids if _alive(pid)]


async def hammers_the_event(journal: Journal, event: MultiprocessingEvent) -> None:
    journal.send(("started", os.getpid()))
    while True:
        event.is_set()  # a tight loop: a SIGKILL lands inside the event's code most of the time


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_F1_worker_killed_inside_the_event_wedges_nobody(harness: Any, start_method: str) -> None:
    h = harness(start_method)
    h.workers.start("hammer", hammers_the_event, h.journal, h.event)
    h.expect("started")
    h.workers.kill("hammer")
    (outcome,) = h.wait_all()
    assert outcome.status == "died"
    setter = threading.Thread(target=h.event.set, daemon=True)
    setter.start()
    setter.join(HANG)
    assert not setter.is_alive(), "event.set() hangs: the killed worker left a lock held"
    assert h.event.is_set() and h.event.wait(HANG)


_FORKSERVER_MASK_SCRIPT = """
import multiprocessing
from multiprocessing import forkserver
from agentlightning.execution.events import MultiprocessingEvent
from agentlightning.execution.processes import WorkerProcesses

async def nothing():
    pass

def exit_1_if_sigint_is_blocked():
    import signal, sys
    sys.exit(1 if signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []) else 0)

if __name__ == "__main__":
    event = MultiprocessingEvent(multiprocessing.get_context("forkserver"))
    preload = ("agentlightning.execution.processes",)
    workers = WorkerProcesses(event, start_method="forkserver", preload=preload)
    workers.start("w", nothing)
    workers.stop()
    workers.close()
    with open(f"/proc/{forkserver._forkserver._forkserver_pid}/status") as status:
        print(next(line for line in status if line.startswith("SigBlk:")).split()[1])
    # A process of the caller's own, forked by the same forkserver, must see Ctrl+C as usual.
    foreign = multiprocessing.get_context("forkserver").Process(target=exit_1_if_sigint_is_blocked)
    foreign.start()
    foreign.join()
    print("foreign", foreign.exitcode)
    event.close()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the forkserver's mask from /proc")
def test_K4_the_forkserver_forks_workers_with_sigint_blocked(tmp_path: Path) -> None:
    """A group Ctrl+C must not reach a worker still in multiprocessing's bootstrap (it would die there)."""
    script = tmp_path / "forkserver_mask.py"
    script.write_text(_FORKSERVER_MASK_SCRIPT)
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=HANG, check=False
    )
    assert proc.returncode == 0, proc.stderr
    mask, foreign = proc.stdout.splitlines()[-2:]
    assert int(mask, 16) & (1 << (signal.SIGINT - 1)), proc.stdout
    assert foreign == "foreign 0", (
        f"a caller's own forkserver process starts with SIGINT blocked: {proc.stdout}"
    )


def test_K4_the_forkserver_hook_unblocks_sigint_only_outside_our_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentlightning.execution import processes

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        worker = types.SimpleNamespace(_target=processes._worker_main)
        monkeypatch.setattr(multiprocessing, "current_process", lambda: worker)
        processes._unblock_sigint_unless_a_worker(None)
        assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # ours unblock it themselves
        monkeypatch.setattr(multiprocessing, "current_process", lambda: types.SimpleNamespace(_target=print))
        processes._unblock_sigint_unless_a_worker(None)
        assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


_INTERRUPTED_BEFORE_ITS_LOOP_SCRIPT = """
import json, os, sys, tempfile
from agentlightning.execution.events import MultiprocessingEvent
from agentlightning.execution.processes import WorkerProcesses

async def never_runs():
    raise AssertionError("the callable ran")

def interrupted_while_made():
    raise KeyboardInterrupt  # a Ctrl+C landing while the worker's event loop is being made

if __name__ == "__main__":
    with tempfile.TemporaryFile("w+") as err:
        os.dup2(err.fileno(), 2)  # the worker's stderr, inherited, read back below
        event = MultiprocessingEvent()
        with WorkerProcesses(event, start_method=sys.argv[1]) as workers:
            workers.start("w", never_runs, loop_factory=interrupted_while_made)
            while workers.running:
                workers.wait(None)
            status = workers.outcomes[0].status
        event.close()
        err.seek(0)
        print(json.dumps({"status": status, "stderr": err.read()}))
"""


@pytest.mark.parametrize("start_method", AVAILABLE)
def test_R5_ctrl_c_before_the_workers_loop_runs_leaves_no_warning(tmp_path: Path, start_method: str) -> None:
    """A Ctrl+C that lands while a worker's loop is being made: reported as an interrupt, and the callable's
    coroutine, never started, is not left to print "never awaited" (the kit counts stderr warnings, R5)."""
    seen = run_script(tmp_path, _INTERRUPTED_BEFORE_ITS_LOOP_SCRIPT, start_method)
    assert seen["status"] == "interrupted", seen
    assert "never awaited" not in seen["stderr"], seen["stderr"]
