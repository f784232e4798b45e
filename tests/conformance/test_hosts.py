"""The test hosts of section D: real network namespaces on a private switch, made and removed by the run.

Every test that needs namespaces makes them for real (CI runs as root); where they cannot be made the
tests are skipped with the probe's reason, except under CI, where that is a failure. Waits are TCP
handshakes or output handshakes with generous bounds; the only timed waits are the bounded negative
checks of a partition (no handshake within 1 s).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from conformance.hosts import (
    ADDRESS_RANGE,
    HostProcess,
    HostsError,
    HostsUnavailable,
    NamespaceHosts,
    _run_ip,
    probe_namespaces,
    sweep_stale_namespaces,
)

HANG = 10.0  # generous bound of every wait that should end at once
REPO = Path(__file__).resolve().parents[2]

# Echoes every connection's bytes back, one connection at a time: argv = address port.
ECHO_SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
while True:
    conn, _ = server.accept()
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)
"""


@pytest.fixture(scope="module")
def namespaces() -> None:
    availability = probe_namespaces()
    if not availability.available:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to make network namespaces: {availability.reason}")
        pytest.skip(availability.reason)


@pytest.fixture
def hosts(namespaces: None) -> Iterator[NamespaceHosts]:
    with NamespaceHosts(2) as made:
        yield made


def _serve_echo(hosts: NamespaceHosts, host: int) -> tuple[HostProcess, int]:
    port = hosts.free_port(host)
    server = hosts.run(host, [sys.executable, "-c", ECHO_SERVER, hosts.address(host), str(port)])
    return server, port


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _our_namespaces() -> list[str]:
    listing = _run_ip("ip", ["netns", "list"], HANG)
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def _root_namespace_state() -> dict[str, str]:
    """What the harness must never change: the machine's own interfaces, addresses and routes."""
    commands = {
        "links": ["ip", "-o", "link", "show"],
        "addresses": ["ip", "-o", "addr", "show"],
        "routes": ["ip", "route", "show", "table", "all"],
    }
    return {
        name: subprocess.run(command, capture_output=True, text=True, check=True, timeout=HANG).stdout
        for name, command in commands.items()
    }


def _python(code: str, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """``python -c code args`` from the project root, bounded, its output captured."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=HANG * 3,
        cwd=REPO,
        **options,
    )


def _fake_ip(directory: Path, body: str) -> Path:
    """An executable ``ip`` shell script in ``directory`` that runs ``body``."""
    fake = directory / "ip"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for_lines(process: HostProcess, count: int) -> list[str]:
    """The process's first ``count`` stdout lines, once it has printed them (its handshake)."""
    deadline = time.monotonic() + HANG
    while len(lines := process.stdout().splitlines()) < count:
        assert process.poll() is None, f"{process!r} ended early: {process.stderr()}"
        assert time.monotonic() < deadline, f"{process!r} printed only {lines}"
        time.sleep(0.01)
    return lines


# -- D: reachability, partition, host loss -----------------------------------------------------------------


def test_hosts_for_D_reach_each_other_over_tcp(hosts: NamespaceHosts) -> None:
    addresses = [hosts.address(host) for host in range(2)]
    assert len(set(addresses)) == 2
    assert hosts.subnet is not None and hosts.subnet.subnet_of(ADDRESS_RANGE)
    assert all(ipaddress.ip_address(address) in hosts.subnet for address in addresses)
    servers = [_serve_echo(hosts, host) for host in range(2)]
    for src, dst in ((0, 1), (1, 0)):
        port = servers[dst][1]
        hosts.wait_reachable(src, dst, port, HANG)
        with hosts.connect(src, hosts.address(dst), port, HANG) as sock:
            sock.sendall(b"ping from %d" % src)
            assert _recv_exactly(sock, 11) == b"ping from %d" % src
            assert sock.getsockname()[0] == hosts.address(src)
    # Each host's loopback is up and its own.
    assert hosts.reachable(1, 1, servers[1][1], HANG)
    with pytest.raises(OSError, match="Connection refused"):
        hosts.connect(0, "127.0.0.1", servers[1][1], HANG)


def test_no_route_leads_outside_the_switch(hosts: NamespaceHosts) -> None:
    # TEST-NET-1 stands for any address beyond the switch: no route, so it fails at once.
    with pytest.raises(OSError, match="unreachable") as error:
        hosts.connect(0, "192.0.2.1", 80, HANG)
    assert error.value.errno == 101  # ENETUNREACH
    assert "host 0" in str(error.value) and "192.0.2.1:80" in str(error.value)
    routes = _run_ip("ip", ["-n", hosts.namespace(0), "route", "show", "table", "all"], HANG)
    assert "default" not in routes
    links = _run_ip("ip", ["-n", hosts.namespace(0), "-o", "link", "show"], HANG)
    assert [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()] == ["lo", "eth0"]


def test_partition_for_D3_blocks_both_ways_and_restore_heals(hosts: NamespaceHosts) -> None:
    (server0, port0), (server1, port1) = _serve_echo(hosts, 0), _serve_echo(hosts, 1)
    hosts.wait_reachable(0, 1, port1, HANG)
    hosts.wait_reachable(1, 0, port0, HANG)
    with hosts.connect(0, hosts.address(1), port1, HANG) as sock:
        sock.sendall(b"before")
        assert _recv_exactly(sock, 6) == b"before"
        hosts.cut(1)
        assert hosts.is_cut(1)
        sock.sendall(b"during")  # dropped by the switch, retransmitted by TCP: no reset, no error
        assert not hosts.reachable(0, 1, port1, within=1.0)
        assert not hosts.reachable(1, 0, port0, within=1.0)
        assert server1.poll() is None and server0.poll() is None  # a partition kills nothing
        assert hosts.reachable(1, 1, port1, HANG)  # the cut host still talks to itself
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(6)  # nothing crossed the cut
        hosts.restore(1)
        assert not hosts.is_cut(1)
        sock.settimeout(HANG)
        assert _recv_exactly(sock, 6) == b"during"  # the same connection carries on
    hosts.wait_reachable(0, 1, port1, HANG)
    hosts.wait_reachable(1, 0, port0, HANG)


# Reports its pid, a child's, a grandchild's, and an orphan's (its parent leaves at once, so only the
# namespace still knows it), then everyone sleeps.
PROCESS_TREE = """
import os, time
def report(tag):
    # One write of a few bytes: atomic on a pipe, so the four processes' lines never interleave.
    os.write(1, f"{tag} {os.getpid()}\\n".encode())
report("parent")
if os.fork() == 0:
    report("child")
    if os.fork() == 0:
        report("grandchild")
    time.sleep(600)
    os._exit(0)
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        report("orphan")
        time.sleep(600)
    os._exit(0)
time.sleep(600)
"""


def test_host_loss_for_D2_kills_the_whole_process_tree_found_by_its_namespace(hosts: NamespaceHosts) -> None:
    bystander = hosts.run(0, ["sleep", "600"])
    tree = hosts.run(1, [sys.executable, "-c", PROCESS_TREE])
    pids = {tag: int(pid) for tag, pid in (line.split() for line in _wait_for_lines(tree, 4))}
    assert set(pids) == {"parent", "child", "grandchild", "orphan"}
    assert psutil.Process(pids["orphan"]).ppid() != pids["parent"]
    assert set(pids.values()) <= set(hosts.pids(1))
    killed = hosts.kill_host(1)
    assert set(pids.values()) <= set(killed)
    assert all(_dead(pid) for pid in pids.values()), {tag: _dead(pid) for tag, pid in pids.items()}
    assert tree.returncode == -signal.SIGKILL
    assert hosts.pids(1) == []
    assert bystander.poll() is None  # another host is untouched
    assert hosts.pids(0) == [bystander.pid]


# -- processes ---------------------------------------------------------------------------------------------


def test_run_captures_output_and_honours_env_and_cwd(namespaces: None, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    script = "import os, sys; print(os.environ['SIDE'], os.getcwd()); print('to stderr', file=sys.stderr)"
    with NamespaceHosts(1, log_dir=logs) as hosts:
        process = hosts.run(0, [sys.executable, "-c", script], env={"SIDE": "runner"}, cwd=tmp_path)
        assert process.wait(HANG) == 0
        assert process.stdout() == f"runner {tmp_path}\n"
        assert process.stderr() == "to stderr\n"
        assert process.stdout_path.parent == logs
        with pytest.raises(TimeoutError, match=r"still runs after 0\.1 s") as error:
            hosts.run(0, ["sleep", "600"]).wait(0.1)
        assert "on host 0" in str(error.value) and "sleep 600" in str(error.value)
    assert process.stdout_path.exists()  # a log directory the caller gave is kept


def test_cleanup_after_exit_kills_processes_and_removes_namespaces_and_logs(namespaces: None) -> None:
    before = _root_namespace_state()
    for ending in ("normal", "exception", "keyboard-interrupt"):
        expected: type[BaseException] | None = {
            "normal": None,
            "exception": RuntimeError,
            "keyboard-interrupt": KeyboardInterrupt,
        }[ending]
        with contextlib.ExitStack() as stack:
            if expected is not None:
                stack.enter_context(pytest.raises(expected))
            with NamespaceHosts(2) as hosts:
                names = [hosts.namespace(host) for host in range(2)]
                assert set(names) <= set(_our_namespaces())
                sleeper = hosts.run(1, ["sleep", "600"])
                if ending == "exception":
                    raise RuntimeError("the check failed")
                if ending == "keyboard-interrupt":
                    raise KeyboardInterrupt
        left = [name for name in _our_namespaces() if name.startswith(f"agl-hosts-{os.getpid()}-")]
        assert left == [], ending
        assert sleeper.returncode == -signal.SIGKILL, ending
        assert not sleeper.stdout_path.parent.exists(), ending
    assert _root_namespace_state() == before  # no veth, address or route ever appeared out here


def test_concurrent_runs_get_their_own_subnet_and_switch(namespaces: None) -> None:
    with NamespaceHosts(1) as first, NamespaceHosts(1) as second:
        assert first.subnet != second.subnet
        assert first.namespace(0) != second.namespace(0)
        _, port = _serve_echo(second, 0)
        second.wait_reachable(0, 0, port, HANG)
        with pytest.raises(OSError, match="unreachable"):
            first.connect(0, second.address(0), port, HANG)


# -- sweeping what a killed run left -----------------------------------------------------------------------

# Makes hosts and holds them until stdin closes; with "orphan", leaves a process on host 1.
HOLDER = """
import json, sys
from conformance.hosts import NamespaceHosts
with NamespaceHosts(2) as hosts:
    orphan = hosts.run(1, ["sleep", "600"]) if sys.argv[1] == "orphan" else None
    print(json.dumps({
        "names": [hosts.namespace(h) for h in range(2)],
        "orphan": orphan and orphan.pid,
        "logs": orphan and str(orphan.stdout_path.parent),
    }), flush=True)
    sys.stdin.read()
"""


def _holder(kind: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert holder.stdout is not None
    return holder, json.loads(holder.stdout.readline())


def test_sweep_removes_a_killed_runs_namespaces_and_keeps_a_live_owners(namespaces: None) -> None:
    live, live_info = _holder("plain")
    stale, stale_info = _holder("orphan")
    start = int(psutil.Process().create_time())
    reused_pid = f"agl-hosts-{os.getpid()}-{start - 1000}-511-sw"  # our pid, another process's start
    not_ours = f"agl-hosts-manual-{os.getpid()}"
    try:
        stale.kill()
        stale.wait(HANG)
        for name in (reused_pid, not_ours):
            _run_ip("ip", ["netns", "add", name], HANG)
        orphan = int(str(stale_info["orphan"]))
        listed = set(_our_namespaces())
        assert set(stale_info["names"]) <= listed  # type: ignore[arg-type]
        assert psutil.pid_exists(orphan) and not _dead(orphan)
        stale_logs = Path(str(stale_info["logs"]))
        assert stale_logs.is_dir()

        removed = sweep_stale_namespaces()

        listed = set(_our_namespaces())
        # Gone (by this sweep, or by another run's entry sweeping at the same time), orphan included.
        assert not listed & {*stale_info["names"], reused_pid}  # type: ignore[misc]
        assert _dead(orphan)
        assert not stale_logs.exists()
        assert set(live_info["names"]) <= listed  # type: ignore[arg-type]
        assert not set(live_info["names"]) & set(removed)  # type: ignore[arg-type]
        assert not_ours in listed
    finally:
        assert live.stdin is not None
        live.stdin.close()
        assert live.wait(HANG) == 0
        for name in (reused_pid, not_ours):
            with contextlib.suppress(HostsError):
                _run_ip("ip", ["netns", "delete", name], HANG)
    assert not set(live_info["names"]) & set(_our_namespaces())  # type: ignore[arg-type]


# -- where namespaces cannot be made -----------------------------------------------------------------------


def test_unavailable_without_ip_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    availability = probe_namespaces()
    assert not availability.available
    assert "no `ip` command (iproute2) on PATH" in availability.reason
    with pytest.raises(HostsUnavailable) as error, NamespaceHosts(1):
        pass
    assert error.value.reason == availability.reason
    with pytest.raises(HostsUnavailable, match="no `ip` command"):
        sweep_stale_namespaces()


def _drop_namespace_capabilities() -> None:
    # Runs in the child before exec: a root process whose bounding set lacks a capability loses it at exec.
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (21, 12):  # CAP_SYS_ADMIN, CAP_NET_ADMIN
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")


NO_CAPABILITIES_PROBE = """
import json, subprocess, sys
from conformance.hosts import probe_namespaces
availability = probe_namespaces()
attempt = subprocess.run(["ip", "netns", "add", sys.argv[1]], capture_output=True, text=True)
print(json.dumps({"reason": availability.reason, "available": availability.available,
                  "ip_status": attempt.returncode, "ip_stderr": attempt.stderr}))
"""


def test_unavailable_without_capabilities_names_them(namespaces: None) -> None:
    name = f"agl-hosts-capability-check-{os.getpid()}"
    try:
        done = _python(NO_CAPABILITIES_PROBE, name, preexec_fn=_drop_namespace_capabilities)
    finally:
        with contextlib.suppress(HostsError):
            _run_ip("ip", ["netns", "delete", name], HANG)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["available"] is False
    assert "lacks CAP_SYS_ADMIN and CAP_NET_ADMIN" in report["reason"]
    assert "run as root" in report["reason"]
    assert report["ip_status"] != 0, "without the capabilities ip itself must fail too"


def test_unavailable_when_ip_cannot_make_a_namespace_names_its_error(tmp_path: Path) -> None:
    real_ip = shutil.which("ip")
    if real_ip is None:
        pytest.skip("no `ip` command on PATH to wrap")
    fake = _fake_ip(
        tmp_path,
        'if [ "$1" = netns ] && [ "$2" = add ]; then\n'
        '  echo "mount --make-shared /run/netns failed: Operation not permitted" >&2; exit 1\n'
        "fi\n"
        f'exec {real_ip} "$@"',
    )
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = _python(
        "from conformance.hosts import probe_namespaces; print(probe_namespaces().reason)", env=env
    )
    assert done.returncode == 0, done.stderr
    if "lacks" in done.stdout or "no `ip`" in done.stdout:
        pytest.skip(f"namespaces are unavailable here anyway: {done.stdout.strip()}")
    assert "cannot make a network namespace" in done.stdout
    assert f"`{fake} netns add agl-hosts-" in done.stdout
    assert "mount --make-shared /run/netns failed: Operation not permitted" in done.stdout


def test_every_ip_call_is_bounded_and_its_errors_name_the_command(
    hosts: NamespaceHosts, tmp_path: Path
) -> None:
    with pytest.raises(HostsError) as error:
        _run_ip("ip", ["-n", hosts.namespace(0), "link", "set", "nosuch0", "up"], HANG)
    message = str(error.value)
    assert f"`ip -n {hosts.namespace(0)} link set nosuch0 up` failed with exit status" in message
    assert "nosuch0" in message.split(":", 1)[1]  # ip's own stderr follows
    hanging = _fake_ip(tmp_path, "exec sleep 30")
    started = time.monotonic()
    with pytest.raises(HostsError, match=r"`\S+/ip netns list` did not finish within 0\.2 s"):
        _run_ip(str(hanging), ["netns", "list"], 0.2)
    assert time.monotonic() - started < HANG


# -- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_hosts", [0, -1, 251, True, "2", 1.5])
def test_bad_host_count_names_it(n_hosts: object) -> None:
    with pytest.raises(ValueError, match=rf"n_hosts must be an int from 1 to 250; got {n_hosts!r}"):
        NamespaceHosts(n_hosts)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1.0, float("inf"), float("nan"), True, "5"])
def test_bad_command_timeout_names_it(timeout: object) -> None:
    with pytest.raises(ValueError, match="command_timeout must be a finite number of seconds > 0"):
        NamespaceHosts(1, command_timeout=timeout)  # type: ignore[arg-type]


def test_bad_host_index_argv_and_use_outside_the_block_are_clear_errors(hosts: NamespaceHosts) -> None:
    for host in (2, -1, True, "0"):
        with pytest.raises(ValueError, match=rf"host must be an int from 0 to 1 .*; got {host!r}"):
            hosts.address(host)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="argv must be a non-empty sequence of strings"):
        hosts.run(0, [])
    with pytest.raises(HostsError, match=r"cannot run 'no-such-command-agl' on host 1: not found on PATH"):
        hosts.run(1, ["no-such-command-agl"])
    with pytest.raises(HostsError, match="can be entered once"), hosts:
        pass
    unopened = NamespaceHosts(1)
    with pytest.raises(HostsError, match="is not open: use it inside its with block"):
        unopened.run(0, ["true"])
