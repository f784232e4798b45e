"""The ``ipc`` strategy's private socket directories (R4): the owner marker, and the sweep of those whose
owner died, which must never touch a live owner's directory or anything that is not ours."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agentlightning.execution import socket_dirs
from agentlightning.execution.socket_dirs import (
    OWNER_MARKER,
    SOCKET_NAME,
    local_socket,
    make_socket_dir,
    remove_socket_dir,
    sweep_stale_socket_dirs,
)

HANG = 30.0
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short private temporary directory (socket paths must fit sun_path), used as TMPDIR."""
    path = Path(tempfile.mkdtemp(prefix="agl-t-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    monkeypatch.setattr(socket_dirs, "_swept", set())
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _made_by_a_killed_process(root: Path) -> Path:
    """A socket directory made by a real child process, which is then SIGKILLed (and reaped)."""
    code = (
        "import sys; from agentlightning.execution.socket_dirs import make_socket_dir; "
        "print(make_socket_dir(), flush=True); sys.stdin.read()"
    )
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": path, "TMPDIR": str(root)},
    )
    try:
        assert child.stdout is not None
        made = Path(child.stdout.readline().strip())  # the handshake: the directory exists
    finally:
        child.kill()
        child.communicate(timeout=HANG)
    assert made.parent == root and (made / OWNER_MARKER).is_file()
    return made


def _stale_copy(root: Path, name: str, **owner: object) -> Path:
    """A directory named ``name`` with our marker, its owner fields overridden by ``owner``."""
    made = Path(make_socket_dir())
    marker = json.loads((made / OWNER_MARKER).read_text())
    marker.update(owner)
    target = root / name
    made.rename(target)
    (target / OWNER_MARKER).write_text(json.dumps(marker))
    return target


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(HANG)
    return child.pid


def test_R4_directory_of_a_sigkilled_owner_is_swept(root: Path) -> None:
    stale = _made_by_a_killed_process(root)
    (stale / SOCKET_NAME).write_text("")  # what a killed server leaves: its socket file
    assert sweep_stale_socket_dirs(str(root)) == [str(stale)]
    assert not stale.exists()
    assert sweep_stale_socket_dirs(str(root)) == []


def test_R4_directory_of_a_live_owner_is_kept(root: Path) -> None:
    mine = make_socket_dir()
    assert Path(mine).parent == root
    assert sweep_stale_socket_dirs(str(root)) == []
    assert Path(mine, OWNER_MARKER).is_file()
    remove_socket_dir(mine)
    assert list(root.iterdir()) == []


def test_R4_a_reused_pid_does_not_pass_for_the_owner(root: Path) -> None:
    """Our own pid, alive, but a start time that is not ours: the owner was another process."""
    me = psutil.Process()
    reused = _stale_copy(root, "agl-ipc-reused", pid=me.pid, started=me.create_time() - 100.0)
    assert sweep_stale_socket_dirs(str(root)) == [str(reused)]


def test_R4_what_is_not_ours_is_kept(root: Path) -> None:
    dead = _dead_pid()
    no_marker = root / "agl-ipc-nomarker"
    no_marker.mkdir()
    (no_marker / SOCKET_NAME).write_text("someone else's")
    foreign_marker = root / "agl-ipc-foreign"
    foreign_marker.mkdir()
    (foreign_marker / OWNER_MARKER).write_text(json.dumps({"pid": dead, "started": 1.0}))
    other_host = _stale_copy(root, "agl-ipc-otherhost", pid=dead, host="elsewhere")
    other_namespace = _stale_copy(root, "agl-ipc-otherns", pid=dead, pid_namespace="pid:[1]")
    with_more = _stale_copy(root, "agl-ipc-withmore", pid=dead)
    (with_more / "notes.txt").write_text("not ours")
    elsewhere = _stale_copy(root, "elsewhere", pid=dead)
    (root / "agl-ipc-link").symlink_to(elsewhere)
    (root / "agl-ipc-file").write_text("a file, not a directory")
    kept = sorted(p.name for p in root.iterdir())
    assert sweep_stale_socket_dirs(str(root)) == []
    assert sorted(p.name for p in root.iterdir()) == kept
    assert (no_marker / SOCKET_NAME).read_text() == "someone else's"
    assert (with_more / "notes.txt").read_text() == "not ours"
    assert (elsewhere / OWNER_MARKER).is_file() and other_host.exists() and other_namespace.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory to another user needs root")
def test_R4_a_directory_of_another_user_is_kept(root: Path) -> None:
    theirs = _stale_copy(root, "agl-ipc-theirs", pid=_dead_pid())
    os.chown(theirs, 65534, 65534)
    assert sweep_stale_socket_dirs(str(root)) == []
    assert theirs.exists()


def test_R4_two_sweepers_at_once_are_harmless(root: Path) -> None:
    dead = _dead_pid()
    stale = {str(_stale_copy(root, f"agl-ipc-stale{i}", pid=dead)) for i in range(40)}
    removed: list[list[str]] = [[], []]
    start = threading.Barrier(2)

    def sweep(slot: int) -> None:
        start.wait(HANG)
        removed[slot] = sweep_stale_socket_dirs(str(root))

    sweepers = [threading.Thread(target=sweep, args=(slot,)) for slot in (0, 1)]
    for sweeper in sweepers:
        sweeper.start()
    for sweeper in sweepers:
        sweeper.join(HANG)
    assert set(removed[0]) | set(removed[1]) == stale
    assert not set(removed[0]) & set(removed[1])  # each directory removed once
    assert list(root.iterdir()) == []


def test_R4_make_socket_dir_sweeps_its_root_once_per_process(root: Path) -> None:
    stale = _made_by_a_killed_process(root)
    first = make_socket_dir()
    assert not stale.exists()
    stale_again = _made_by_a_killed_process(root)
    second = make_socket_dir()
    assert stale_again.exists()  # swept by the next process, not again by this one
    for mine in (first, second):
        remove_socket_dir(mine)
    assert sweep_stale_socket_dirs(str(root)) == [str(stale_again)]


def _bound_socket(directory: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(directory / SOCKET_NAME))
    return listener


def test_D3_local_socket_only_for_a_run_of_this_host_and_network_namespace(root: Path) -> None:
    """A runner that may be on another machine (a Ray actor) takes the server's Unix socket only when the
    socket is a run's, made on this host in this pid and network namespace; else it goes over TCP."""
    made = Path(make_socket_dir())
    path = str(made / SOCKET_NAME)
    assert local_socket(None) is None
    assert local_socket(path) is None  # no socket there yet
    with _bound_socket(made):
        assert local_socket(path) == path
        for owner in ({"host": "elsewhere"}, {"net_namespace": "net:[1]"}, {"pid_namespace": "pid:[1]"}):
            marker = json.loads((made / OWNER_MARKER).read_text())
            (made / OWNER_MARKER).write_text(json.dumps({**marker, **owner}))
            assert local_socket(path) is None, owner
            (made / OWNER_MARKER).write_text(json.dumps(marker))
    foreign = root / "agl-ipc-nomarker"
    foreign.mkdir()
    with _bound_socket(foreign):
        assert local_socket(str(foreign / SOCKET_NAME)) is None  # not made by make_socket_dir()


@pytest.mark.skipif(
    os.getuid() != 0 or shutil.which("unshare") is None, reason="a network namespace of its own needs root"
)
def test_D3_local_socket_is_not_used_from_another_network_namespace(root: Path) -> None:
    """A process in a network namespace of its own (a node standing for another host, section D) reaches
    the same file system but must use TCP, so that cutting its network cuts it off (D2, D3)."""
    made = Path(make_socket_dir())
    path = str(made / SOCKET_NAME)
    probe = (
        "import sys; from agentlightning.execution.socket_dirs import local_socket; "
        "print(local_socket(sys.argv[1]))"
    )
    with _bound_socket(made):
        here = subprocess.run(
            [sys.executable, "-c", probe, path], check=False, capture_output=True, text=True, timeout=HANG
        )
        there = subprocess.run(
            ["unshare", "--net", sys.executable, "-c", probe, path],
            check=False,
            capture_output=True,
            text=True,
            timeout=HANG,
        )
    assert (here.returncode, here.stdout.strip()) == (0, path), here.stderr
    assert (there.returncode, there.stdout.strip()) == (0, "None"), there.stderr
