"""The cross-process journal: atomic lines from many processes, tailing, timeline rendering."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from conformance.journal import JournalTailer, held_open, read_journal, render_timeline, write_record


def _writer(path: str, name: str, count: int) -> None:
    for index in range(count):
        write_record(path, name, "step", f"{index}", {"payload": "x" * 200})


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_concurrent_writers_never_interleave(tmp_path, method):
    path = str(tmp_path / "journal.jsonl")
    ctx = multiprocessing.get_context(method)
    procs = [ctx.Process(target=_writer, args=(path, f"runner {i}", 300)) for i in range(3)]
    for proc in procs:
        proc.start()
    _writer(path, "algorithm", 300)
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    records = read_journal(path)
    assert len(records) == 1200
    by_bundle = {}
    for record in records:
        by_bundle.setdefault(record.bundle, []).append(int(record.detail))
    assert sorted(by_bundle) == ["algorithm", "runner 0", "runner 1", "runner 2"]
    for details in by_bundle.values():
        assert sorted(details) == list(range(300))
    assert {record.pid for record in records if record.bundle != "algorithm"} != {os.getpid()}
    assert [record.t for record in records] == sorted(record.t for record in records)


def test_tailer_returns_only_complete_lines(tmp_path):
    path = str(tmp_path / "journal.jsonl")
    tailer = JournalTailer(path)
    assert tailer.poll() == []  # no file yet
    write_record(path, "algorithm", "start")
    assert [record.kind for record in tailer.poll()] == ["start"]
    line = b'{"t": 1.0, "pid": 1, "thread": "T", "bundle": "runner 0", "kind": "end", "detail": ""}\n'
    with open(path, "ab") as handle:
        handle.write(line[:20])
    assert tailer.poll() == []
    with open(path, "ab") as handle:
        handle.write(line[20:])
    fresh = tailer.poll()
    assert [(record.bundle, record.kind) for record in fresh] == [("runner 0", "end")]
    assert len(tailer.records) == 2


def test_timeline_is_relative_and_elides_long_journals(tmp_path):
    path = str(tmp_path / "journal.jsonl")
    for index in range(50):
        write_record(path, "runner 0", "step", str(index))
    text = render_timeline(read_journal(path), limit=10)
    lines = text.splitlines()
    assert lines[0].startswith("+   0.000s")
    assert "runner 0" in lines[0] and "step 0" in lines[0]
    assert "40 records elided" in text
    assert lines[-1].endswith("step 49")
    assert render_timeline([]) == "(journal empty)"


def test_R3_a_held_journal_takes_one_write_per_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside ``held_open`` no descriptor is opened per record: none can leak on a KeyboardInterrupt."""
    path = str(tmp_path / "journal.jsonl")
    with held_open(path):

        def no_open(*args: object, **kwargs: object) -> int:
            raise AssertionError("write_record opened the journal although it is held open")

        monkeypatch.setattr(os, "open", no_open)
        write_record(path, "kit", "one")
        write_record(path, "kit", "two")
        monkeypatch.undo()
        held_fds = set(os.listdir("/proc/self/fd"))
    assert set(os.listdir("/proc/self/fd")) < held_fds  # closed on exit
    assert [r.kind for r in read_journal(path)] == ["one", "two"]
    write_record(path, "kit", "three")  # no longer held: opened and closed per record
    assert [r.kind for r in read_journal(path)] == ["one", "two", "three"]
