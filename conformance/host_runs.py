"""A multi-host run of a strategy for the D checks: its sides placed on test hosts by its ``host_sides``.

``HostRun`` makes ``NamespaceHosts``, picks ``{port}`` (free on host 0) and ``{token}`` (made for this
run, never printed), and starts a side per host with ``python -m conformance.host_side``, built with the
check's target options (for section D they include the strategy's ``host_test_options``:
``conformance.host_options``): the algorithm side on host 0, runner sides on the others, each with the
scripted bundles and its own journal (``journal()`` merges them, naming each record's host:
``h1 runner 0``). Everything is removed when the block ends (processes, namespaces, temporary
directory), whatever happened.
docs/multi-host-strategies.md describes the procedure from the strategy author's side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from conformance.bundles import collect_stack_dumps
from conformance.checks import CheckContext
from conformance.faults import open_gate
from conformance.host_side import EXECUTE_GATE, side_spec
from conformance.hosts import Availability, HostProcess, NamespaceHosts, probe_namespaces
from conformance.journal import read_journal
from conformance.placement import PlacementValues, Side, require_host_sides, resolve_side
from conformance.scenarios import JournalRecord, Script
from conformance.verdicts import SetupError

__all__ = ["HostRun", "require_hosts"]

_LOOK = 0.02  # between looks at the journals and the hosts' process lists
_STACK_WAIT = 3.0  # how long the dumps of hung sides may take to be written


def require_hosts(ctx: CheckContext) -> dict[str, Any]:
    """The strategy's validated ``host_sides``; n/a naming the reason where namespaces cannot be made,
    a set-up error saying what to declare where the strategy runs on many hosts without ``host_sides``
    (the kit cannot place its sides: no contract verdict, e.g. a strategy with no manifest at all)."""
    try:
        sides = require_host_sides(ctx.capabilities)
    except ValueError as error:
        raise SetupError(f"the kit cannot place the strategy on test hosts: {error}") from None
    # The plan made D n/a where the strategy declares one machine; whether this machine can make test
    # hosts is only known by trying, here.
    availability = _probe()
    if not availability.available:
        ctx.not_applicable("runs_on_many_hosts", f"test hosts cannot be made here: {availability.reason}")
    return sides


_made_hosts = False
"""Whether this process has made test hosts: a machine where namespaces could be made still can."""


def _probe() -> Availability:
    """``probe_namespaces()``, once per process once it has succeeded (a probe makes and removes a host)."""
    global _made_hosts
    if _made_hosts:
        return Availability(True)
    availability = probe_namespaces()
    _made_hosts = availability.available
    return availability


class HostRun:
    """``n_hosts`` test hosts with the strategy's sides on them; use as a context manager."""

    def __init__(
        self,
        ctx: CheckContext,
        sides: Mapping[str, Any],
        n_hosts: int,
        *,
        algorithm: Script,
        runner: Script,
        runners_per_side: int = 1,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.ctx = ctx
        self.sides = sides
        self.algorithm, self.runner = algorithm, runner
        self.options = {**ctx.target.options, **(options or {}), "n_runners": runners_per_side}
        self.token = secrets.token_hex(16)
        self._directory = tempfile.TemporaryDirectory(prefix="agl-d-")
        self.directory = self._directory.name
        self.hosts = NamespaceHosts(n_hosts, log_dir=os.path.join(self.directory, "logs"))
        self.port = 0
        self.processes: dict[int, HostProcess] = {}

    def __enter__(self) -> HostRun:
        try:
            self.hosts.__enter__()
            self.port = self.hosts.free_port(0)
        except BaseException:
            self._directory.cleanup()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.hosts.__exit__(exc_type, exc, tb)
        finally:
            self._directory.cleanup()

    # -- sides -------------------------------------------------------------------------------------------

    def journal_path(self, host: int) -> str:
        directory = os.path.join(self.directory, f"h{host}")
        os.makedirs(directory, exist_ok=True)
        return os.path.join(directory, "journal.jsonl")

    def result_path(self, host: int) -> str:
        return os.path.join(self.directory, f"h{host}", "result.json")

    def start(
        self,
        host: int,
        side: Side,
        *,
        credentials: bool = True,
        history: bool = False,
        runner: Script | None = None,
        ahead: bool = False,
    ) -> HostProcess:
        """Start ``side`` on ``host`` as placed by the declaration (without ``{token}`` entries when
        ``credentials`` is False: also not inherited from this process's environment); ``runner``
        replaces the run's runner script on this host. ``ahead``: the side imports and builds the
        strategy now but calls ``execute()`` only at ``release(host)``, so that its start-up overlaps
        the other sides' (what the checks measure starts at its ``side execute`` record either way)."""
        hosts = self.hosts
        values = PlacementValues(hosts.address(host), hosts.address(0), self.port, self.token)
        placed = resolve_side(self.sides, side, values, credentials=credentials)
        declared_env = {name for spec in self.sides.values() for name in spec.get("env", {})}
        env = {k: v for k, v in os.environ.items() if credentials or k not in declared_env}
        env.update(placed.env)
        env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)  # the target's modules
        spec = side_spec(
            strategy=self.ctx.target.strategy,
            options={**self.options, **placed.options},
            store_factory=self.ctx.target.store_factory,
            algorithm=self.algorithm,
            runner=runner if runner is not None else self.runner,
            journal=self.journal_path(host),
            result=self.result_path(host),
            history=history,
            gate=os.path.dirname(self.journal_path(host)) if ahead else None,
        )
        process = hosts.run(host, [sys.executable, "-m", "conformance.host_side", spec], env=env)
        self.processes[host] = process
        return process

    def release(self, host: int) -> None:
        """Let the side started ``ahead`` on ``host`` call ``execute()``."""
        open_gate(os.path.dirname(self.journal_path(host)), EXECUTE_GATE)

    def wait_listening(self, within: float) -> None:
        """Until host 0's ``{port}`` accepts a handshake from host 1 (``TimeoutError`` naming it)."""
        self.hosts.wait_reachable(1, 0, self.port, within)

    def open_gate(self, host: int, name: str) -> None:
        open_gate(os.path.dirname(self.journal_path(host)), name)

    # -- what happened -----------------------------------------------------------------------------------

    def journal(self) -> list[JournalRecord]:
        """Every host's records, by time, each bundle named with its host (``h0 algorithm``)."""
        merged = []
        for host in range(self.hosts.n_hosts):
            for record in read_journal(self.journal_path(host)):
                merged.append(dataclasses.replace(record, bundle=f"h{host} {record.bundle}"))
        return sorted(merged, key=lambda record: record.t)

    def result(self, host: int) -> dict[str, Any] | None:
        """What the side on ``host`` wrote when ``execute()`` ended (``None``: it never got there)."""
        try:
            with open(self.result_path(host), encoding="utf-8") as file:
                value: dict[str, Any] = json.load(file)
        except FileNotFoundError:
            return None
        return value

    def output(self, host: int) -> str:
        """Stdout and stderr of the side on ``host``."""
        process = self.processes.get(host)
        return "" if process is None else process.stdout() + process.stderr()

    def wait_record(
        self, predicate: Callable[[JournalRecord], bool], within: float, what: str
    ) -> JournalRecord | None:
        """The first record ``predicate`` accepts, waiting up to ``within`` s; ``None`` if none came."""
        deadline = time.monotonic() + within
        while True:
            found = next((record for record in self.journal() if predicate(record)), None)
            if found is not None or time.monotonic() > deadline:
                return found
            time.sleep(_LOOK)

    def wait_empty(self, host: int, within: float) -> float | None:
        """The ``time.monotonic()`` at which no process was left on ``host``, waiting up to ``within`` s;
        ``None`` if some still ran then."""
        deadline = time.monotonic() + within
        process = self.processes.get(host)
        if process is not None and process.poll() is None:
            # The side's own process is on the host until it ends: wait for that (no looking meanwhile),
            # then look for whatever it left behind.
            with contextlib.suppress(TimeoutError):
                process.wait(max(0.0, deadline - time.monotonic()))
        while True:
            now = time.monotonic()
            if not self.hosts.pids(host):
                process = self.processes.get(host)
                if process is not None:
                    process.wait(self.hosts.command_timeout)  # reap it: its namespace is empty
                return now
            if now > deadline:
                return None
            time.sleep(_LOOK)

    def wait_side(self, host: int, within: float) -> dict[str, Any] | None:
        """The side's result once its process has ended (``None`` if it outlives ``within`` s)."""
        process = self.processes[host]
        try:
            process.wait(within)
        except TimeoutError:
            return None
        return self.result(host)

    def timeline(self) -> str:
        records = self.journal()
        if not records:
            return "(no journal records)"
        t0 = records[0].t
        return "\n".join(
            f"+{r.t - t0:8.3f}s {r.bundle:<14} {r.kind}{(' ' + r.detail) if r.detail else ''}"
            for r in records
        )

    def stacks(self) -> str:
        """Every thread's stack of each process still running that ran a bundle, for a failure's
        details: each registered a dump on SIGUSR1 (``bundles.register_stack_dump``), written beside its
        host's journal. Processes that never ran a bundle (SIGUSR1 would kill them) are only named."""
        bundled = {
            host: {r.pid for r in read_journal(self.journal_path(host)) if r.kind == "start"}
            for host in range(self.hosts.n_hosts)
        }
        running = {host: self.hosts.pids(host) for host in range(self.hosts.n_hosts)}
        # The hosts share one pid space (network namespaces only): a pid names one process.
        dumps = collect_stack_dumps(
            {
                pid: os.path.dirname(self.journal_path(host))
                for host, pids in running.items()
                for pid in pids
                if pid in bundled[host]
            },
            _STACK_WAIT,
        )
        parts = []
        for host, pids in sorted(running.items()):
            for pid in sorted(pids):
                parts.append(
                    f"  host {host} process {pid} signals by thread:\n" + _indent(_signal_state(pid))
                )
                if pid not in dumps:
                    parts.append(f"  host {host} process {pid}: (no stack: it ran no bundle)")
                    continue
                dump = dumps[pid] or "(no stack dump written)"
                parts.append(f"  host {host} process {pid}:\n" + _indent(dump))
        return "\n".join(parts) or "  (no process left on any host)"

    def logs(self) -> str:
        """Every side's output, for a failure's details (the token is masked)."""
        parts = []
        for host, process in sorted(self.processes.items()):
            text = (process.stdout() + process.stderr()).replace(self.token, "<token>")
            parts.append(f"  host {host} ({' '.join(process.argv[:3])}) output:\n" + _indent(text[-3000:]))
        return "\n".join(parts)


def _signal_state(pid: int) -> str:
    """Each thread's pending, blocked and caught signal masks (``/proc``), for a hung side's details."""
    lines = []
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError as error:
        return f"(unreadable: {error})"
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status", encoding="utf-8") as file:
                fields = dict(line.rstrip("\n").split(":\t", 1) for line in file if ":\t" in line)
        except OSError:
            continue
        masks = " ".join(
            f"{k}={fields.get(k, '?')}" for k in ("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")
        )
        lines.append(f"{tid} {fields.get('Name', '?')} {fields.get('State', '?')} {masks}")
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines()) or "    (none)"
