"""Private directories for a strategy's local store socket (``ipc``'s, ``cs``'s, ``ray``'s), and the sweep
of those a killed caller left.

``make_socket_dir()`` creates ``agl-ipc-XXXXXXXX`` (mode 0700) in the temporary directory and records its
owner in it: a marker file (``OWNER_MARKER``) with the creating process's pid, its start time, the host
and the pid and network namespaces (``local_socket()`` reads them to tell a client on the server's own
machine from one elsewhere). ``remove_socket_dir()`` removes it when ``execute()`` ends. A caller killed by
SIGKILL cannot, so ``make_socket_dir()`` also sweeps the leftovers of dead owners.

What the sweep removes: only a directory that is ours on every count. Its name starts with ``agl-ipc-``;
it is a real directory (not a symlink) of our uid; it holds a marker in our exact format, written on this
host in this pid namespace; and its owner is dead: no process has that pid, or the one that has it started
at another time (the pid was reused; ``psutil`` reads the start time, so a reused pid cannot pass for the
owner). A directory whose owner lives, whose marker is missing, unreadable or foreign, or whose owner we
cannot inspect, is kept. Of a stale directory only our own entries are unlinked (the socket and the
marker) before ``rmdir``; anything else in it keeps it. Two sweepers at once are harmless: every step
tolerates the other having done it already.

When and how much: once per process and temporary directory, at the first ``make_socket_dir()`` there
(so at most once per process for a caller that runs ``execute()`` in a loop), looking at no more than
``_SWEEP_LIMIT`` (256) ``agl-ipc-*`` entries; ``sweep_stale_socket_dirs()`` runs one on demand.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
from typing import Any

import psutil

__all__ = [
    "OWNER_MARKER",
    "SOCKET_NAME",
    "local_socket",
    "make_socket_dir",
    "remove_socket_dir",
    "sweep_stale_socket_dirs",
]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

_log = logging.getLogger(__name__)

_PREFIX = "agl-ipc-"
SOCKET_NAME = "store.sock"
"""The socket's name inside its directory."""
OWNER_MARKER = ".agl-ipc-owner"
"""The marker file: JSON naming the directory's owner (see the module docstring)."""

_MARKER_KIND = "agentlightning ipc socket directory"
_MARKER_MAX_BYTES = 4096
_START_TOLERANCE = 0.01
"""Seconds two readings of one process's start time may differ by (clock ticks are 10 ms)."""
_SWEEP_LIMIT = 256
"""``agl-ipc-*`` entries one sweep looks at, at most."""
# sun_path holds 108 bytes on Linux (104 on macOS); keep the socket's full path well inside it.
_MAX_SOCKET_PATH = 100

_swept: set[str] = set()
_swept_lock = threading.Lock()


def make_socket_dir() -> str:
    """A private directory for the store socket: under TMPDIR, or under /tmp when TMPDIR is too deep.

    A long TMPDIR (pytest's per-test directories, CI workspaces) would make ``bind()`` fail with
    "AF_UNIX path too long", so the socket falls back to the system's short temp root. The first call
    per process and root sweeps that root first (see the module docstring).
    """
    root = tempfile.gettempdir()
    if len(os.path.join(root, _PREFIX + "XXXXXXXX", SOCKET_NAME).encode()) > _MAX_SOCKET_PATH:
        root = "/tmp"
    with _swept_lock:
        first = root not in _swept
        _swept.add(root)
    if first:
        try:
            sweep_stale_socket_dirs(root)
        except OSError as exc:  # a sweep is housekeeping: it never stops a run
            _log.warning("could not sweep stale ipc socket directories in %s: %s", root, exc)
    path = tempfile.mkdtemp(prefix=_PREFIX, dir=root)
    try:
        _write_marker(path)
    except BaseException:
        os.rmdir(path)
        raise
    return path


def remove_socket_dir(path: str) -> None:
    """Remove a directory made by ``make_socket_dir()`` (and what is left in it); a missing one is fine."""
    for name in (SOCKET_NAME, OWNER_MARKER):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, name))
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(path, ignore_errors=True)  # ours and private: whatever else is in it goes too


def local_socket(path: str | None) -> str | None:
    """``path`` if it is a run's socket on this machine that this process may connect to, else ``None``.

    For a client that may run on another machine (a Ray actor): the path was made by ``make_socket_dir()``
    on the server's machine, so it is used only when it is a socket here, in a directory whose marker
    says it was written on this host, in this pid and network namespace, and its directory is ours to
    enter; anything else (another machine, a node in a network namespace of its own standing for one,
    another mount namespace, another user) goes over TCP.
    """
    if path is None:
        return None
    directory = os.path.dirname(path)
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode) or not os.access(directory, os.X_OK):
            return None
    except OSError:
        return None
    marker = _read_marker(directory)
    if marker is None or not _written_here(marker) or marker["net_namespace"] != _namespace("net"):
        return None
    return path


def sweep_stale_socket_dirs(root: str) -> list[str]:
    """Remove the ``agl-ipc-*`` directories in ``root`` whose owner is dead; returns those removed."""
    removed = []
    with os.scandir(root) as entries:
        candidates = [entry.path for entry in entries if entry.name.startswith(_PREFIX)]
    for path in candidates[:_SWEEP_LIMIT]:
        if _is_stale(path) and _remove_stale(path):
            removed.append(path)
    if removed:
        _log.info("removed %d stale ipc socket directories in %s", len(removed), root)
    return removed


# -- the marker ---------------------------------------------------------------------------------------


def _owner() -> dict[str, Any]:
    me = psutil.Process()
    return {
        "kind": _MARKER_KIND,
        "pid": me.pid,
        "started": me.create_time(),
        "host": socket.gethostname(),
        "pid_namespace": _namespace("pid"),
        "net_namespace": _namespace("net"),
    }


def _namespace(kind: str) -> str:
    """Our namespace of ``kind``: pids mean nothing across pid namespaces (containers sharing a /tmp), and
    a process in another network namespace stands for another host (``local_socket``)."""
    try:
        return os.readlink(f"/proc/self/ns/{kind}")
    except OSError:
        return ""


def _write_marker(path: str) -> None:
    fd = os.open(
        os.path.join(path, OWNER_MARKER), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
    )
    with os.fdopen(fd, "w") as marker:
        json.dump(_owner(), marker)


def _read_marker(path: str) -> dict[str, Any] | None:
    """The marker in ``path`` if it is ours, exactly (a regular file, our keys and types), else ``None``."""
    try:
        fd = os.open(os.path.join(path, OWNER_MARKER), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, _MARKER_MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(text) > _MARKER_MAX_BYTES:
        return None
    try:
        marker = json.loads(text)
    except ValueError:
        return None
    expected = {
        "kind": str,
        "pid": int,
        "started": float,
        "host": str,
        "pid_namespace": str,
        "net_namespace": str,
    }
    if not isinstance(marker, dict) or set(marker) != set(expected) or marker["kind"] != _MARKER_KIND:
        return None
    if any(type(marker[key]) is not kind for key, kind in expected.items()):
        return None
    return marker


# -- the sweep ----------------------------------------------------------------------------------------


def _is_stale(path: str) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return False
    marker = _read_marker(path)
    if marker is None or not _written_here(marker):
        return False
    return not _alive(marker["pid"], marker["started"])


def _written_here(marker: dict[str, Any]) -> bool:
    """Whether a marker was written on this host, in this pid namespace (its pid means something here)."""
    return bool(marker["host"] == socket.gethostname() and marker["pid_namespace"] == _namespace("pid"))


def _alive(pid: int, started: float) -> bool:
    """Whether the process that wrote a marker still runs (when in doubt: yes)."""
    try:
        created: float = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:  # gone (psutil's ZombieProcess is one too: it will remove nothing again)
        return False
    except (psutil.Error, OSError, ValueError):  # e.g. access denied: keep what we cannot judge
        return True
    return abs(created - started) <= _START_TOLERANCE


def _remove_stale(path: str) -> bool:
    """Remove a stale directory if it holds nothing but our own entries (the socket, the marker)."""
    try:
        foreign = set(os.listdir(path)) - {SOCKET_NAME, OWNER_MARKER}
    except OSError:
        return False  # gone already (another sweeper), or not listable: not ours to judge
    if foreign:
        _log.warning("kept the stale ipc socket directory %s: it holds %s", path, sorted(foreign)[:5])
        return False
    for name in (SOCKET_NAME, OWNER_MARKER):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(os.path.join(path, name))
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return False  # another sweeper was first
    except OSError as exc:
        _log.warning("kept the stale ipc socket directory %s: %s", path, exc)
        return False
    return True
