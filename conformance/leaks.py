"""Resource snapshots before and after ``execute()``, and the leak report naming what was left behind.

Runs inside the scenario process. ``take_snapshot`` records threads (names, daemon flag, native ids),
child processes recursively (pid, command line, zombie or not), open descriptors with their
``/proc/self/fd`` targets, sockets, RSS, the files under the scenario's private TMPDIR and the named
POSIX semaphores and shared memory blocks (``/dev/shm``) it has mapped.
``caller_state`` records what ``execute()`` must restore (R7): SIGINT/SIGTERM handlers, the signal
wake-up fd, the multiprocessing start method, the current event loop, the root logger, the excepthooks.
``Collector`` gathers ``ResourceWarning``s, never-awaited coroutines, unraisable exceptions and the
asyncio logger's complaints while the scenario runs, and keeps a ledger of the named semaphores and
shared memory blocks this process registers with multiprocessing's resource tracker (R4: a name still
registered and still in ``/dev/shm`` after ``execute()`` is a leak, attributed to this scenario even when
other processes on the machine use ``/dev/shm`` at the same time). ``settle`` polls the snapshot until
it is back to the baseline or the settle window ends, then builds the ``LeakReport``; ``parse_stderr``
reads the same complaints (and resource_tracker warnings) from the stderr of the whole group.

The stdlib's own long-lived helpers are noise, not leaks, but only when they are genuinely the stdlib's:
the resource tracker and forkserver processes (and their descriptors) are recognised by the pids and fds
held in the stdlib's singletons, the fd-passing thread by its ``resource_sharer`` object, the arenas the
shared-ctypes heap keeps for reuse by the heap's own list, and the multiprocessing temp directory by
this process's own ``tempdir`` setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from conformance.remote_resources import RemoteProbe, remote_leftovers
from conformance.scenarios import LeakReport

__all__ = [
    "Collector",
    "Snapshot",
    "caller_state",
    "compare",
    "counts",
    "parse_stderr",
    "settle",
    "stdlib_helper_pids",
    "take_snapshot",
]

_SHM_DIR = "/dev/shm"
_SETTLE_FIRST_POLL = 0.005
_SETTLE_MAX_POLL = 0.1


@dataclass(frozen=True)
class _Thread:
    native_id: int
    name: str
    daemon: bool | None  # None: a native thread the threading module does not know

    def describe(self) -> str:
        kind = "native" if self.daemon is None else ("daemon" if self.daemon else "non-daemon")
        return f"thread {self.name!r} ({kind}, tid {self.native_id})"


@dataclass(frozen=True)
class _Child:
    pid: int
    create_time: float
    cmdline: str
    zombie: bool

    def describe(self) -> str:
        return f"pid {self.pid} ({self.cmdline or '?'})" + (" zombie" if self.zombie else "")


@dataclass
class Snapshot:
    """What one process holds at one moment (see the module docstring)."""

    threads: dict[int, _Thread] = field(default_factory=dict)
    children: dict[tuple[int, float], _Child] = field(default_factory=dict)
    fds: dict[int, str] = field(default_factory=dict)
    rss: int = 0
    temp_files: frozenset[str] = frozenset()
    loops: frozenset[int] = frozenset()  # ids of event loops alive at the time (before only)
    shm: frozenset[str] = frozenset()  # /dev/shm paths mapped and not unlinked


def _thread_name(tid: int) -> str:
    try:
        with open(f"/proc/self/task/{tid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def _threads() -> dict[int, _Thread]:
    known: dict[int, _Thread] = {}
    for thread in threading.enumerate():
        native = getattr(thread, "native_id", None)
        if native is not None:
            known[native] = _Thread(native, thread.name, thread.daemon)
    try:
        tids = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return known
    for tid in tids:
        if tid not in known:
            known[tid] = _Thread(tid, _thread_name(tid), None)
    return {tid: info for tid, info in known.items() if tid in tids}


def _direct_children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return found


def _child_info(pid: int) -> _Child | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    # Fields after the parenthesised command name: state is the first, starttime the 20th.
    rest = stat.rsplit(")", 1)[1].split()
    return _Child(pid, float(rest[19]), cmdline[:300], rest[0] == "Z")


def _children(pid: int) -> dict[tuple[int, float], _Child]:
    found: dict[tuple[int, float], _Child] = {}
    stack = _direct_children(pid)
    while stack:
        child = stack.pop()
        info = _child_info(child)
        if info is None:
            continue
        found[(info.pid, info.create_time)] = info
        stack.extend(_direct_children(child))
    return found


def _fds() -> dict[int, str]:
    found: dict[int, str] = {}
    try:
        entries = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for entry in entries:
        with contextlib.suppress(OSError):
            found[int(entry)] = os.readlink(f"/proc/self/fd/{entry}")
    return found


def _rss() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _shm_mappings() -> frozenset[str]:
    """``/dev/shm`` files this process maps whose names still exist (sem_open and shm_open map them)."""
    found: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/self/maps") as handle:
        for line in handle:
            fields = line.split(maxsplit=5)
            path = fields[5].strip() if len(fields) > 5 else ""
            # An unlinked file shows as "... (deleted)": the stdlib heap's arenas do that on purpose.
            if path.startswith(_SHM_DIR + "/") and not path.endswith(" (deleted)"):
                found.add(path)
    return frozenset(found)


def _temp_files(tmpdir: str | None) -> frozenset[str]:
    if not tmpdir:
        return frozenset()
    found: set[str] = set()
    for root, dirs, files in os.walk(tmpdir):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(root, name), tmpdir))
    return frozenset(found)


def _event_loops() -> Iterator[asyncio.AbstractEventLoop]:
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.AbstractEventLoop):
            yield obj


def take_snapshot(tmpdir: str | None = None, *, loops: bool = False) -> Snapshot:
    """Snapshot this process; ``loops`` also records the event loops alive now (costly: a gc scan)."""
    return Snapshot(
        threads=_threads(),
        children=_children(os.getpid()),
        fds=_fds(),
        rss=_rss(),
        temp_files=_temp_files(tmpdir),
        loops=frozenset(id(loop) for loop in _event_loops()) if loops else frozenset(),
        shm=_shm_mappings(),
    )


def counts(snapshot: Snapshot) -> dict[str, int]:
    """The figures R6 tracks across repeats (the stdlib's long-lived helpers are not counted)."""
    helper_pids = stdlib_helper_pids()
    helper_fds = _stdlib_helper_fds()
    helper_threads = _stdlib_helper_threads()
    return {
        "threads": sum(1 for tid in snapshot.threads if tid not in helper_threads),
        "fds": sum(1 for fd in snapshot.fds if fd not in helper_fds),
        "children": sum(1 for child in snapshot.children.values() if child.pid not in helper_pids),
        "rss": snapshot.rss,
    }


# -- the stdlib's own helpers ------------------------------------------------------------------------


def stdlib_helper_pids() -> set[int]:
    """Pids of this process's resource tracker and forkserver (long-lived by design)."""
    pids: set[int] = set()
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    pid = getattr(getattr(tracker, "_resource_tracker", None), "_pid", None)
    if isinstance(pid, int):
        pids.add(pid)
    forkserver = sys.modules.get("multiprocessing.forkserver")
    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if isinstance(pid, int):
        pids.add(pid)
    return pids


def _stdlib_helper_fds() -> set[int]:
    fds: set[int] = set()
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    fd = getattr(getattr(tracker, "_resource_tracker", None), "_fd", None)
    if isinstance(fd, int):
        fds.add(fd)
    forkserver = sys.modules.get("multiprocessing.forkserver")
    fd = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_alive_fd", None)
    if isinstance(fd, int):
        fds.add(fd)
    sharer = getattr(sys.modules.get("multiprocessing.resource_sharer"), "_resource_sharer", None)
    # The shared-ctypes heap keeps its arenas (an unlinked /dev/shm file and the mmap's duplicate of
    # its fd) for reuse for the process's lifetime: both fds point at the arena's file.
    heap = getattr(getattr(sys.modules.get("multiprocessing.heap"), "BufferWrapper", None), "_heap", None)
    arena_targets = set()
    for arena in getattr(heap, "_arenas", ()) or ():
        fd = getattr(arena, "fd", -1)
        if isinstance(fd, int) and fd >= 0:
            with contextlib.suppress(OSError):
                arena_targets.add(os.readlink(f"/proc/self/fd/{fd}"))
    if arena_targets:
        for entry, target in _fds().items():
            if target in arena_targets:
                fds.add(entry)
    # Listener -> SocketListener -> socket: the fd-passing thread's listening socket.
    socket = getattr(getattr(getattr(sharer, "_listener", None), "_listener", None), "_socket", None)
    with contextlib.suppress(Exception):
        if socket is not None:
            fds.add(socket.fileno())
    return fds


def _stdlib_helper_threads() -> set[int]:
    sharer = getattr(sys.modules.get("multiprocessing.resource_sharer"), "_resource_sharer", None)
    thread = getattr(sharer, "_thread", None)
    native = getattr(thread, "native_id", None)
    return {native} if isinstance(native, int) else set()


def _stdlib_temp_dir(tmpdir: str) -> str | None:
    """This process's multiprocessing temp dir (``pymp-*``), relative to ``tmpdir``; removed at exit."""
    path = multiprocessing.current_process()._config.get("tempdir")  # type: ignore[attr-defined]
    if not isinstance(path, str):
        return None
    relative = os.path.relpath(path, tmpdir)
    return None if relative.startswith("..") else relative


# -- caller state (R7) ---------------------------------------------------------------------------------


def _describe_handler(handler: Any) -> str:
    if handler is signal.SIG_DFL:
        return "SIG_DFL"
    if handler is signal.SIG_IGN:
        return "SIG_IGN"
    if handler is signal.default_int_handler:
        return "default_int_handler"
    if handler is None:
        return "None (not installed from Python)"
    return f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', repr(handler))}"


def _current_loop() -> Any:
    """The loop set as current for this thread (without creating one, unlike get_event_loop())."""
    policy = asyncio.get_event_loop_policy()
    local = getattr(policy, "_local", None)
    return getattr(local, "_loop", None)


def caller_state() -> dict[str, tuple[Any, str]]:
    """What ``execute()`` must leave as it found it: name -> (object to compare by identity, description)."""
    state: dict[str, tuple[Any, str]] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        state[f"{signal.Signals(signum).name} handler"] = (handler, _describe_handler(handler))
    if threading.current_thread() is threading.main_thread():
        wakeup = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(wakeup)
        state["signal wakeup fd"] = (wakeup, str(wakeup))
    method = multiprocessing.get_start_method(allow_none=True)
    # Asking for the start method fixes the default; only a different method is a change.
    effective = method or multiprocessing.get_all_start_methods()[0]
    state["multiprocessing start method"] = (effective, effective)
    loop = _current_loop()
    closed = loop.is_closed() if loop is not None else None
    state["current event loop"] = (loop, "none" if loop is None else f"{loop!r} (closed={closed})")
    running = asyncio._get_running_loop()
    state["running event loop"] = (running, "none" if running is None else repr(running))
    root = logging.getLogger()
    state["root logger level"] = (root.level, logging.getLevelName(root.level))
    handlers = tuple(root.handlers)
    state["root logger handlers"] = (handlers, repr(list(handlers)))
    state["logging disable level"] = (logging.root.manager.disable, str(logging.root.manager.disable))
    state["sys.excepthook"] = (sys.excepthook, _describe_handler(sys.excepthook))
    state["threading.excepthook"] = (threading.excepthook, _describe_handler(threading.excepthook))
    state["sys.stdout"] = (sys.stdout, repr(sys.stdout))
    state["sys.stderr"] = (sys.stderr, repr(sys.stderr))
    return state


def _same(left: Any, right: Any) -> bool:
    if left is right:
        return True
    if isinstance(left, (int, str)) and isinstance(right, (int, str)):
        return left == right
    if isinstance(left, tuple) and isinstance(right, tuple):
        return len(left) == len(right) and all(a is b for a, b in zip(left, right, strict=True))
    return False


def _caller_state_changes(before: dict[str, tuple[Any, str]], after: dict[str, tuple[Any, str]]) -> list[str]:
    changes = []
    for name, (value, description) in before.items():
        now = after.get(name)
        if now is None:
            continue
        if not _same(value, now[0]):
            changes.append(f"{name}: was {description}, now {now[1]}")
    return changes


# -- warnings, unraisable exceptions, asyncio complaints -----------------------------------------------


class _AsyncioComplaints(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._sink.append(record.getMessage().splitlines()[0][:300])


class Collector:
    """Captures ResourceWarnings, never-awaited coroutines, unraisable exceptions and asyncio errors.

    Use as a context manager around ``execute()`` and the settle window, in the scenario process's
    main thread. Warnings from every thread of the process land here (the warnings machinery is
    process-global); child processes' complaints arrive through stderr (``parse_stderr``).
    """

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.asyncio: list[str] = []
        self._recorded: list[warnings.WarningMessage] = []
        self._stack = contextlib.ExitStack()
        self._named_lock = threading.Lock()
        self._named: dict[tuple[str, str], int] = {}  # (name, rtype) -> registrations not undone

    def __enter__(self) -> Collector:
        self._recorded = self._stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always", ResourceWarning)
        warnings.simplefilter("always", RuntimeWarning)
        previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        self._stack.callback(setattr, sys, "unraisablehook", previous_hook)
        logger = logging.getLogger("asyncio")
        handler = _AsyncioComplaints(self.asyncio)
        logger.addHandler(handler)
        propagate = logger.propagate
        logger.propagate = False  # reported here, not again through stderr
        self._stack.callback(setattr, logger, "propagate", propagate)
        self._stack.callback(logger.removeHandler, handler)
        self._watch_resource_tracker()
        return self

    def _watch_resource_tracker(self) -> None:
        # SemLock and SharedMemory look ``register``/``unregister`` up on the module at each call, so
        # wrapping the module's functions sees every named resource this process creates or unlinks.
        from multiprocessing import resource_tracker

        register, unregister = resource_tracker.register, resource_tracker.unregister

        def counted(delta: int, forward: Any) -> Any:
            def call(name: str, rtype: str) -> None:
                with self._named_lock:
                    key = (name, rtype)
                    self._named[key] = self._named.get(key, 0) + delta
                forward(name, rtype)

            return call

        resource_tracker.register = counted(1, register)
        resource_tracker.unregister = counted(-1, unregister)
        self._stack.callback(setattr, resource_tracker, "register", register)
        self._stack.callback(setattr, resource_tracker, "unregister", unregister)

    def named_leftovers(self) -> list[str]:
        """Named semaphores and shared memory registered while watching, never unlinked, still present."""
        with self._named_lock:
            outstanding = sorted(key for key, count in self._named.items() if count > 0)
        found: list[str] = []
        for name, rtype in outstanding:
            path = _shm_path(name, rtype)
            if path is None or os.path.exists(path) or not os.path.isdir(_SHM_DIR):
                what = "named semaphore" if rtype == "semaphore" else rtype.replace("_", " ")
                where = f" ({path})" if path else ""
                found.append(f"{what} {name}{where} created during execute() and never unlinked")
        return found

    def __exit__(self, *exc: object) -> None:
        self.harvest()
        self._stack.close()

    def _unraisable(self, unraisable: Any) -> None:
        exc = unraisable.exc_value
        what = f"{type(exc).__name__}: {exc}" if exc is not None else str(unraisable.exc_type)
        where = unraisable.err_msg or "Exception ignored in"
        self.warnings.append(f"unraisable {what} ({where}: {unraisable.object!r})"[:400])

    def harvest(self) -> None:
        """Move recorded warnings of interest into ``warnings`` (others are not this kit's business)."""
        for message in self._recorded:
            category = message.category
            text = str(message.message)
            if issubclass(category, ResourceWarning) or (
                issubclass(category, RuntimeWarning) and "never awaited" in text
            ):
                self.warnings.append(f"{category.__name__}: {text}"[:400])
        self._recorded.clear()


def _shm_path(name: str, rtype: str) -> str | None:
    if rtype == "semaphore":
        return f"{_SHM_DIR}/sem.{name.lstrip('/')}"
    if rtype == "shared_memory":
        return f"{_SHM_DIR}/{name.lstrip('/')}"
    return None


_STDERR_PATTERNS = (
    # (not the echoed source line of the warning, which has the "%d" format in it)
    ("ipc", re.compile(r"resource_tracker: (?!.*%[ds]).*")),
    ("warnings", re.compile(r"ResourceWarning: .*")),
    ("warnings", re.compile(r"RuntimeWarning: coroutine .* was never awaited")),
    ("warnings", re.compile(r"^Exception ignored in: .*")),
    ("asyncio", re.compile(r"Task was destroyed but it is pending!.*")),
    ("asyncio", re.compile(r"Task exception was never retrieved.*")),
    ("asyncio", re.compile(r"Unclosed .*")),
)


def parse_stderr(text: str) -> dict[str, list[str]]:
    """Complaints of the group's processes in their stderr: ``ipc``, ``warnings``, ``asyncio`` lines."""
    found: dict[str, list[str]] = {"ipc": [], "warnings": [], "asyncio": []}
    for line in text.splitlines():
        for category, pattern in _STDERR_PATTERNS:
            match = pattern.search(line)
            if match:
                entry = match.group(0).strip()[:400]
                if entry not in found[category]:
                    found[category].append(entry)
                break
    return found


# -- comparison and settling ---------------------------------------------------------------------------


def compare(before: Snapshot, after: Snapshot, tmpdir: str | None = None) -> LeakReport:
    """What ``after`` holds beyond ``before``, minus the stdlib's own helpers, each entry named."""
    helper_threads = _stdlib_helper_threads()
    current = threading.get_native_id()
    threads = tuple(
        info.describe()
        for tid, info in sorted(after.threads.items())
        if tid not in before.threads and tid not in helper_threads and tid != current
    )
    helper_pids = stdlib_helper_pids()
    processes: list[str] = []
    zombies: list[str] = []
    for key, child in sorted(after.children.items()):
        if key in before.children or child.pid in helper_pids:
            continue
        (zombies if child.zombie else processes).append(child.describe())
    helper_fds = _stdlib_helper_fds()
    new_fds = {
        fd: target
        for fd, target in after.fds.items()
        if before.fds.get(fd) != target and fd not in helper_fds
    }
    sockets = _describe_sockets({fd for fd, target in new_fds.items() if target.startswith("socket:")})
    fds = tuple(
        f"fd {fd} -> {target}" for fd, target in sorted(new_fds.items()) if not target.startswith("socket:")
    )
    temp: tuple[str, ...] = ()
    if tmpdir:
        own = _stdlib_temp_dir(tmpdir)
        temp = tuple(
            sorted(
                path
                for path in after.temp_files - before.temp_files
                if own is None or (path != own and not path.startswith(own + os.sep))
            )
        )
    return LeakReport(
        threads=threads,
        processes=tuple(processes),
        zombies=tuple(zombies),
        fds=fds,
        sockets=sockets,
        temp_files=temp,
        rss_growth_bytes=after.rss - before.rss,
    )


def _describe_sockets(fds: set[int]) -> tuple[str, ...]:
    if not fds:
        return ()
    described: dict[int, str] = {}
    with contextlib.suppress(Exception):
        import psutil

        for conn in psutil.Process().net_connections(kind="all"):
            if conn.fd in fds:
                local = f"{conn.laddr.ip}:{conn.laddr.port}" if hasattr(conn.laddr, "ip") else str(conn.laddr)
                remote = f" -> {conn.raddr.ip}:{conn.raddr.port}" if hasattr(conn.raddr, "ip") else ""
                family = {
                    2: "tcp4" if conn.type == 1 else "udp4",
                    10: "tcp6" if conn.type == 1 else "udp6",
                }.get(int(conn.family), "unix")
                status = f" {conn.status}" if conn.status and conn.status != "NONE" else ""
                described[conn.fd] = f"{family} {local or '(unnamed)'}{remote}{status} (fd {conn.fd})"
    return tuple(described.get(fd, f"socket fd {fd}") for fd in sorted(fds))


def _transient_empty(report: LeakReport) -> bool:
    return not (
        report.threads
        or report.processes
        or report.zombies
        or report.fds
        or report.sockets
        or report.temp_files
    )


def settle(
    before: Snapshot,
    *,
    window: float,
    tmpdir: str | None = None,
    collector: Collector | None = None,
    state_before: dict[str, tuple[Any, str]] | None = None,
    state_after: dict[str, tuple[Any, str]] | None = None,
    remote: RemoteProbe | None = None,
) -> tuple[LeakReport, Snapshot]:
    """Poll until nothing is left beyond ``before`` or ``window`` seconds pass; the final report.

    ``remote``: the strategy's probe of resources outside this process tree (``remote_resources``);
    what it still reports at the end is a leaked process.

    Cheap when clean: one snapshot. The asyncio scan (pending tasks, unclosed loops, after a gc pass that
    makes destroyed-pending tasks and unclosed transports complain) runs once, at the end.
    """
    deadline = time.monotonic() + window
    delay = _SETTLE_FIRST_POLL
    while True:
        after = take_snapshot(tmpdir)
        report = compare(before, after, tmpdir)
        remote_entries = remote_leftovers(remote)
        if (_transient_empty(report) and not remote_entries) or time.monotonic() >= deadline:
            break
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, _SETTLE_MAX_POLL)
    asyncio_entries = _asyncio_leftovers(before)  # (its gc pass also finalises dropped semaphores)
    warnings_entries: list[str] = []
    ipc_entries = collector.named_leftovers() if collector is not None else []
    # Mapped by this process, created by any means (the ledger sees only the stdlib's own objects).
    ipc_entries += [
        f"{path} created during execute(), still mapped and never unlinked"
        for path in sorted(_shm_mappings() - before.shm)
        if not any(f"({path})" in entry for entry in ipc_entries)
    ]
    if collector is not None:
        collector.harvest()
        warnings_entries = list(dict.fromkeys(collector.warnings))
        asyncio_entries = list(dict.fromkeys(collector.asyncio)) + asyncio_entries
    changes = (
        _caller_state_changes(state_before, state_after)
        if state_before is not None and state_after is not None
        else []
    )
    return (
        LeakReport(
            threads=report.threads,
            processes=report.processes + tuple(remote_entries),
            zombies=report.zombies,
            fds=report.fds,
            sockets=report.sockets,
            temp_files=report.temp_files,
            warnings=tuple(warnings_entries),
            asyncio=tuple(asyncio_entries),
            ipc=tuple(ipc_entries),
            caller_state=tuple(changes),
            rss_growth_bytes=report.rss_growth_bytes,
        ),
        after,
    )


def _asyncio_leftovers(before: Snapshot) -> list[str]:
    gc.collect()
    found: list[str] = []
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.AbstractEventLoop):
            if id(obj) not in before.loops and not obj.is_closed():
                found.append(f"event loop not closed: {obj!r}"[:300])
        elif isinstance(obj, asyncio.Task) and not obj.done():
            found.append(f"task still pending: {obj!r}"[:300])
    return found
