"""``SqliteLightningStore``: what is its own beyond the store contracts.

The contracts every store keeps (section T, T8 included) are checked through every access path by the
kit's store suite, ``python -m conformance --store agentlightning.store.sqlite.SqliteLightningStore``.
Here: everything survives a reopen exactly as it was read before, queues and liveness resume, and each
bad input (not a store, a newer schema, an unwritable directory, a full disk, a second writer, bad
options) is refused with an error naming it and nothing half-written.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClock, run

from agentlightning.store.sqlite import (
    SCHEMA_VERSION,
    NotAStoreError,
    SchemaVersionError,
    SqliteLightningStore,
    StoreLockedError,
    StoreWriteError,
)
from agentlightning.types import RolloutConfig, Span


def span_for(rollout_id: str, attempt_id: str, span_id: str, sequence_id: int = 0, **attrs: Any) -> Span:
    return Span(
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        span_id=span_id,
        sequence_id=sequence_id,
        attributes=attrs,
    )


async def everything(store: SqliteLightningStore) -> dict[str, Any]:
    rollouts = await store.query_rollouts()
    return {
        "rollouts": [r.model_dump() for r in rollouts],
        "attempts": {
            r.rollout_id: [a.model_dump() for a in await store.query_attempts(r.rollout_id)] for r in rollouts
        },
        "spans": {
            r.rollout_id: [s.model_dump() for s in await store.query_spans(r.rollout_id)] for r in rollouts
        },
        "latest": await store.get_latest_resources(),
    }


def test_everything_reads_back_the_same_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.db"

    async def scenario() -> None:
        store = SqliteLightningStore(path)
        retry = RolloutConfig(max_attempts=3, retry_condition=["failed"], unresponsive_seconds=None)
        first = await store.enqueue_rollout(
            {"q": [1, 2.5, None, "é\U0001f600"]}, mode="train", metadata={"k": "v"}
        )
        second = await store.enqueue_rollout("plain", config=retry)
        third = await store.enqueue_rollout(3)
        claimed = await store.dequeue_rollout()
        assert claimed is not None and claimed.rollout_id == first.rollout_id
        attempt_id = claimed.attempt.attempt_id
        await store.add_span(span_for(first.rollout_id, attempt_id, "a", deep={"x": [1, {"y": True}]}))
        await store.add_span(span_for(first.rollout_id, attempt_id, "b", sequence_id=7))
        await store.add_span(span_for(first.rollout_id, attempt_id, "c", sequence_id=3))
        await store.update_attempt(first.rollout_id, attempt_id, worker_id="w1", metadata={"m": 1})
        await store.update_attempt(first.rollout_id, attempt_id, status="succeeded")
        again = await store.dequeue_rollout()
        assert again is not None and again.rollout_id == second.rollout_id
        await store.update_attempt(second.rollout_id, again.attempt.attempt_id, status="failed")  # requeued
        await store.update_rollout(third.rollout_id, metadata={"edited": True})
        await store.add_resources({"model": {"v": 1}})
        await store.add_resources({"model": {"v": 2}})
        before = await everything(store)
        await store.close()

        reopened = SqliteLightningStore(path)
        assert await everything(reopened) == before
        # A restored config is the frozen value every reader shares: its retry_condition a tuple.
        restored = await reopened.get_rollout_by_id(second.rollout_id)
        assert restored is not None and restored.config == retry
        assert restored.config.retry_condition == ("failed",)
        # The queue resumes in its order: third was queued before second was requeued.
        order = [(await reopened.dequeue_rollout()) for _ in range(3)]
        assert [a.rollout_id if a else None for a in order] == [third.rollout_id, second.rollout_id, None]
        assert order[1] is not None and order[1].attempt.sequence_id == 2
        # New ids never collide with restored ones, and sequence ids continue per attempt.
        span = await reopened.add_span(span_for(first.rollout_id, attempt_id, "d"))
        assert span.sequence_id == 8
        await reopened.close()

    run(scenario())


def test_an_attempt_in_flight_is_recovered_by_its_policy_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    clock = FakeClock()

    async def scenario() -> None:
        store = SqliteLightningStore(path, clock=clock)
        config = RolloutConfig(unresponsive_seconds=5.0, max_attempts=2, retry_condition=["unresponsive"])
        rollout = await store.enqueue_rollout("job", config=config)
        claimed = await store.dequeue_rollout()
        assert claimed is not None
        # The process "dies": its lock goes, the file stays; nothing was closed.
        store._release()  # what a SIGKILL leaves (the lock), minus the kill
        reopened = SqliteLightningStore(path, clock=clock)
        assert (await reopened.get_latest_attempt(rollout.rollout_id)).status == "preparing"  # type: ignore[union-attr]
        clock.advance(6.0)
        after = await reopened.get_rollout_by_id(rollout.rollout_id)
        assert after is not None and after.status == "requeuing"
        attempts = await reopened.query_attempts(rollout.rollout_id)
        assert [a.status for a in attempts] == ["unresponsive"]
        await reopened.close()
        # The sweep seen by a read is journaled too.
        last = SqliteLightningStore(path, clock=clock)
        assert (await last.get_rollout_by_id(rollout.rollout_id)).status == "requeuing"  # type: ignore[union-attr]
        await last.close()

    run(scenario())


def test_a_wait_wakes_on_a_commit_from_another_thread(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteLightningStore(tmp_path / "store.db")
        rollout = await store.enqueue_rollout("x")
        claimed = await store.dequeue_rollout()
        assert claimed is not None
        done = threading.Event()

        def finish() -> None:
            asyncio.run(
                store.update_attempt(rollout.rollout_id, claimed.attempt.attempt_id, status="succeeded")
            )
            done.set()

        waiter = asyncio.ensure_future(store.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=30))
        await asyncio.sleep(0)
        thread = threading.Thread(target=finish)
        thread.start()
        finished = await waiter
        thread.join()
        assert done.is_set() and [r.status for r in finished] == ["succeeded"]
        await store.close()

    run(scenario())


def test_concurrent_writers_from_threads_are_all_committed(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteLightningStore(path)

    def writer(index: int) -> None:
        async def body() -> None:
            for n in range(50):
                await store.enqueue_rollout({"w": index, "n": n})

        asyncio.run(body())

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run(store.close())
    reopened = SqliteLightningStore(path)
    rollouts = run(reopened.query_rollouts())
    assert sorted((r.input["w"], r.input["n"]) for r in rollouts) == [
        (w, n) for w in range(4) for n in range(50)
    ]
    run(reopened.close())


class _PauseAfterRelease:
    """The store's lock, made to hold thread ``first`` just after its first release once armed: the
    moment between a change made in memory and whatever a caller does after the lock."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self.armed = False
        self.reached = threading.Event()
        self.resume = threading.Event()

    def __enter__(self) -> None:
        self._lock.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.__exit__(*exc_info)
        if self.armed and threading.current_thread().name == "first":
            self.armed = False
            self.reached.set()
            assert self.resume.wait(10.0)


def test_the_latest_resources_stay_the_latest_after_reopening(tmp_path: Path) -> None:
    """T8 with T6: two writers race; the one whose resources the store made latest in memory (T6: the
    latest is what ``get_latest_resources`` returns) is the latest read back from the file after
    reopening (T8: every acknowledged write, in its order), however their journal writes interleave."""
    path = tmp_path / "store.db"
    store = SqliteLightningStore(path)
    lock = store._lock = _PauseAfterRelease(store._lock)  # type: ignore[assignment]
    ids: dict[str, str] = {}

    def add(name: str) -> None:
        if name == "first":
            lock.armed = True
        ids[name] = run(store.add_resources({"by": name})).resources_id

    first = threading.Thread(target=add, args=("first",), name="first")
    first.start()
    try:
        assert lock.reached.wait(10.0)  # first's resources are in memory, its call not returned
        add("second")  # made latest after first's, and journaled while first is held
    finally:
        lock.resume.set()
        first.join(10.0)
    latest = run(store.get_latest_resources())
    assert latest is not None and latest.resources_id == ids["second"]
    run(store.close())
    reopened = SqliteLightningStore(path)
    reread = run(reopened.get_latest_resources())
    run(reopened.close())
    assert reread is not None and reread.resources_id == ids["second"]


def test_a_temporary_store_removes_its_directory_on_close() -> None:
    store = SqliteLightningStore()
    directory = os.path.dirname(store.path)
    assert store.reopen_options()["path"] == store.path and os.path.exists(store.path)
    run(store.close())
    run(store.close())  # idempotent
    assert not os.path.exists(directory)
    with pytest.raises(RuntimeError, match="is closed"):
        run(store.enqueue_rollout("late"))


# -- bad input ------------------------------------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the rows you are looking for\n" * 100)
    with pytest.raises(NotAStoreError, match=r"notes\.txt"):
        SqliteLightningStore(path)
    assert path.read_text().startswith("these are not")


def test_a_sqlite_file_of_another_application_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (name TEXT)")
    db.close()
    with pytest.raises(NotAStoreError, match=r"other.db is a SQLite file but not an agentlightning store"):
        SqliteLightningStore(path)


def test_a_newer_schema_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    run(SqliteLightningStore(path).close())
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(
        SchemaVersionError, match=rf"schema version {SCHEMA_VERSION + 1}.*version {SCHEMA_VERSION}"
    ):
        SqliteLightningStore(path)


def test_an_empty_file_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    sqlite3.connect(path).close()  # a SQLite file at version 0
    store = SqliteLightningStore(path)
    run(store.close())
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


_OPEN_AS_NOBODY = """
import os, sys
from agentlightning.store.sqlite import SqliteLightningStore
os.setgid(65534); os.setuid(65534)  # after the imports: the interpreter's files may be root's alone
try:
    SqliteLightningStore(sys.argv[1])
except PermissionError as error:
    print("refused:", error)
"""


def test_a_read_only_directory_is_named() -> None:
    # Not pytest's tmp_path: an unprivileged child (below) must be able to reach the directory.
    with tempfile.TemporaryDirectory() as parent:
        os.chmod(parent, 0o755)
        directory = Path(parent) / "ro"
        directory.mkdir()
        directory.chmod(0o555)
        path = directory / "store.db"
        try:
            if os.geteuid() == 0:  # root writes anywhere: ask an unprivileged child instead
                out = subprocess.run(
                    [sys.executable, "-c", _OPEN_AS_NOBODY, str(path)],
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert out.stdout.startswith("refused:"), out.stderr
                message = out.stdout
            else:
                with pytest.raises(PermissionError) as caught:
                    SqliteLightningStore(path)
                message = str(caught.value)
        finally:
            directory.chmod(0o755)
        assert f"directory {directory} is not writable" in message
        assert not path.exists()


def test_a_full_disk_fails_the_write_and_keeps_every_acknowledged_one(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    run(SqliteLightningStore(path).close())
    pages = os.path.getsize(path) // 4096

    async def fill() -> list[str]:
        store = SqliteLightningStore(path, max_page_count=pages + 8)
        acknowledged: list[str] = []
        with pytest.raises(StoreWriteError, match="full") as caught:
            for n in range(10_000):
                rollout = await store.enqueue_rollout({"n": n, "pad": "x" * 2000})
                acknowledged.append(rollout.rollout_id)
        assert str(path) in str(caught.value)
        with pytest.raises(StoreWriteError, match="refuses writes"):
            await store.enqueue_rollout("after")
        await store.close()
        return acknowledged

    acknowledged = run(fill())
    assert acknowledged
    reopened = SqliteLightningStore(path)
    assert [r.rollout_id for r in run(reopened.query_rollouts())] == acknowledged
    run(reopened.close())


_HOLD = """
import sys
from agentlightning.store.sqlite import SqliteLightningStore
store = SqliteLightningStore(sys.argv[1])
print("open", flush=True)
sys.stdin.readline()
"""


def test_a_second_writer_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(StoreLockedError, match=rf"already open for writing by pid {holder.pid} on host "):
            SqliteLightningStore(path)
    finally:
        holder.communicate("\n", timeout=60)
    run(SqliteLightningStore(path).close())  # the holder is gone: the store opens again


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (
            {"synchronous": "SOMETIMES"},
            r"synchronous must be one of \['FULL', 'NORMAL', 'OFF'\], got 'SOMETIMES'",
        ),
        ({"max_page_count": 0}, "max_page_count must be a positive int or None, got 0"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SqliteLightningStore(tmp_path / "store.db", **options)
    assert not (tmp_path / "store.db").exists()


def test_a_path_of_the_wrong_type_is_named() -> None:
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike, got int 3"):
        SqliteLightningStore(3)  # type: ignore[arg-type]
