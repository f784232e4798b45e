"""The cross-process journal: what every bundle, the sandbox and the observer saw, with timestamps.

A journal is an append-only file of JSON lines in the scenario directory. Writers in any process (thread,
fork, spawn, forkserver) append one whole line per ``os.write`` on an ``O_APPEND`` descriptor, which Linux
applies atomically for regular files, so lines from concurrent writers never interleave. Timestamps are
``time.monotonic()`` (``CLOCK_MONOTONIC``, system-wide on Linux), so records of different processes
compare directly. The observer follows the file with ``JournalTailer``; checks render it with
``render_timeline``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from conformance.scenarios import JournalRecord

__all__ = [
    "JournalTailer",
    "held_open",
    "read_journal",
    "render_side_by_side",
    "render_timeline",
    "write_record",
]

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)

_held: dict[str, tuple[int, int]] = {}
"""Journals ``held_open`` in some process: path -> (that process's pid, descriptor)."""


@contextlib.contextmanager
def held_open(path: str) -> Iterator[None]:
    """Keep the journal at ``path`` open in this process for the block; records are one ``os.write``.

    The sandbox holds its journal across the leak snapshots. A record written by opening and closing
    the file leaks the descriptor when a ``KeyboardInterrupt`` lands just after ``os.open()`` returns,
    and masking SIGINT does not prevent that: Python runs the handler on the main thread whichever thread
    the kernel gave the signal to. One ``os.write`` on a descriptor that predates the snapshot cannot
    leak anything. Forked children see a different pid and open the file per record, as before.
    """
    fd = os.open(path, _FLAGS, 0o644)
    _held[path] = (os.getpid(), fd)
    try:
        yield
    finally:
        del _held[path]
        os.close(fd)


def write_record(
    path: str,
    bundle: str,
    kind: str,
    detail: str = "",
    data: dict[str, Any] | None = None,
) -> JournalRecord:
    """Append one record to the journal at ``path`` and return it.

    Where this process holds the journal open (``held_open``: the sandbox, across its leak snapshots)
    the record is one ``os.write``. Elsewhere the file is opened and closed per record: no descriptor
    outlives the call, and journaling survives any start method without per-process state.
    """
    record = JournalRecord(
        t=time.monotonic(),
        pid=os.getpid(),
        thread=threading.current_thread().name,
        bundle=bundle,
        kind=kind,
        detail=detail,
        data=dict(data or {}),
    )
    line = json.dumps(
        {
            "t": record.t,
            "pid": record.pid,
            "thread": record.thread,
            "bundle": bundle,
            "kind": kind,
            "detail": detail,
            "data": record.data,
        },
        default=repr,
        separators=(",", ":"),
    )
    held = _held.get(path)
    if held is not None and held[0] == os.getpid():
        os.write(held[1], (line + "\n").encode())
        return record
    # SIGINT is blocked for the few microseconds the descriptor exists, so that one delivered to this
    # thread waits until the fd is closed (one taken by another thread may still run the handler here:
    # hence held_open where the descriptors are counted).
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        fd = os.open(path, _FLAGS, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return record


def _parse(line: bytes) -> JournalRecord | None:
    try:
        raw = json.loads(line)
        return JournalRecord(
            t=float(raw["t"]),
            pid=int(raw["pid"]),
            thread=str(raw["thread"]),
            bundle=str(raw["bundle"]),
            kind=str(raw["kind"]),
            detail=str(raw.get("detail", "")),
            data=dict(raw.get("data") or {}),
        )
    except (ValueError, KeyError, TypeError):
        return None  # a torn line of a writer killed mid-write: not a record


def read_journal(path: str) -> list[JournalRecord]:
    """Every complete record of the journal, sorted by time (missing file: no records)."""
    tailer = JournalTailer(path)
    return sorted(tailer.poll(), key=lambda record: record.t)


class JournalTailer:
    """Follows a journal as it grows; ``poll()`` returns the records appended since the last call.

    Only complete lines are returned; a partial last line is kept until its newline arrives.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.records: list[JournalRecord] = []

    def poll(self) -> list[JournalRecord]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        fresh = [record for record in map(_parse, lines) if record is not None]
        self.records.extend(fresh)
        return fresh


def render_timeline(records: Iterable[JournalRecord], *, limit: int = 200) -> str:
    """A human timeline: offset from the first record, pid, thread, bundle, kind and detail.

    Long journals keep their first and last ``limit // 2`` records with a marker for the elided middle.
    """
    ordered: Sequence[JournalRecord] = sorted(records, key=lambda record: record.t)
    if not ordered:
        return "(journal empty)"
    t0 = ordered[0].t
    lines = [_render_line(record, t0) for record in ordered]
    if len(lines) > limit:
        head, tail = lines[: limit // 2], lines[-(limit // 2) :]
        lines = [*head, f"... {len(ordered) - len(head) - len(tail)} records elided ...", *tail]
    return "\n".join(lines)


def _render_line(record: JournalRecord, t0: float) -> str:
    detail = f" {record.detail}" if record.detail else ""
    return (
        f"+{record.t - t0:8.3f}s pid={record.pid:<7} {record.thread[:20]:<20} {record.bundle:<10} "
        f"{record.kind}{detail}"
    )


def render_side_by_side(left: tuple[str, str], right: tuple[str, str], *, width: int = 80) -> str:
    """Two rendered timelines ``(title, text)`` in two columns, line by line: how a run that passed and
    one that failed differ (a flaky item's report). Long lines are cut to ``width`` per column."""
    columns = [
        [title, "-" * min(width, max(len(title), 8)), *text.splitlines()] for title, text in (left, right)
    ]
    height = max(len(column) for column in columns)
    lines = []
    for row in range(height):
        cells = [column[row] if row < len(column) else "" for column in columns]
        lines.append(f"{cells[0][:width]:<{width}} | {cells[1][:width]}".rstrip())
    return "\n".join(lines)
