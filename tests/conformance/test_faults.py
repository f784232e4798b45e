"""Fault gates: journal conditions, gate files, the driver's deliveries (journaled before the signal)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

import pytest

from conformance.faults import FaultDriver, condition_met, gate_is_open, open_gate, validate_condition
from conformance.journal import read_journal
from conformance.scenarios import Fault, JournalRecord, Scenario


def _r(bundle: str, kind: str, detail: str = "", t: float = 1.0, pid: int = 1) -> JournalRecord:
    return JournalRecord(t=t, pid=pid, thread="T", bundle=bundle, kind=kind, detail=detail)


def test_conditions_follow_the_journal():
    records = [_r("algorithm", "start"), _r("runner 0", "start")]
    assert not condition_met("all started", records, 2)
    records.append(_r("runner 1", "start"))
    assert condition_met("all started", records, 2)
    # Runners are counted: wrongly numbered ones open the gate too (L1 names their ids, no hang).
    assert condition_met(
        "all started", [_r("algorithm", "start"), _r("runner 1", "start"), _r("runner 2", "start")], 2
    )
    assert condition_met("runner 1 started", records, 2)
    assert not condition_met("algorithm returned", records, 2)
    records.append(_r("algorithm", "end", "returned"))
    assert condition_met("algorithm returned", records, 2)
    assert condition_met("shutdown began", records, 2)
    assert not condition_met("gate shutdown", records, 2)
    records.append(_r("runner 0", "gate", "shutdown"))
    assert condition_met("gate shutdown", records, 2)
    assert not condition_met("event set", records, 2)
    records.append(_r("runner 1", "saw-stop", "poll"))
    assert condition_met("event set", records, 2)
    assert condition_met("before start", [_r("runner 0", "held", "before start")], 1)


@pytest.mark.parametrize("bad", ["after lunch", "runner 3 started", "gate ", ""])
def test_unknown_gates_are_named(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("\\", "\\\\")):
        validate_condition(bad, 2)


def test_gate_files(tmp_path):
    assert not gate_is_open(str(tmp_path), "a/b c")
    open_gate(str(tmp_path), "a/b c")
    open_gate(str(tmp_path), "a/b c")  # idempotent
    assert gate_is_open(str(tmp_path), "a/b c")
    assert not gate_is_open(str(tmp_path), "a/b")


def _line(child: subprocess.Popen) -> str:
    """The child's next output line, failing (not hanging) if none comes within 30 s."""
    ready, _, _ = select.select([child.stdout], [], [], 30.0)
    assert ready, "the child printed nothing within 30 s"
    return child.stdout.readline().strip()


def test_driver_journals_then_signals_and_repeats_after_a_reaction(tmp_path):
    journal = str(tmp_path / "journal.jsonl")
    # A child that counts SIGINTs; it reports each one on stdout.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys\n"
            "signal.signal(signal.SIGINT, lambda *a: (print('INT', flush=True)))\n"
            "print('ready', flush=True)\n"
            "while True: signal.pause()\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert _line(child) == "ready"
        scenario = Scenario(
            "x", n_runners=1, faults=(Fault("sigint-main", "all started", repeat=2, open_gate="g"),)
        )
        driver = FaultDriver(
            scenario,
            journal_path=journal,
            gate_dir=str(tmp_path),
            scenario_pid=child.pid,
            repeat_fallback=600,
        )
        records = [_r("algorithm", "start"), _r("runner 0", "start")]
        driver.feed(records)
        assert _line(child) == "INT"
        assert gate_is_open(str(tmp_path), "g")
        (first,) = read_journal(journal)
        assert (first.bundle, first.kind, first.detail, first.data["pid"]) == (
            "kit",
            "fault",
            "sigint-main",
            child.pid,
        )
        driver.feed(records)  # no reaction yet: no second SIGINT
        assert len(read_journal(journal)) == 1
        records.append(_r("runner 0", "saw-stop", t=first.t + 0.001))
        driver.feed(records)
        assert _line(child) == "INT"
        assert len(read_journal(journal)) == 2 and not driver.active
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()


def test_driver_stops_once_execute_ended(tmp_path):
    scenario = Scenario("x", faults=(Fault("sigint-main", "event set"),))
    driver = FaultDriver(
        scenario, journal_path=str(tmp_path / "j"), gate_dir=str(tmp_path), scenario_pid=os.getpid()
    )
    driver.feed([_r("kit", "execute-end", "returned"), _r("algorithm", "set-event")])
    assert not driver.active
    assert not os.path.exists(tmp_path / "j")
