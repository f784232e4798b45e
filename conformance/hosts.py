"""Test hosts: network namespaces a test run makes itself, joined by a private switch (section D).

The D contracts need runners on other hosts: network endpoints of their own whose processes the kit can
start, cut off and kill. ``NamespaceHosts(n)`` makes ``n`` of them on this machine. A host is a network
namespace with its loopback up and one veth interface, ``eth0``, holding its address; the other end of
each veth is a port of a bridge that lives in a namespace of its own (the switch). Nothing is plugged
into the machine's own namespace: a host has no route beyond the switch's subnet, and the root
namespace's interfaces, routes and firewall are never touched. Host addresses mean something only
inside the hosts (from the machine's own namespace they would be routed outside), so ``connect`` and
``reachable`` open their sockets inside a host.

Addresses. Each run takes one /24 of ``ADDRESS_RANGE`` (198.18.0.0/15, RFC 2544: set aside for network
tests, never routed on the Internet), chosen under a machine-wide lock so concurrent runs (pytest-xdist
workers) never share one; host ``h`` is the subnet's address ``h + 1``. Separate switches isolate runs
anyway; the unique subnet makes an address in a log name its run.

Cleanup. Namespaces are named ``agl-hosts-<owner pid>-<owner start time>-<subnet>-<sw|hN>``. On exit
(normal, exception, KeyboardInterrupt, or at interpreter exit) every process of every host is SIGKILLed,
found by its namespace (``ip netns pids``, not by remembered pids), and every namespace is deleted (its
veth ends go with it), and so is the temporary log directory. A run SIGKILLed itself leaves its
namespaces behind: ``sweep_stale_namespaces`` (also run on every entry) removes namespaces of that naming
whose owner is gone (psutil: no process with that pid, a zombie, or another process started at another
time), never those of a live owner, and the owner's log directory if it is in this temporary directory.

Making namespaces needs Linux, CAP_SYS_ADMIN and CAP_NET_ADMIN (root) and iproute2's ``ip``:
``probe_namespaces()`` says why not otherwise, and the D checks report n/a with that reason.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import functools
import ipaddress
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

__all__ = [
    "ADDRESS_RANGE",
    "MAX_HOSTS",
    "Availability",
    "HostProcess",
    "HostsError",
    "HostsUnavailable",
    "NamespaceHosts",
    "probe_namespaces",
    "sweep_stale_namespaces",
]

_log = logging.getLogger(__name__)

ADDRESS_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
"""Where the hosts' addresses come from: one /24 per run."""
MAX_HOSTS = 250
"""The most hosts one run may have (its /24 holds their addresses)."""

_SUBNETS = 2 ** (24 - ADDRESS_RANGE.prefixlen)
_PREFIX = "agl-hosts-"
_NAME = re.compile(r"^agl-hosts-(?P<pid>\d+)-(?P<start>\d+)-(?P<subnet>\d{3})-(?P<role>sw|h\d+)$")
_LOG_DIR = re.compile(r"^agl-hosts-(?P<pid>\d+)-(?P<start>\d+)-(?P<subnet>\d{3})-logs-\w+$")  # in TMPDIR
_NETNS_DIR = Path("/run/netns")  # where `ip netns` keeps its named namespaces (fixed in iproute2)
_LOCK_NAME = "agl-hosts.lock"
_START_TOLERANCE = 2.0  # seconds: two processes may read a start time differently after a clock step
_CLONE_NEWNET = 0x40000000
_NEEDED_CAPABILITIES = {21: "CAP_SYS_ADMIN", 12: "CAP_NET_ADMIN"}  # bit in CapEff -> name
_RETRY_PAUSE = 0.02  # between refused connection attempts, and between looks at a namespace's processes
_BRIDGE = "br0"


class HostsError(RuntimeError):
    """An operation on the test hosts failed; the message names the command or host, and why."""


class HostsUnavailable(HostsError):
    """Network namespaces cannot be made here; ``reason`` says why (the D checks report n/a with it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Availability:
    """Whether this machine and process can make test hosts; ``reason`` says why not."""

    available: bool
    reason: str = ""


# -- ip, namespaces, owners --------------------------------------------------------------------------------


def _run_ip(ip: str, args: Sequence[str], timeout: float) -> str:
    """``ip ARGS``'s stdout; ``HostsError`` naming the command and its stderr, or the bound it overran."""
    command = [ip, *args]
    try:
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise HostsError(f"`{shlex.join(command)}` did not finish within {timeout:g} s") from None
    except OSError as error:
        raise HostsError(f"`{shlex.join(command)}` could not start: {error}") from None
    if done.returncode != 0:
        stderr = done.stderr.strip() or "(no stderr)"
        raise HostsError(f"`{shlex.join(command)}` failed with exit status {done.returncode}: {stderr}")
    return done.stdout


def _namespaces(ip: str, timeout: float) -> list[str]:
    # Lines read "name" or "name (id: 3)".
    return [line.split()[0] for line in _run_ip(ip, ["netns", "list"], timeout).splitlines() if line.strip()]


def _namespace_pids(ip: str, namespace: str, timeout: float) -> list[int]:
    return [int(word) for word in _run_ip(ip, ["netns", "pids", namespace], timeout).split()]


def _kill_namespace(ip: str, namespace: str, timeout: float) -> list[int]:
    """SIGKILL every process in ``namespace`` until none is left (new children included); the pids killed."""
    deadline = time.monotonic() + timeout
    killed: list[int] = []
    while True:
        # Zombies are not listed (they have left every namespace), so an empty list means all are dead.
        pids = _namespace_pids(ip, namespace, timeout)
        if not pids:
            return killed
        if time.monotonic() > deadline:
            raise HostsError(f"processes {pids} in namespace {namespace} survive SIGKILL after {timeout:g} s")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if pid not in killed:
                killed.append(pid)
        time.sleep(_RETRY_PAUSE)


def _delete_namespace(ip: str, namespace: str, timeout: float) -> None:
    try:
        _run_ip(ip, ["netns", "delete", namespace], timeout)
    except HostsError:
        if (_NETNS_DIR / namespace).exists():
            raise  # gone already is what we wanted; anything else is a real failure


def _start_time(pid: int) -> int:
    return int(psutil.Process(pid).create_time())


def _owner_alive(pid: int, start: int) -> bool:
    """Whether the process that made a namespace still runs (a zombie or a reused pid does not count)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created = float(process.create_time())
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # cannot tell: keep its namespaces
    return abs(created - start) <= _START_TOLERANCE


def _lock_path() -> Path:
    # A fixed place every run on the machine agrees on (not TMPDIR, which a sandbox makes private).
    for directory in ("/run/lock", "/run", "/tmp"):
        if os.path.isdir(directory) and os.access(directory, os.W_OK):
            return Path(directory) / _LOCK_NAME
    return Path(tempfile.gettempdir()) / _LOCK_NAME


@contextlib.contextmanager
def _machine_lock(timeout: float) -> Iterator[None]:
    """The machine-wide lock under which runs sweep, choose a subnet and name their namespaces."""
    path = _lock_path()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise HostsError(f"cannot open the test hosts' lock {path}: {error}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HostsError(
                        f"could not lock {path} within {timeout:g} s (another run holds it)"
                    ) from None
                time.sleep(_RETRY_PAUSE)
        yield  # closing the fd releases the lock, also when this process dies
    finally:
        os.close(fd)


def _sweep(ip: str, timeout: float) -> tuple[list[str], list[str]]:
    """(namespaces removed, errors): every namespace of ours whose owner is gone, processes first.

    The log directories such owners made in this process's temporary directory go too.
    """
    removed: list[str] = []
    errors: list[str] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(tempfile.gettempdir()):
            match = _LOG_DIR.match(entry.name)
            if match and entry.is_dir() and not _owner_alive(int(match["pid"]), int(match["start"])):
                shutil.rmtree(entry.path, ignore_errors=True)
    for name in _namespaces(ip, timeout):
        match = _NAME.match(name)
        if match is None or _owner_alive(int(match["pid"]), int(match["start"])):
            continue
        try:
            _kill_namespace(ip, name, timeout)
            _delete_namespace(ip, name, timeout)
        except HostsError as error:
            errors.append(str(error))
        else:
            removed.append(name)
    return removed, errors


def sweep_stale_namespaces(*, timeout: float = 10.0) -> list[str]:
    """Remove the namespaces (and kill the processes) that runs whose owner died left behind; their names.

    Only namespaces named by this module whose owner process is gone are touched; ``HostsError`` names
    any that could not be removed.
    """
    ip = shutil.which("ip")
    reason = _unavailable_reason(ip)
    if reason is not None:
        raise HostsUnavailable(reason)
    assert ip is not None
    with _machine_lock(timeout):
        removed, errors = _sweep(ip, timeout)
    if errors:
        raise HostsError("could not remove stale test hosts: " + "; ".join(errors))
    return removed


# -- availability ------------------------------------------------------------------------------------------


def _missing_capabilities() -> list[str]:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            line = next(line for line in status if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return []  # cannot tell: let the attempt decide
    effective = int(line.split()[1], 16)
    return [name for bit, name in _NEEDED_CAPABILITIES.items() if not effective & (1 << bit)]


def _unavailable_reason(ip: str | None) -> str | None:
    """Why namespaces certainly cannot be made here, before trying; ``None`` when nothing says so."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux-only; this is {sys.platform}"
    if ip is None:
        return "no `ip` command (iproute2) on PATH: network namespaces cannot be made"
    missing = _missing_capabilities()
    if missing:
        return (
            f"this process lacks {' and '.join(missing)}, which making network namespaces needs "
            f"(euid {os.geteuid()}): run as root, or grant them "
            f"(docker: --cap-add SYS_ADMIN --cap-add NET_ADMIN)"
        )
    return None


def probe_namespaces() -> Availability:
    """Whether test hosts can be made here: checks the platform, ``ip`` and capabilities, then makes one."""
    try:
        with NamespaceHosts(1):
            pass
    except HostsUnavailable as error:
        return Availability(False, error.reason)
    except HostsError as error:
        return Availability(False, f"making a test host failed: {error}")
    return Availability(True)


@functools.cache
def _libc_setns() -> Callable[[int, int], int]:
    libc = ctypes.CDLL(None, use_errno=True)
    setns: Callable[[int, int], int] = libc.setns
    return setns


def _socket_in(namespace: str) -> socket.socket:
    """A TCP socket that lives in ``namespace``: made by a thread that entered it (setns is per thread)."""
    made: list[socket.socket | BaseException] = []

    def enter_and_make() -> None:
        try:
            fd = os.open(_NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc_setns()(fd, _CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns into {namespace}: {os.strerror(code)}")
            finally:
                os.close(fd)
            made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as error:
            made.append(error)
        # The thread ends here, still in the namespace: no other thread ever runs in it.

    thread = threading.Thread(target=enter_and_make, name=f"agl-hosts: socket in {namespace}")
    thread.start()
    thread.join()
    result = made[0]
    if isinstance(result, BaseException):
        raise result
    return result


# -- processes ---------------------------------------------------------------------------------------------


class HostProcess:
    """A process started on a test host by ``NamespaceHosts.run``; stdout and stderr go to files."""

    def __init__(
        self,
        host: int,
        argv: tuple[str, ...],
        popen: subprocess.Popen[bytes],
        stdout_path: Path,
        stderr_path: Path,
    ) -> None:
        self.host = host
        self.argv = argv
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self._popen = popen

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (``-N``: killed by signal N), else ``None``."""
        return self._popen.returncode

    def poll(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float) -> int:
        """The exit status; ``TimeoutError`` naming the process and its stderr if it outlives ``timeout``."""
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"{self!r} still runs after {timeout:g} s; stderr ends: {self.stderr()[-2000:]!r}"
            ) from None

    def send_signal(self, signum: int) -> None:
        """Signal this process only (a no-op once it has been reaped)."""
        self._popen.send_signal(signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"exit {self.returncode}"
        return f"<HostProcess pid {self.pid} on host {self.host}: {shlex.join(self.argv)} ({state})>"


# -- the hosts ---------------------------------------------------------------------------------------------


class NamespaceHosts:
    """``n_hosts`` test hosts on a private switch, made on entry and removed on exit (module docstring).

    ``log_dir``: where ``run`` writes each process's stdout and stderr, kept afterwards (default: a
    temporary directory removed on exit). ``command_timeout``: the bound of every ``ip`` call, of killing
    a host's processes and of reaping them.
    """

    def __init__(
        self,
        n_hosts: int,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        command_timeout: float = 10.0,
    ) -> None:
        if isinstance(n_hosts, bool) or not isinstance(n_hosts, int) or not 1 <= n_hosts <= MAX_HOSTS:
            raise ValueError(f"n_hosts must be an int from 1 to {MAX_HOSTS}; got {n_hosts!r}")
        if (
            isinstance(command_timeout, bool)
            or not isinstance(command_timeout, (int, float))
            or not math.isfinite(command_timeout)
            or command_timeout <= 0
        ):
            raise ValueError(
                f"command_timeout must be a finite number of seconds > 0; got {command_timeout!r}"
            )
        self.n_hosts = n_hosts
        self.command_timeout = float(command_timeout)
        self.subnet: ipaddress.IPv4Network | None = None
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._own_log_dir = False
        self._ip = ""
        self._switch = ""
        self._hosts: list[str] = []
        self._made: list[str] = []  # namespaces that exist, in the order they were made
        self._processes: list[HostProcess] = []
        self._cut: set[int] = set()
        self._lock = threading.Lock()
        self._owner = os.getpid()
        self._state = "new"  # new -> open -> closed

    # -- life cycle ----------------------------------------------------------------------------------------

    def __enter__(self) -> NamespaceHosts:
        if self._state != "new":
            raise HostsError(f"{self!r} can be entered once")
        self._state = "open"
        self._owner = os.getpid()
        try:
            self._make()
        except BaseException:
            self.close()
            raise
        atexit.register(self.close)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.close()
        except HostsError as error:
            if exc is None:
                raise
            _log.warning("%s (while handling %r)", error, exc)  # never mask the error that ended the block

    def _make(self) -> None:
        ip = shutil.which("ip")
        reason = _unavailable_reason(ip)
        if reason is not None:
            raise HostsUnavailable(reason)
        assert ip is not None
        self._ip = ip
        owner = f"{_PREFIX}{self._owner}-{_start_time(self._owner)}"
        with _machine_lock(self.command_timeout):
            _, errors = _sweep(ip, self.command_timeout)
            for error in errors:
                _log.warning("stale test hosts left in place: %s", error)
            used = {
                int(m["subnet"]) for name in _namespaces(ip, self.command_timeout) if (m := _NAME.match(name))
            }
            free = next((index for index in range(_SUBNETS) if index not in used), None)
            if free is None:
                raise HostsError(f"all {_SUBNETS} /24 subnets of {ADDRESS_RANGE} are taken by live runs")
            first = ADDRESS_RANGE.network_address + free * 256
            self.subnet = ipaddress.IPv4Network(f"{first}/24")
            run = f"{owner}-{free:03d}"
            self._switch = f"{run}-sw"
            self._hosts = [f"{run}-h{host}" for host in range(self.n_hosts)]
            try:
                self._ip_call("netns", "add", self._switch)
            except HostsError as error:
                raise HostsUnavailable(f"cannot make a network namespace: {error}") from None
            self._made.append(self._switch)
            for name in self._hosts:
                self._ip_call("netns", "add", name)
                self._made.append(name)
        self._wire()
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix=f"{run}-logs-"))
            self._own_log_dir = True
        else:
            self._log_dir.mkdir(parents=True, exist_ok=True)

    def _wire(self) -> None:
        assert self.subnet is not None
        switch = self._switch
        self._ip_call(
            "-n", switch, "link", "add", _BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0"
        )
        self._ip_call("-n", switch, "link", "set", _BRIDGE, "up")
        for host, name in enumerate(self._hosts):
            port = f"p{host}"
            # Made inside the switch with its peer placed straight into the host: never in the root namespace.
            self._ip_call(
                "-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name
            )
            self._ip_call("-n", switch, "link", "set", port, "master", _BRIDGE, "up")
            self._ip_call(
                "-n", name, "addr", "add", f"{self.address(host)}/{self.subnet.prefixlen}", "dev", "eth0"
            )
            self._ip_call("-n", name, "link", "set", "eth0", "up")
            self._ip_call("-n", name, "link", "set", "lo", "up")

    def close(self) -> None:
        """Kill every process on every host, delete every namespace and the log directory we made.

        Idempotent; each step runs to its end even if Ctrl+C interrupts it (the interrupt is re-raised
        afterwards). ``HostsError`` lists what could not be removed.
        """
        if os.getpid() != self._owner:
            return  # a forked child never tears down its parent's hosts
        with self._lock:  # a run() in flight finishes first, so its process is killed below
            if self._state == "closed":
                return
            self._state = "closed"
        atexit.unregister(self.close)
        errors: list[str] = []
        interrupted = False

        def finish(step: Callable[[], object]) -> None:
            nonlocal interrupted
            for _ in range(3):
                try:
                    step()
                    return
                except KeyboardInterrupt:
                    interrupted = True
                except HostsError as error:
                    errors.append(str(error))
                    return

        for name in self._hosts:
            if name in self._made:
                finish(functools.partial(_kill_namespace, self._ip, name, self.command_timeout))
        for process in self._processes:
            finish(functools.partial(self._reap, process))
        for name in reversed(self._made):
            finish(functools.partial(_delete_namespace, self._ip, name, self.command_timeout))
        if self._own_log_dir and self._log_dir is not None:
            finish(functools.partial(shutil.rmtree, self._log_dir, ignore_errors=True))
        if interrupted:
            raise KeyboardInterrupt
        if errors:
            raise HostsError("could not remove every test host: " + "; ".join(errors))

    def _reap(self, process: HostProcess) -> None:
        try:
            process.wait(self.command_timeout)
        except TimeoutError as error:
            raise HostsError(str(error)) from None

    # -- what a check uses ---------------------------------------------------------------------------------

    def address(self, host: int) -> str:
        """Host ``host``'s address on the switch (meaningful inside the hosts only)."""
        self._check_host(host)
        self._require_open()
        assert self.subnet is not None
        return str(self.subnet.network_address + host + 1)

    def namespace(self, host: int) -> str:
        """The name of host ``host``'s network namespace (``ip netns exec NAME ...`` works on it)."""
        self._check_host(host)
        self._require_open()
        return self._hosts[host]

    def run(
        self,
        host: int,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> HostProcess:
        """Start ``argv`` on host ``host`` in a session of its own; ``env`` replaces the environment (as in
        ``subprocess``; default: this process's). Its stdout and stderr go to files in the log directory.
        """
        namespace = self.namespace(host)
        command = list(argv)
        if not command or not all(isinstance(part, str) for part in command):
            raise ValueError(f"argv must be a non-empty sequence of strings; got {argv!r}")
        path = (os.environ if env is None else env).get("PATH", os.defpath)
        if "/" not in command[0] and shutil.which(command[0], path=path) is None:
            raise HostsError(f"cannot run {command[0]!r} on host {host}: not found on PATH {path!r}")
        with self._lock:
            self._require_open()
            assert self._log_dir is not None
            stem = (
                f"h{host}-{len(self._processes):03d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', Path(command[0]).name)}"
            )
            stdout_path, stderr_path = self._log_dir / f"{stem}.out", self._log_dir / f"{stem}.err"
            with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
                popen = subprocess.Popen(
                    [self._ip, "netns", "exec", namespace, *command],  # ip execs the command: same pid
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
            process = HostProcess(host, tuple(command), popen, stdout_path, stderr_path)
            self._processes.append(process)
        return process

    def pids(self, host: int) -> list[int]:
        """The processes in host ``host`` now, found by the namespace."""
        return _namespace_pids(self._ip, self.namespace(host), self.command_timeout)

    def kill_host(self, host: int) -> list[int]:
        """Host loss: SIGKILL every process in host ``host`` (children and orphans too) and reap ours.

        Returns the pids killed. The killed processes' sockets close, so peers may see a reset; for a
        silent loss (a machine that vanished), ``cut`` the host first.
        """
        killed = _kill_namespace(self._ip, self.namespace(host), self.command_timeout)
        for process in [p for p in self._processes if p.host == host]:
            self._reap(process)
        return killed

    def cut(self, host: int) -> None:
        """Partition host ``host``: the switch drops every frame to and from it; its processes keep running.

        The host's interface stays up (no carrier loss, no error from its own kernel): packets vanish,
        as in a network partition, so peers see timeouts, not resets. Its loopback still works.
        """
        self._ip_call("-n", self._switch_name(), "link", "set", f"p{self._checked(host)}", "nomaster")
        self._cut.add(host)

    def restore(self, host: int) -> None:
        """Heal ``cut``: host ``host`` is plugged into the switch again (a no-op if it was not cut)."""
        self._ip_call("-n", self._switch_name(), "link", "set", f"p{self._checked(host)}", "master", _BRIDGE)
        self._cut.discard(host)

    def is_cut(self, host: int) -> bool:
        return self._checked(host) in self._cut

    def connect(self, src: int, address: str, port: int, timeout: float) -> socket.socket:
        """A TCP connection from host ``src`` to ``address:port``, made inside that host (so no address
        outside the switch is ever dialled); ``OSError`` naming both ends. The caller closes it."""
        sock = _socket_in(self.namespace(src))
        try:
            sock.settimeout(timeout)
            sock.connect((address, port))
        except OSError as error:
            sock.close()
            raise OSError(
                error.errno or errno.ETIMEDOUT,
                f"host {src} ({self.address(src)}) cannot connect to {address}:{port}: "
                f"{error.strerror or error}",
            ) from None
        return sock

    def reachable(self, src: int, dst: int, port: int, within: float) -> bool:
        """Whether a TCP handshake from host ``src`` to ``port`` on host ``dst`` completes in ``within`` s."""
        return self._reach(src, dst, port, within) is None

    def wait_reachable(self, src: int, dst: int, port: int, within: float) -> float:
        """Wait for a TCP handshake from host ``src`` to host ``dst``'s ``port``; the seconds it took.

        ``TimeoutError`` naming both hosts, the endpoint, the bound and the last error if none completes.
        """
        started = time.monotonic()
        error = self._reach(src, dst, port, within)
        if error is not None:
            raise TimeoutError(
                f"no TCP handshake from host {src} to host {dst} ({self.address(dst)}:{port}) within "
                f"{within:g} s; last error: {error}"
            )
        return time.monotonic() - started

    def free_port(self, host: int) -> int:
        """A TCP port nothing listens on at host ``host`` (only this run's processes live there)."""
        with contextlib.closing(_socket_in(self.namespace(host))) as sock:
            sock.bind((self.address(host), 0))
            port: int = sock.getsockname()[1]
            return port

    # -- helpers -------------------------------------------------------------------------------------------

    def _reach(self, src: int, dst: int, port: int, within: float) -> str | None:
        """``None`` once a handshake completes within ``within`` s, else the last error."""
        address = self.address(dst)
        deadline = time.monotonic() + within
        last = f"no attempt fitted in {within:g} s"
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self.connect(src, address, port, remaining).close()
                return None
            except OSError as error:
                last = str(error)
            # A refused attempt fails at once (the listener may still be starting): look again shortly.
            time.sleep(min(_RETRY_PAUSE, max(0.0, deadline - time.monotonic())))
        return last

    def _ip_call(self, *args: str) -> str:
        return _run_ip(self._ip, args, self.command_timeout)

    def _check_host(self, host: int) -> None:
        if isinstance(host, bool) or not isinstance(host, int) or not 0 <= host < self.n_hosts:
            raise ValueError(
                f"host must be an int from 0 to {self.n_hosts - 1} (this run has {self.n_hosts} hosts); "
                f"got {host!r}"
            )

    def _checked(self, host: int) -> int:
        self._check_host(host)
        self._require_open()
        return host

    def _switch_name(self) -> str:
        self._require_open()
        return self._switch

    def _require_open(self) -> None:
        if self._state != "open" or not self._made:
            raise HostsError(f"{self!r} is not open: use it inside its with block")

    def __repr__(self) -> str:
        where = f"{self.subnet}" if self.subnet is not None else "no subnet yet"
        return f"<NamespaceHosts {self.n_hosts} host(s), {where}, {self._state}>"
