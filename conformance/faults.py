"""External fault delivery at gates: signals to the scenario's processes at journal-defined moments.

A ``Fault`` names an action and a gate (``after``), a condition on the journal:

- ``before start``: the strategy called its first bundle, which is held at its prologue, as every
  bundle is until the fault is delivered: the signal lands inside ``execute()`` during start-up, and
  no bundle's script has started.
- ``all started``: the algorithm and as many runners as the scenario has journaled ``start``.
- ``event set``: some bundle set the event or saw it set.
- ``algorithm returned`` / ``shutdown began``: the algorithm returned / ended in any way.
- ``gate <name>``: some bundle waits at gate ``<name>`` (the ready handshake of a scripted gate).
- ``<bundle> <kind>``: e.g. ``runner 1 started``, ``runner 0 saw-stop``, ``algorithm end``.

Gates a bundle waits on are files in the scenario's gate directory; ``open_gate`` creates them. The
``FaultDriver`` runs in the observer: fed the journal as it grows, it journals each delivery (kind
``fault``, so latencies come from journal timestamps) and then sends the signal.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from conformance.journal import write_record
from conformance.scenarios import Fault, JournalRecord, Scenario

__all__ = [
    "BEFORE_START_GATE",
    "FaultDriver",
    "condition_met",
    "gate_is_open",
    "gate_path",
    "open_gate",
    "validate_condition",
]

BEFORE_START_GATE = "before start"
_REACTION_KINDS = frozenset({"saw-stop", "cancelled", "cancel-ignored", "exception", "end", "finally-ran"})
_REPEAT_FALLBACK = 1.0  # seconds: a repeated fault is re-sent after this even without a journaled reaction
_BUNDLE_CONDITION = re.compile(r"^(algorithm|runner (\d+)) (\S+)$")
_KIND_ALIASES = {"started": "start", "ended": "end"}


def gate_path(gate_dir: str, name: str) -> str:
    """The file whose existence opens gate ``name`` (hex-encoded, so any name is a safe file name)."""
    return os.path.join(gate_dir, "gate-" + name.encode().hex())


def open_gate(gate_dir: str, name: str) -> None:
    """Open gate ``name``: every bundle waiting on it continues. Idempotent."""
    fd = os.open(gate_path(gate_dir, name), os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)


def gate_is_open(gate_dir: str, name: str) -> bool:
    return os.path.exists(gate_path(gate_dir, name))


def validate_condition(after: str, n_runners: int) -> None:
    """Raise ``ValueError`` naming ``after`` when it is not a gate the kit knows."""
    if after in {BEFORE_START_GATE, "all started", "event set", "algorithm returned", "shutdown began"}:
        return
    if after.startswith("gate ") and after[5:].strip():
        return
    match = _BUNDLE_CONDITION.match(after)
    if match and (match.group(2) is None or int(match.group(2)) < n_runners):
        return
    raise ValueError(
        f"unknown fault gate {after!r}; use 'before start', 'all started', 'event set', "
        f"'algorithm returned', 'shutdown began', 'gate <name>' or '<algorithm|runner i> <kind>' "
        f"(runner index below n_runners={n_runners})"
    )


def condition_met(after: str, records: Sequence[JournalRecord], n_runners: int) -> bool:
    """Whether the journal so far satisfies gate ``after``."""
    if after == BEFORE_START_GATE:
        # The first bundle the strategy called is held at its prologue: execute() is running (a signal
        # lands in the strategy, never in the sandbox around it) and no bundle's script has started.
        return any(r.kind == "held" and r.detail == BEFORE_START_GATE for r in records)
    if after == "all started":
        # Runner starts are counted, not matched to ids 0..n-1: a strategy numbering its runners wrongly
        # still gets its scenario run (L1 then names the ids) instead of a hang at this gate.
        starts = [r.bundle for r in records if r.kind == "start"]
        return "algorithm" in starts and sum(b.startswith("runner ") for b in starts) >= n_runners
    if after == "event set":
        return any(r.kind in ("set-event", "saw-stop") for r in records)
    if after == "algorithm returned":
        return any(r.bundle == "algorithm" and r.kind == "end" and r.detail == "returned" for r in records)
    if after == "shutdown began":
        return any(r.bundle == "algorithm" and r.kind == "end" for r in records)
    if after.startswith("gate "):
        name = after[5:].strip()
        return any(r.kind == "gate" and r.detail == name for r in records)
    match = _BUNDLE_CONDITION.match(after)
    if match is None:
        return False
    bundle, kind = match.group(1), match.group(3)
    kind = _KIND_ALIASES.get(kind, kind)
    if kind == "returned":
        return any(r.bundle == bundle and r.kind == "end" and r.detail == "returned" for r in records)
    return any(r.bundle == bundle and r.kind == kind for r in records)


def worker_pid(records: Sequence[JournalRecord], worker: int) -> int | None:
    """The pid runner ``worker`` journaled its start from, if it has started."""
    for record in records:
        if record.bundle == f"runner {worker}" and record.kind == "start":
            return record.pid
    return None


@dataclass
class _Pending:
    fault: Fault
    delivered: int = 0
    last_t: float = 0.0


class FaultDriver:
    """Delivers a scenario's external faults as the journal reaches their gates (observer side)."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        journal_path: str,
        gate_dir: str,
        scenario_pid: int,
        repeat_fallback: float = _REPEAT_FALLBACK,
    ) -> None:
        for fault in scenario.faults:
            validate_condition(fault.after, scenario.n_runners)
            if fault.repeat < 1:
                raise ValueError(f"fault {fault.action} after {fault.after!r}: repeat must be >= 1")
            if fault.action == "open-gate" and not fault.open_gate:
                raise ValueError(f"fault open-gate after {fault.after!r} names no gate to open (open_gate)")
        self.n_runners = scenario.n_runners
        self.journal_path = journal_path
        self.gate_dir = gate_dir
        self.scenario_pid = scenario_pid
        self.repeat_fallback = repeat_fallback
        self._pending = [_Pending(fault) for fault in scenario.faults]
        self.parent_killed_at: float | None = None
        self.errors: list[str] = []

    @property
    def active(self) -> bool:
        return bool(self._pending)

    def feed(self, records: Sequence[JournalRecord]) -> None:
        """Look at the whole journal so far; deliver every fault whose gate is reached."""
        if not self._pending:
            return
        if any(r.bundle == "kit" and r.kind == "execute-end" for r in records):
            self._pending.clear()  # execute() is over: a late signal would hit the sandbox, not the strategy
            return
        for pending in list(self._pending):
            fault = pending.fault
            if pending.delivered == 0:
                if not condition_met(fault.after, records, self.n_runners):
                    continue
            elif not self._ready_to_repeat(pending, records):
                continue
            delivered_at = self._deliver(fault, records)
            if delivered_at is not None:
                pending.delivered += 1
                pending.last_t = delivered_at  # the journaled moment: reactions are compared with it
                if pending.delivered == 1:
                    if fault.open_gate:
                        open_gate(self.gate_dir, fault.open_gate)
                    if fault.after == BEFORE_START_GATE:
                        open_gate(self.gate_dir, BEFORE_START_GATE)
            # A one-shot fault is done once delivered; one that could not go out yet (its worker has not
            # journaled its pid) stays pending for the next record.
            if pending.delivered >= fault.repeat or (
                pending.delivered > 0 and fault.action in ("sigkill-worker", "sigkill-parent", "open-gate")
            ):
                self._pending.remove(pending)

    def _ready_to_repeat(self, pending: _Pending, records: Sequence[JournalRecord]) -> bool:
        """A repeat goes out once the strategy visibly reacted to the previous delivery (K5)."""
        if time.monotonic() - pending.last_t >= self.repeat_fallback:
            return True
        return any(r.t > pending.last_t and r.kind in _REACTION_KINDS for r in records)

    def _deliver(self, fault: Fault, records: Sequence[JournalRecord]) -> float | None:
        """Deliver ``fault``; the time of its journal record, or ``None`` when it cannot go out yet."""
        action = fault.action
        if action == "sigkill-worker":
            pid = worker_pid(records, fault.worker)
            if pid is None:
                return None  # the worker has not journaled its pid yet: try again on the next record
            return self._signal(action, pid, signal.SIGKILL, group=False, worker=fault.worker)
        if action == "sigkill-parent":
            at = self._signal(action, self.scenario_pid, signal.SIGKILL, group=False)
            self.parent_killed_at = at
            return at
        if action == "open-gate":
            if not fault.open_gate:
                raise ValueError(f"fault open-gate after {fault.after!r} names no gate (open_gate=None)")
            return write_record(self.journal_path, "kit", "fault", action, {"gate": fault.open_gate}).t
        if action == "sigint-main":
            return self._signal(action, self.scenario_pid, signal.SIGINT, group=False)
        if action == "sigint-group":
            return self._signal(action, self.scenario_pid, signal.SIGINT, group=True)
        raise ValueError(f"unknown fault action {action!r}")

    def _signal(self, action: str, pid: int, signum: int, *, group: bool, worker: int | None = None) -> float:
        data = {"pid": pid, "signal": signal.Signals(signum).name, "group": group, "worker": worker}
        record = write_record(self.journal_path, "kit", "fault", action, data)
        try:
            if group:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            self.errors.append(f"{action}: process {pid} was already gone")
        return record.t
