"""Leak snapshots: named offenders, stdlib noise filtered, settle polled, caller state, stderr parsing."""

from __future__ import annotations

import os
import signal
import threading

from conformance import leaks


def test_new_thread_is_named_and_settle_waits_for_it_to_end():
    before = leaks.take_snapshot()
    release = threading.Event()
    worker = threading.Thread(target=release.wait, name="snapshot-test-thread", daemon=True)
    worker.start()
    try:
        report = leaks.compare(before, leaks.take_snapshot())
        assert any("'snapshot-test-thread'" in entry and "daemon" in entry for entry in report.threads)
    finally:
        timer = threading.Timer(0.05, release.set)
        timer.start()
    settled, _ = leaks.settle(before, window=10.0)
    timer.join()
    worker.join()
    assert settled.threads == ()


def test_open_file_is_named_by_its_target(tmp_path):
    before = leaks.take_snapshot()
    path = tmp_path / "held.txt"
    with open(path, "w") as handle:
        report = leaks.compare(before, leaks.take_snapshot())
        assert f"fd {handle.fileno()} -> {path}" in report.fds
    assert leaks.compare(before, leaks.take_snapshot()).fds == ()


def test_socket_is_reported_with_its_address():
    import socket

    before = leaks.take_snapshot()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        report = leaks.compare(before, leaks.take_snapshot())
    assert any(f"127.0.0.1:{port}" in entry and "LISTEN" in entry for entry in report.sockets), report.sockets
    assert report.fds == ()


def test_temp_files_under_the_private_tmpdir(tmp_path):
    before = leaks.take_snapshot(str(tmp_path))
    (tmp_path / "left.txt").write_text("x")
    report = leaks.compare(before, leaks.take_snapshot(str(tmp_path)), str(tmp_path))
    assert report.temp_files == ("left.txt",)


def test_zombie_child_is_named_by_pid():
    before = leaks.take_snapshot()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        while True:  # wait until the child is a zombie (it exits at once; we do not reap yet)
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        report = leaks.compare(before, leaks.take_snapshot())
        assert [entry for entry in report.zombies if entry.startswith(f"pid {pid} ")]
    finally:
        os.waitpid(pid, 0)


def test_caller_state_change_is_described():
    before = leaks.caller_state()
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        after = leaks.caller_state()
    finally:
        signal.signal(signal.SIGTERM, previous)
    report, _ = leaks.settle(leaks.take_snapshot(), window=0.0, state_before=before, state_after=after)
    assert len(report.caller_state) == 1
    # (was SIG_DFL, or coverage's own handler when the suite runs under coverage with sigterm = true)
    assert report.caller_state[0].startswith("SIGTERM handler: was ")
    assert "test_caller_state_change_is_described" in report.caller_state[0]


def test_collector_catches_resource_warnings_and_never_awaited_coroutines():
    async def never() -> None:
        pass

    with leaks.Collector() as collector:
        coroutine = never()
        del coroutine
        handle = open(os.devnull)  # noqa: SIM115 - leaked on purpose
        del handle
        import gc

        gc.collect()
    assert any(entry.startswith("ResourceWarning: unclosed file") for entry in collector.warnings)
    assert any("never awaited" in entry for entry in collector.warnings)


def test_stderr_complaints_are_sorted_by_kind():
    text = "\n".join(
        [
            "/usr/lib/python3.11/multiprocessing/resource_tracker.py:254: UserWarning: resource_tracker: "
            "There appear to be 1 leaked shared_memory objects to clean up at shutdown",
            "Task was destroyed but it is pending!",
            "sys:1: ResourceWarning: unclosed <socket.socket fd=5>",
            "an ordinary log line",
        ]
    )
    found = leaks.parse_stderr(text)
    assert found["ipc"] == [
        "resource_tracker: There appear to be 1 leaked shared_memory objects to clean up at shutdown"
    ]
    assert found["asyncio"] == ["Task was destroyed but it is pending!"]
    assert found["warnings"] == ["ResourceWarning: unclosed <socket.socket fd=5>"]


def test_stdlib_helpers_are_not_leaks():
    import multiprocessing.resource_tracker as tracker

    before = leaks.take_snapshot()
    tracker.ensure_running()  # the stdlib's own long-lived helper (may already run: then nothing new)
    report = leaks.compare(before, leaks.take_snapshot())
    assert report.processes == () and report.fds == ()


def test_shared_ctypes_heap_arena_is_not_a_leak():
    import multiprocessing

    before = leaks.take_snapshot()
    value = multiprocessing.get_context("spawn").Value("i", 7)  # the heap creates (and keeps) an arena
    report = leaks.compare(before, leaks.take_snapshot())
    assert value.value == 7
    assert not [entry for entry in report.fds if "/dev/shm/pym-" in entry], report.fds


def test_named_semaphore_kept_past_the_run_is_an_ipc_leak_and_a_released_one_is_not():
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # spawn: the semaphore keeps its name in /dev/shm
    with leaks.Collector() as collector:
        before = leaks.take_snapshot()
        kept = context.Semaphore(2)
        released = context.Lock()
        del released  # finalised: unlinked and unregistered
        report, _ = leaks.settle(before, window=0.0, collector=collector)
    assert len(report.ipc) == 1, report.ipc
    assert report.ipc[0].startswith("named semaphore /mp-") and "never unlinked" in report.ipc[0]
    assert "/dev/shm/sem.mp-" in report.ipc[0]
    del kept
