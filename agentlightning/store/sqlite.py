"""``SqliteLightningStore``: the in-memory store's semantics, journaled to a SQLite file that outlives it.

Design. The store *is* an ``InMemoryLightningStore`` (same status machine, claims, liveness, waits, values
and copies: nothing is written twice) whose every change is made durable before the call returns, and
replayed into memory when the file is opened again. Reads never touch the disk, so they are never blocked
by a commit, and a wait wakes on the in-memory store's events, never by polling. SQL as the source of
truth was the alternative: a claim is then a ``SELECT`` plus an ``UPDATE`` in a write transaction, and
rebuilding the status machine, the claim queue and the liveness heap as SQL would duplicate ``memory.py``
for a slower store.

Snapshots. The memory store's internal hooks (a rollout added, queued, claimed, given a new status, an
attempt started, running or ended, including those the liveness sweep ends) mark the rollout dirty under
the store's lock; argument-named changes (``update_rollout``/``update_attempt`` fields, spans, resources)
are marked by the call itself. After the in-memory change, the call takes a snapshot of every dirty rollout
(one row, its attempts included) under the same lock and appends it to the pending list with a sequence
number. A snapshot is taken between two changes, so what is written always holds the state of one moment.

Commits: a journal in front of the tables. A commit appends every pending snapshot, as one line each, to
``<path>.journal`` in one ``write`` (group commit: a caller that finds its snapshot already written by
another caller returns at once); a call returns only after that. Every ``_CHECKPOINT_ROWS`` rows the
journaled rows are applied to the SQLite tables (WAL mode, fsynced) in one transaction and the journal is
emptied; opening a file applies whatever journal the last owner left (a torn last line, never
acknowledged, is dropped; rows are written by key, so applying one twice changes nothing). Measured
beside the in-memory store in one run, a SQLite transaction per write call (this module's first design)
made a cycle cost about 1.5 times the CPU it costs with the journal (``bench/store.py`` gives the price).
``wait_for_rollouts`` also waits for the commit of what it saw, so no caller acts on a finish the file
does not hold yet.

Sync modes (``synchronous=``):

- ``"NORMAL"`` (default): a commit is written to the OS before the call returns, not fsynced: it survives
  the process being killed (SIGKILL, OOM), not a power loss or a kernel crash, which may lose the last
  commits since the last checkpoint (checkpoints are fsynced; the file is never corrupted).
- ``"FULL"``: every commit is fsynced (``fdatasync`` of the journal): also survives power loss, at the
  price of one fsync per write call.
- ``"OFF"``: no fsync, even at checkpoints: survives a killed process, but a power loss may corrupt the
  file. For throwaway runs only.

Liveness after a restart. Attempts that were in flight when the process died are restored as they were,
with their deadlines (the clock is wall time): a runner that is still alive keeps reporting to the new
process; one that is gone is ended by its ``unresponsive_seconds``/``timeout_seconds`` window, and the
rollout retried or failed by its ``RolloutConfig`` (contract T3).

Errors. A path that is not a SQLite file, or a SQLite file that is not a store of ours, is refused naming
it; so is a file written by a newer schema (naming both versions). Older schemas are migrated on open, in
one transaction. A directory the store cannot write is named. A second process opening the same file for
writing is refused naming the holder (pid and host), through an ``fcntl`` lock on ``<path>.lock`` held for
the store's lifetime (and released by the OS when its process dies). A failed commit or checkpoint (a
full disk) raises ``StoreWriteError`` naming the file and the cause, leaves the call unacknowledged and
the tables as they were, and makes the store refuse further writes: memory then holds a change the disk
does not, so the store must be reopened from the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Final, Literal

from pydantic_core import to_json

from agentlightning.store.memory import (
    _CONFIG_FIELDS,
    _RESOURCES_FIELDS,
    InMemoryLightningStore,
    _AttemptRecord,
    _build,
    _RolloutRecord,
)
from agentlightning.store.values import DEFAULT_LIMITS, ValueLimits
from agentlightning.store.wrapping import wrapping_methods
from agentlightning.types import (
    ACTIVE_ATTEMPT_STATUSES,
    ResourcesUpdate,
    Rollout,
    RolloutConfig,
    RolloutStatus,
)

__all__ = [
    "SCHEMA_VERSION",
    "SYNC_MODES",
    "NotAStoreError",
    "SchemaVersionError",
    "SqliteLightningStore",
    "StoreLockedError",
    "StoreWriteError",
]

APPLICATION_ID: Final = 0x414C5354  # "ALST": marks a SQLite file as an agentlightning store
SCHEMA_VERSION: Final = 1
SYNC_MODES: Final = ("FULL", "NORMAL", "OFF")
_QUEUED: Final = frozenset({"queuing", "requeuing"})


class NotAStoreError(ValueError):
    """The path exists but is not a store of ours (not SQLite, or SQLite written by something else)."""


class SchemaVersionError(ValueError):
    """The file was written by a newer schema than this version of the store reads."""


class StoreLockedError(RuntimeError):
    """Another live process holds the store open for writing."""


class StoreWriteError(RuntimeError):
    """A commit failed (a full disk, a vanished file): nothing of it was written; reopen the store."""


# -- schema: MIGRATIONS[n] takes a file from version n to n + 1, inside the opening transaction ---------


_SCHEMA_V1: Final = """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE rollouts (
            rank INTEGER PRIMARY KEY,
            rollout_id TEXT NOT NULL,
            status TEXT NOT NULL,
            queue_serial INTEGER NOT NULL,
            record TEXT NOT NULL
        );
        CREATE TABLE spans (
            row INTEGER PRIMARY KEY,
            rollout_id TEXT NOT NULL,
            attempt_id TEXT NOT NULL,
            sequence_id INTEGER NOT NULL,
            span TEXT NOT NULL
        );
        CREATE INDEX spans_by_attempt ON spans (attempt_id, sequence_id, row);
        CREATE TABLE resources (
            row INTEGER PRIMARY KEY,
            resources_id TEXT NOT NULL UNIQUE,
            create_time REAL NOT NULL,
            resources TEXT NOT NULL
        );
"""


def _create_v1(db: sqlite3.Connection) -> None:
    # One statement at a time: ``executescript`` would commit the migration's transaction.
    for statement in _SCHEMA_V1.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("INSERT INTO meta VALUES ('format', 'agentlightning-store')")


MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (_create_v1,)
"""``MIGRATIONS[n]`` upgrades a file at schema ``n`` to ``n + 1`` (0 is an empty file)."""


def _dumps(value: Any) -> str:
    """JSON text of a value the store already checked (JSON types only, no NaN, valid Unicode).

    pydantic-core's encoder, a dependency already through pydantic, writes a rollout's row about five
    times faster than ``json``'s C encoder (which spends most of its time on float reprs); the text
    reads back with ``json.loads`` to the same values."""
    return to_json(value).decode()


_Row = tuple[str, tuple[Any, ...]]  # a row kind of _UPSERTS and its values
_UPSERTS: Final = {
    "rollout": "INSERT OR REPLACE INTO rollouts VALUES (?, ?, ?, ?, ?)",
    "span": "INSERT OR REPLACE INTO spans VALUES (?, ?, ?, ?, ?)",
    "resources": "INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?)",
}
"""Every row is written by its key, so applying a journal record twice (a crash between a checkpoint's
commit and the journal's truncation) changes nothing."""
_CHECKPOINT_ROWS: Final = 4096  # journaled rows applied to the tables in one transaction


def _write_all(fd: int | None, data: bytes) -> None:
    assert fd is not None
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_journal(path: str) -> list[list[Any]]:
    """The journal's records in order; a torn last line (a write cut short by a full disk, never
    acknowledged) is dropped."""
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except FileNotFoundError:
        return []
    records = []
    for line in text.split(b"\n")[:-1]:  # the part after the last newline is torn or empty
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return records


def _journal_line(seq: int, rows: list[_Row]) -> str:
    """A journal record, ``[seq, [[kind, [values...]], ...]]``, built without re-encoding: each row's last
    value is already JSON text, and is embedded as JSON (``_rows_of`` turns it back into text); the
    others (ids, ranks, times) are encoded in one call per row, the document spliced in before its ``]``."""
    parts = [f'["{kind}",{_dumps(values[:-1])[:-1]},{values[-1]}]]' for kind, values in rows]
    return f"[{seq},[{','.join(parts)}]]\n"


def _rows_of(records: list[list[Any]]) -> list[_Row]:
    return [(kind, (*values[:-1], _dumps(values[-1]))) for _, rows in records for kind, values in rows]


def _apply(db: sqlite3.Connection, rows: list[_Row]) -> None:
    """Write ``rows`` to the tables in one transaction."""
    if not rows:
        return
    try:
        db.execute("BEGIN")
        for kind, values in rows:
            db.execute(_UPSERTS[kind], values)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


_HELD_LOCKS: set[int] = set()
"""Lock descriptors of the stores open in this process. A forked child inherits them, and an flock lives
until every descriptor of it is closed: a child that outlived a killed owner would keep the store locked."""


def _close_inherited_locks() -> None:
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def _holder(lock_path: str) -> str:
    try:
        with open(lock_path, encoding="utf-8") as handle:
            text = handle.read().strip()
    except OSError:
        text = ""
    return text or "an unknown process"


async def _durably(
    store: SqliteLightningStore,
    write: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """``write`` (an in-memory store method), made durable: refused once the store cannot write, and
    returning only after what it changed is committed."""
    store._check_writable()
    result = await write(store, *args, **kwargs)
    store._persist()
    return result


_journaled = wrapping_methods(_durably)


class SqliteLightningStore(InMemoryLightningStore):
    """A durable ``LightningStore`` in one SQLite file (see the module docstring for the design).

    ``path`` is the store's file; ``None`` makes a fresh one in a temporary directory of its own, removed
    by ``close()`` (a store for tests: ``reopen_options()`` still names it while it is open).
    ``synchronous`` is ``"NORMAL"``, ``"FULL"`` or ``"OFF"`` (what each risks: module docstring).
    ``max_page_count`` caps the file's size in pages (tests use it to simulate a full disk).
    """

    capability_manifest: ClassVar[dict[str, Any]] = {"durable": True, "thread_safe": True}
    thread_safe: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        synchronous: Literal["FULL", "NORMAL", "OFF"] = "NORMAL",
        max_page_count: int | None = None,
        clock: Callable[[], float] = time.time,
        limits: ValueLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(clock=clock, limits=limits)
        if not isinstance(synchronous, str) or synchronous.upper() not in SYNC_MODES:
            raise ValueError(f"synchronous must be one of {list(SYNC_MODES)}, got {synchronous!r}")
        if max_page_count is not None and (
            isinstance(max_page_count, bool) or not isinstance(max_page_count, int) or max_page_count < 1
        ):
            raise ValueError(f"max_page_count must be a positive int or None, got {max_page_count!r}")
        self._owned_dir: str | None = None
        if path is None:
            self._owned_dir = tempfile.mkdtemp(prefix="agentlightning-store-")
            path = os.path.join(self._owned_dir, "store.db")
        elif not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.synchronous = synchronous.upper()
        self.max_page_count = max_page_count
        # Journal state: guarded by the in-memory store's lock (``_lock``).
        self._dirty: dict[_RolloutRecord, None] = {}
        self._extra: list[_Row] = []  # span and resources rows added since the last snapshot
        self._pending: list[tuple[int, list[_Row]]] = []
        self._assigned = 0  # sequence number of the last snapshot taken
        # Commit state: guarded by ``_commit_lock`` (one writer at a time).
        self._commit_lock = threading.Lock()
        self._committed = 0
        self._failure: BaseException | None = None
        self._closed = False
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._journal_path = self.path + ".journal"  # not "-journal": SQLite's own rollback journal
        self._journal_fd: int | None = None
        self._journaled: list[_Row] = []  # rows journaled since the last checkpoint
        try:
            self._lock_fd = self._take_lock()
            self._db = self._connect()
            try:
                _apply(self._db, _rows_of(_read_journal(self._journal_path)))  # the last owner's journal
            except sqlite3.Error as error:
                raise StoreWriteError(f"cannot apply the journal of store {self.path}: {error}") from None
            self._journal_fd = os.open(self._journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.ftruncate(self._journal_fd, 0)
            self._rows = itertools.count(self._max_row() + 1)
            self._load()
        except BaseException:
            self._release()
            raise

    def __repr__(self) -> str:
        return f"<SqliteLightningStore {self.path} rollouts={len(self._rollouts)}>"

    def _max_row(self) -> int:
        assert self._db is not None
        spans = self._db.execute("SELECT max(row) FROM spans").fetchone()[0] or 0
        resources = self._db.execute("SELECT max(row) FROM resources").fetchone()[0] or 0
        return max(spans, resources)

    def reopen_options(self) -> dict[str, Any]:
        """The factory keywords that open this same file again (what T8 of the kit reopens it with)."""
        return {"path": self.path, "synchronous": self.synchronous}

    # -- opening ------------------------------------------------------------------------------------

    def _take_lock(self) -> int:
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"cannot open store {self.path}: directory {directory} does not exist")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(
                f"cannot open store {self.path}: directory {directory} is not writable "
                "(the store needs it for its lock, WAL and shared-memory files)"
            )
        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise PermissionError(
                f"cannot open store {self.path}: cannot create {lock_path}: {error}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLockedError(
                    f"store {self.path} is already open for writing by {_holder(lock_path)}; "
                    "close that store (or stop its process) first"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        _HELD_LOCKS.add(fd)
        return fd

    def _connect(self) -> sqlite3.Connection:
        existed = os.path.exists(self.path) and os.path.getsize(self.path) > 0
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise NotAStoreError(f"cannot open store {self.path}: {error}") from None
        try:
            try:
                application_id = db.execute("PRAGMA application_id").fetchone()[0]
                version = db.execute("PRAGMA user_version").fetchone()[0]
            except sqlite3.DatabaseError as error:
                raise NotAStoreError(f"{self.path} is not an agentlightning store: {error}") from None
            if existed and application_id != APPLICATION_ID:
                tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
                if tables or application_id:
                    raise NotAStoreError(
                        f"{self.path} is a SQLite file but not an agentlightning store "
                        f"(application_id {application_id:#x}, expected {APPLICATION_ID:#x}; tables {tables})"
                    )
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"store {self.path} has schema version {version}, newer than version {SCHEMA_VERSION} "
                    "that this agentlightning reads: open it with a newer agentlightning"
                )
            db.execute("PRAGMA journal_mode=WAL")
            # The tables are written only at checkpoints, which then empty the journal: always fsynced,
            # but with OFF.
            db.execute(f"PRAGMA synchronous={'OFF' if self.synchronous == 'OFF' else 'FULL'}")
            if self.max_page_count is not None:
                db.execute(f"PRAGMA max_page_count={int(self.max_page_count)}")
            if version < SCHEMA_VERSION:
                self._migrate(db, version)
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")
            for step in MIGRATIONS[version:SCHEMA_VERSION]:
                step(db)
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except sqlite3.Error as error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreWriteError(
                f"cannot migrate store {self.path} from schema version {version} to {SCHEMA_VERSION}: {error}"
            ) from None

    def _load(self) -> None:
        """Rebuild the in-memory state from the file (the lock is not needed: nobody else sees us yet)."""
        db = self._db
        assert db is not None
        queued: list[tuple[int, _RolloutRecord]] = []
        attempts: dict[str, _AttemptRecord] = {}
        for rid, rank, serial, text in db.execute(
            "SELECT rollout_id, rank, queue_serial, record FROM rollouts ORDER BY rank"
        ):
            data, inp, metadata, config, tried = json.loads(text)
            record = _RolloutRecord(
                data,
                inp,
                metadata,
                # Frozen and shared with every reader: its retry_condition must be a tuple, as validated.
                self._default_config
                if config is None
                else _build(
                    RolloutConfig,
                    {**config, "retry_condition": tuple(config["retry_condition"])},
                    _CONFIG_FIELDS,
                ),
            )
            record.order = rank
            self._rollouts[rid] = record
            self._by_status[record.data["status"]][rid] = record
            if record.data["status"] in _QUEUED and serial >= 0:
                queued.append((serial, record))
            for adata, ametadata, last_activity, by_store, next_sequence in tried:
                arec = _AttemptRecord(adata, record)
                arec.metadata = ametadata
                arec.last_activity = last_activity
                arec.ended_by_store = bool(by_store)
                arec.next_sequence = next_sequence
                if record.latest is not None:
                    record.earlier = (*record.earlier, record.latest)
                record.latest = arec
                attempts[adata["attempt_id"]] = arec
                self._attempts[adata["attempt_id"]] = arec
        for aid, span in db.execute(
            "SELECT attempt_id, span FROM spans ORDER BY attempt_id, sequence_id, row"
        ):
            arec = attempts[aid]
            if arec.spans is None:
                arec.spans = []
            arec.spans.append(json.loads(span))
        for rid_, create_time, resources in db.execute(
            "SELECT resources_id, create_time, resources FROM resources ORDER BY row"
        ):
            update = _build(
                ResourcesUpdate,
                {"resources_id": rid_, "resources": json.loads(resources), "create_time": create_time},
                _RESOURCES_FIELDS,
            )
            self._resources[rid_] = update
            self._latest_resources = update
        for _, record in sorted(queued, key=lambda item: item[0]):
            InMemoryLightningStore._push_queue(self, record)
        for arec in attempts.values():
            if arec.data["status"] in ACTIVE_ATTEMPT_STATUSES and arec.owner.latest is arec:
                self._watch(arec)
        self._dirty.clear()

    # -- hooks: the memory store calls these with its lock held -------------------------------------

    def _add_rollout(self, record: _RolloutRecord, now: float) -> None:
        super()._add_rollout(record, now)
        self._dirty[record] = None

    def _push_queue(self, record: _RolloutRecord) -> None:
        super()._push_queue(record)
        self._dirty[record] = None

    def _new_attempt(self, record: _RolloutRecord, now: float) -> _AttemptRecord:
        arec = super()._new_attempt(record, now)
        self._dirty[record] = None
        return arec

    def _set_rollout_status(self, record: _RolloutRecord, status: str, now: float) -> None:
        super()._set_rollout_status(record, status, now)
        self._dirty[record] = None

    def _set_attempt_running(self, arec: _AttemptRecord) -> None:
        super()._set_attempt_running(arec)
        self._dirty[arec.owner] = None

    def _end_attempt(self, arec: _AttemptRecord, *args: Any, **kwargs: Any) -> None:
        super()._end_attempt(arec, *args, **kwargs)
        self._dirty[arec.owner] = None

    def _rollout_changed(self, record: _RolloutRecord) -> None:
        self._dirty[record] = None

    def _span_added(self, arec: _AttemptRecord, span: dict[str, Any]) -> None:
        # Numbered here, under the lock: spans sharing an explicit sequence id reload in the order they
        # were added.
        self._dirty[arec.owner] = None
        row = (next(self._rows), span["rollout_id"], span["attempt_id"], span["sequence_id"], _dumps(span))
        self._extra.append(("span", row))

    def _resources_added(self, update: ResourcesUpdate) -> None:
        # Numbered under the lock too: the highest row is the latest resources when the file reopens.
        row = (next(self._rows), update.resources_id, update.create_time, _dumps(update.resources))
        self._extra.append(("resources", row))

    # -- the journal --------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise RuntimeError(f"store {self.path} is closed")
        if self._failure is not None:
            raise StoreWriteError(
                f"store {self.path} refuses writes since a commit failed ({self._failure}); "
                "reopen it from the file"
            )

    def _row(self, record: _RolloutRecord) -> _Row:
        """The rollout's one row: ids and status as columns, and one JSON document (``record``) of its
        fields, input, metadata, config (``null``: the default) and attempts (oldest first)."""
        data = record.data
        config = None if record.config is self._default_config else record.config.__dict__
        attempts = [
            (arec.data, arec.metadata or {}, arec.last_activity, arec.ended_by_store, arec.next_sequence)
            for arec in record.attempts()
        ]
        document = _dumps((data, record.input, record.metadata or {}, config, attempts))
        return ("rollout", (record.order, data["rollout_id"], data["status"], record.queue_serial, document))

    def _snapshot(self) -> int:
        """Queue the rows of every dirty rollout, then the spans and resources added since the last
        snapshot; the sequence number to commit. Called with ``_lock`` held."""
        if self._dirty or self._extra:
            rows = [self._row(record) for record in self._dirty]
            rows += self._extra
            self._dirty.clear()
            self._extra = []
            self._assigned += 1
            self._pending.append((self._assigned, rows))
        return self._assigned

    def _persist(self) -> None:
        """Journal what changed and return once it is committed (by this caller or another)."""
        with self._lock:
            target = self._snapshot()
        if self._committed >= target:
            return
        self._commit_through(target)

    def _commit_through(self, target: int) -> None:
        """Append every pending snapshot to the journal in one write (group commit), after applying
        the journal to the tables first when it has grown past ``_CHECKPOINT_ROWS`` rows."""
        with self._commit_lock:
            if self._committed >= target:
                return  # another caller's write held ours: group commit
            self._check_writable()
            if len(self._journaled) >= _CHECKPOINT_ROWS:
                self._checkpoint()
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            data = "".join(_journal_line(seq, rows) for seq, rows in batch).encode()
            try:
                _write_all(self._journal_fd, data)
                if self.synchronous == "FULL":
                    os.fdatasync(self._journal_fd)  # type: ignore[arg-type]
            except OSError as error:
                self._failure = error
                raise StoreWriteError(
                    f"writing to store {self.path} failed: {error}; this write was not acknowledged, and "
                    "the store refuses further writes until it is reopened"
                ) from None
            for _, rows in batch:
                self._journaled.extend(rows)
            self._committed = batch[-1][0]

    def _checkpoint(self) -> None:
        """Apply the journal to the tables in one transaction, then empty it (called holding
        ``_commit_lock``). A crash in between only makes the next open apply it again."""
        assert self._db is not None and self._journal_fd is not None
        try:
            _apply(self._db, self._journaled)
        except sqlite3.Error as error:
            self._failure = error
            raise StoreWriteError(
                f"writing to store {self.path} failed: {error}; this write was not acknowledged, and "
                "the store refuses further writes until it is reopened"
            ) from None
        os.ftruncate(self._journal_fd, 0)
        self._journaled = []

    # -- the public calls: the in-memory change, then the journal ----------------------------------

    start_rollout = _journaled(InMemoryLightningStore.start_rollout)
    enqueue_rollout = _journaled(InMemoryLightningStore.enqueue_rollout)
    dequeue_rollout = _journaled(InMemoryLightningStore.dequeue_rollout)
    start_attempt = _journaled(InMemoryLightningStore.start_attempt)
    update_rollout = _journaled(InMemoryLightningStore.update_rollout)
    update_attempt = _journaled(InMemoryLightningStore.update_attempt)
    add_span = _journaled(InMemoryLightningStore.add_span)
    add_resources = _journaled(InMemoryLightningStore.add_resources)

    async def wait_for_rollouts(
        self, *, rollout_ids: list[str], timeout: float | None = None
    ) -> list[Rollout]:
        result = await super().wait_for_rollouts(rollout_ids=rollout_ids, timeout=timeout)
        if not self._closed:
            self._persist()  # what it returns as finished is committed before the caller acts on it
        return result

    async def query_rollouts(
        self,
        *,
        status: Sequence[RolloutStatus] | None = None,
        rollout_ids: Sequence[str] | None = None,
    ) -> list[Rollout]:
        result = await super().query_rollouts(status=status, rollout_ids=rollout_ids)
        self._journal_sweep()
        return result

    async def get_rollout_by_id(self, rollout_id: str) -> Rollout | None:
        result = await super().get_rollout_by_id(rollout_id)
        self._journal_sweep()
        return result

    def _journal_sweep(self) -> None:
        """A read may have ended attempts whose deadline passed: journal that without making the read
        wait for the commit (the next write or wait commits it if this one does not)."""
        if self._dirty and not self._closed and self._failure is None:
            with self._lock:
                target = self._snapshot()
            if self._commit_lock.acquire(blocking=False):
                self._commit_lock.release()
                self._commit_through(target)

    async def close(self) -> None:
        """Commit what is pending, close the file and release the lock (a temporary store's directory
        is removed). Idempotent; later writes raise."""
        if self._closed:
            return
        try:
            if self._failure is None:
                self._persist()
                with self._commit_lock:
                    if self._journaled:
                        self._checkpoint()
        finally:
            self._closed = True
            self._release()

    def _release(self) -> None:
        with self._commit_lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._journal_fd is not None:
                os.close(self._journal_fd)
                self._journal_fd = None
            if self._lock_fd is not None:
                _HELD_LOCKS.discard(self._lock_fd)
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = None
            if self._owned_dir is not None:
                shutil.rmtree(self._owned_dir, ignore_errors=True)
                self._owned_dir = None
