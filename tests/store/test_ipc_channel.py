"""The store's IPC channel: every method over the Unix socket, errors, multiplexing, bad clients,
reconnects, pickling (G3) and cleanup of the socket file (R4), against a real server thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import socket
import stat
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from agentlightning.store.ipc import IpcLightningStore, IpcStoreServer, StoreChannelError
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.threaded import ThreadedLightningStore
from agentlightning.types import RolloutConfig, Span

HANG = 30.0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[InMemoryLightningStore, IpcStoreServer]]:
    store = InMemoryLightningStore()
    server = IpcStoreServer(store, tmp_path / "store.sock")
    server.start()
    yield store, server
    server.close()
    assert not (tmp_path / "store.sock").exists()  # R4


def run(coro_fn, *args):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro_fn(*args), HANG))


def test_every_method_round_trips(served: tuple[InMemoryLightningStore, IpcStoreServer]) -> None:
    store, server = served

    async def scenario() -> None:
        client = IpcLightningStore(server.path)
        config = RolloutConfig(max_attempts=2, retry_condition=["failed"])
        queued = await client.enqueue_rollout({"q": 1}, mode="train", config=config, metadata={"k": "v"})
        assert queued.status == "queuing" and queued.config == config and queued.metadata == {"k": "v"}
        started = await client.start_rollout({"s": 2}, resources_id=None)
        assert started.attempt.sequence_id == 1
        claimed = await client.dequeue_rollout()
        assert claimed is not None and claimed.rollout_id == queued.rollout_id
        assert await client.dequeue_rollout() is None
        span = Span(rollout_id=claimed.rollout_id, attempt_id=claimed.attempt.attempt_id, span_id="s-1")
        recorded = await client.add_span(span)
        assert recorded.sequence_id == 1
        assert [s.span_id for s in await client.query_spans(claimed.rollout_id, "latest")] == ["s-1"]
        attempt = await client.update_attempt(
            claimed.rollout_id, "latest", status="failed", worker_id="w", metadata={"n": 1}
        )
        assert attempt.status == "failed" and attempt.worker_id == "w"
        assert (await client.get_rollout_by_id(claimed.rollout_id)).status == "requeuing"  # type: ignore[union-attr]
        retried = await client.start_attempt(claimed.rollout_id)
        assert retried.attempt.sequence_id == 2
        assert [a.sequence_id for a in await client.query_attempts(claimed.rollout_id)] == [1, 2]
        latest = await client.get_latest_attempt(claimed.rollout_id)
        assert latest is not None and latest.sequence_id == 2
        updated = await client.update_rollout(started.rollout_id, status="succeeded", metadata={"done": True})
        assert updated.status == "succeeded"
        assert [r.rollout_id for r in await client.query_rollouts(status=["succeeded"])] == [
            started.rollout_id
        ]
        assert len(await client.query_rollouts(rollout_ids=[queued.rollout_id, started.rollout_id])) == 2
        assert await client.get_rollout_by_id("ro-unknown") is None
        assert await client.get_latest_attempt("ro-unknown") is None
        resources = await client.add_resources({"model": "m-1"})
        assert (await client.get_latest_resources()).resources_id == resources.resources_id  # type: ignore[union-attr]
        assert (await client.get_resources_by_id(resources.resources_id)).resources == {"model": "m-1"}  # type: ignore[union-attr]
        assert await client.get_resources_by_id("nope") is None
        await client.close()

    run(scenario)
    # S3: the served store itself holds every write.
    assert len(asyncio.run(store.query_rollouts())) == 2


def test_store_errors_keep_their_type_and_message(
    served: tuple[InMemoryLightningStore, IpcStoreServer],
) -> None:
    _, server = served

    async def scenario() -> None:
        client = IpcLightningStore(server.path)
        with pytest.raises(ValueError, match="ro-missing"):
            await client.update_rollout("ro-missing", status="failed")
        rollout = await client.enqueue_rollout({})
        await client.update_rollout(rollout.rollout_id, status="succeeded")
        with pytest.raises(ValueError):
            await client.update_rollout(rollout.rollout_id, status="failed")  # illegal transition
        assert (await client.get_rollout_by_id(rollout.rollout_id)) is not None  # the channel survived
        await client.close()

    run(scenario)


def test_wait_for_rollouts_is_multiplexed(served: tuple[InMemoryLightningStore, IpcStoreServer]) -> None:
    """A pending wait does not hold up other calls on the same connection (S2, S5)."""
    _, server = served

    async def scenario() -> None:
        client = IpcLightningStore(server.path)
        rollout = await client.start_rollout({"x": 1})
        waiting = asyncio.ensure_future(
            client.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=HANG)
        )
        await client.add_span(
            Span(rollout_id=rollout.rollout_id, attempt_id=rollout.attempt.attempt_id, span_id="s")
        )
        assert not waiting.done()
        await client.update_attempt(rollout.rollout_id, rollout.attempt.attempt_id, status="succeeded")
        (done,) = await waiting
        assert done.status == "succeeded"
        assert await client.wait_for_rollouts(rollout_ids=[], timeout=0) == []
        await client.close()

    run(scenario)


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    path = str(tmp_path / "nobody.sock")

    async def scenario() -> None:
        with pytest.raises(StoreChannelError, match=r"cannot reach the ipc store server at .*nobody\.sock"):
            await IpcLightningStore(path).get_latest_resources()

    run(scenario)


def test_server_closing_fails_pending_calls(tmp_path: Path) -> None:
    server = IpcStoreServer(InMemoryLightningStore(), tmp_path / "s.sock")
    server.start()

    async def scenario() -> None:
        client = IpcLightningStore(server.path)
        rollout = await client.start_rollout({})
        waiting = asyncio.ensure_future(client.wait_for_rollouts(rollout_ids=[rollout.rollout_id]))
        await client.get_latest_resources()  # the wait is registered on the server by now
        await asyncio.get_running_loop().run_in_executor(None, server.close)
        with pytest.raises(StoreChannelError, match="closed"):
            await waiting
        await client.close()

    run(scenario)


def test_G3_client_pickles_and_reconnects(served: tuple[InMemoryLightningStore, IpcStoreServer]) -> None:
    _, server = served
    client = IpcLightningStore(server.path)

    async def use(c: IpcLightningStore) -> str:
        rollout = await c.enqueue_rollout({"n": 1})
        return rollout.rollout_id

    first = asyncio.run(use(client))  # connected on one loop ...
    second = asyncio.run(use(client))  # ... and reconnects on the next
    copy = pickle.loads(pickle.dumps(client))
    assert copy.path == server.path
    third = asyncio.run(use(copy))
    assert len({first, second, third}) == 3

    async def close_twice() -> None:
        await copy.close()
        await copy.close()

    asyncio.run(close_twice())


def test_concurrent_first_calls_share_one_connection(
    served: tuple[InMemoryLightningStore, IpcStoreServer],
) -> None:
    _, server = served

    async def scenario() -> None:
        client = IpcLightningStore(server.path)
        rollouts = await asyncio.gather(*(client.enqueue_rollout({"i": i}) for i in range(50)))
        assert len({r.rollout_id for r in rollouts}) == 50
        assert len(server._connections) == 1
        await client.close()

    run(scenario)


def _raw_call(path: str, frame: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(HANG)
        sock.connect(path)
        sock.sendall(frame)
        chunks = b""
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            data = sock.recv(65536)
            if not data:
                return chunks
            chunks += data
            unpacker.feed(data)
            if any(True for _ in unpacker):  # one whole reply
                return chunks


def _frame(message: object) -> bytes:
    return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]


def test_unknown_method_is_refused_by_name(served: tuple[InMemoryLightningStore, IpcStoreServer]) -> None:
    _, server = served
    reply = _raw_call(server.path, _frame([1, "__class__", {}]))
    request_id, status, payload = msgpack.unpackb(reply)
    assert (request_id, status) == (1, 1)
    from agentlightning.execution.remote_errors import load_exception

    error = load_exception(payload)
    assert isinstance(error, ValueError) and "'__class__'" in str(error)


def test_bad_client_is_dropped_and_others_continue(
    served: tuple[InMemoryLightningStore, IpcStoreServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = served
    monkeypatch.setattr("agentlightning.store.ipc.MAX_FRAME_BYTES", 1024)  # for connections made from now
    # A message larger than the limit: the client is dropped once the limit is reached.
    assert _raw_call(server.path, b"\xc5" + struct.pack(">H", 4000) + b"x" * 4000) == b""
    assert _raw_call(server.path, b"\xc1") == b""  # a byte msgpack never uses: dropped
    assert _raw_call(server.path, _frame("not a request")) != b""  # malformed request: an error reply

    async def scenario() -> None:
        client = IpcLightningStore(server.path)
        assert await client.get_latest_resources() is None
        await client.close()

    run(scenario)


def test_R4_socket_file_is_private_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "private.sock"
    server = IpcStoreServer(InMemoryLightningStore(), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    server.close()  # closing a server that never started is fine too
    assert not path.exists()
    server.close()


def test_server_thread_is_gone_after_close(tmp_path: Path) -> None:
    before = {t.name for t in threading.enumerate()}
    server = IpcStoreServer(InMemoryLightningStore(), tmp_path / "t.sock")
    server.start()
    assert "agl-ipc-store-server" in {t.name for t in threading.enumerate()}
    server.close()
    assert {t.name for t in threading.enumerate()} == before


def test_taken_path_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "taken.sock"
    path.write_text("occupied")
    with pytest.raises(StoreChannelError, match=r"taken\.sock"):
        IpcStoreServer(InMemoryLightningStore(), path)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 100_000])
def test_frames_split_anywhere_are_reassembled(chunk: int) -> None:
    from agentlightning.store.ipc import _FrameReader

    messages_in = ([i, "method", {"payload": "x" * i, "blob": b"\x00" * i}] for i in range(40))
    stream = b"".join(msgpack.packb(message, use_bin_type=True) for message in messages_in)
    reader = _FrameReader()
    messages = []
    for start in range(0, len(stream), chunk):
        messages += reader.feed(stream[start : start + chunk])
    assert [m[0] for m in messages] == list(range(40))
    assert messages[39][2] == {"payload": "x" * 39, "blob": b"\x00" * 39}
    assert reader.feed(b"") == []


class _SlowResources(InMemoryLightningStore):
    """Answers ``get_latest_resources`` only after ``release`` is set (blocking the connection thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    async def get_latest_resources(self):  # type: ignore[no-untyped-def]
        self.entered.set()
        assert self.release.wait(HANG)
        return await super().get_latest_resources()


def test_S5_a_late_reply_is_awaited_on_the_loop(tmp_path: Path) -> None:
    """A reply slower than the fast path is awaited on the event loop: the caller's other tasks run."""
    store = _SlowResources()
    with IpcStoreServer(store, tmp_path / "s.sock") as server:

        async def scenario() -> None:
            client = IpcLightningStore(server.path)
            call = asyncio.ensure_future(client.get_latest_resources())
            # This task runs only if the call above gave the loop back while its reply was pending.
            await asyncio.get_running_loop().run_in_executor(None, store.entered.wait, HANG)
            assert not call.done()
            store.release.set()
            assert await call is None
            await client.close()

        run(scenario)


def test_L6_calls_answered_off_the_loop_still_yield_and_cancel(
    served: tuple[InMemoryLightningStore, IpcStoreServer],
) -> None:
    """A caller that only talks to the store still lets its loop's other tasks run and be cancelled."""
    _, server = served

    async def scenario() -> None:
        client = IpcLightningStore(server.path)
        await client.get_latest_resources()  # connected
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        other = asyncio.ensure_future(ticker())
        deadline = asyncio.get_running_loop().time() + HANG
        while ticks < 2:  # no await but the store's own: the ticker runs only if those yield
            await client.get_latest_resources()
            assert asyncio.get_running_loop().time() < deadline, "store calls never yielded to the loop"
        other.cancel()

        async def store_only() -> None:
            while True:
                await client.get_latest_resources()

        looping = asyncio.ensure_future(store_only())
        await asyncio.sleep(0)
        looping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(looping, HANG)
        await client.close()

    run(scenario)


class _NotThreadSafe(InMemoryLightningStore):
    thread_safe = False


@contextlib.contextmanager
def _confined_store() -> Iterator[ThreadedLightningStore]:
    """A store that is not thread-safe, wrapped as the strategy wraps one (every call suspends)."""
    wrapped = ThreadedLightningStore(_NotThreadSafe())
    try:
        yield wrapped
    finally:
        wrapped.close_sync()


def test_S2_a_store_whose_calls_all_suspend_is_served(tmp_path: Path) -> None:
    """A store that is not thread-safe is wrapped (every call then suspends on the server side)."""
    with _confined_store() as wrapped, IpcStoreServer(wrapped, tmp_path / "s.sock") as server:

        async def scenario() -> None:
            client = IpcLightningStore(server.path)
            queued = await asyncio.gather(*(client.enqueue_rollout({"i": i}) for i in range(20)))
            claimed = [await client.dequeue_rollout() for _ in queued]
            assert {c.rollout_id for c in claimed if c} == {q.rollout_id for q in queued}
            assert await client.get_latest_resources() is None
            await client.close()

        run(scenario)


def test_R1_close_unblocks_a_connection_whose_client_stopped_reading(tmp_path: Path) -> None:
    """A client that never reads fills the socket; ``close()`` still ends its thread (bounded)."""
    store = InMemoryLightningStore()
    server = IpcStoreServer(store, tmp_path / "s.sock")
    server.start()
    before = set(threading.enumerate())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(server.path)
        sock.settimeout(HANG)
        sock.sendall(_frame([0, "get_latest_resources", {}]))
        assert sock.recv(65536), "answered: the connection's thread runs"
        serving = set(threading.enumerate()) - before
        assert serving, "a connection thread serves the client"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        request = _frame([1, "query_rollouts", {"status": None, "rollout_ids": None}])
        asyncio.run(_enqueue_many(store, 200))  # each reply carries 200 rollouts
        sock.settimeout(0.0)
        sent = 0
        for _ in range(2000):  # until our sends block: the server is then stuck writing to us
            try:
                sock.send(request)
                sent += 1
            except BlockingIOError:
                break
        assert sent > 0
        server.close(timeout=HANG)
        assert not any(t.is_alive() for t in serving)


async def _enqueue_many(store: InMemoryLightningStore, n: int) -> None:
    for i in range(n):
        await store.enqueue_rollout({"i": i})


@pytest.mark.parametrize("confined", [False, True], ids=["answered-inline", "answered-by-tasks"])
def test_S1_multi_megabyte_results_arrive_whole_and_in_order(tmp_path: Path, confined: bool) -> None:
    """Replies larger than a read and than the socket buffer arrive intact: sent from the connection's
    reused buffer inline, or from concurrent tasks (a confined store) that must not interleave them."""
    store = _confined_store() if confined else contextlib.nullcontext(InMemoryLightningStore())
    sizes = [3_000_000, 10, 1_500_000, 700_000]
    with store as served_store, IpcStoreServer(served_store, tmp_path / "s.sock") as server:

        async def scenario() -> None:
            client = IpcLightningStore(server.path)
            queued = [await client.enqueue_rollout({"blob": str(i) * size}) for i, size in enumerate(sizes)]
            ids = [q.rollout_id for q in queued]
            for _ in range(2):  # the second round reuses the buffers the first one grew
                fetched = await asyncio.gather(*(client.get_rollout_by_id(rid) for rid in ids))
                for i, (rollout, size) in enumerate(zip(fetched, sizes, strict=True)):
                    assert rollout is not None and rollout.rollout_id == ids[i]
                    assert rollout.input == {"blob": str(i) * size}
            await client.close()

        run(scenario)


def test_S4_a_reply_that_cannot_be_packed_is_an_error_and_the_channel_survives(
    served: tuple[InMemoryLightningStore, IpcStoreServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentlightning.store import ipc

    _, server = served
    monkeypatch.setitem(ipc._RESULT_ENCODERS, "get_latest_resources", lambda value: {"not": object()})

    async def scenario() -> None:
        client = IpcLightningStore(server.path)
        with pytest.raises(TypeError, match="object"):
            await client.get_latest_resources()
        rollout = await client.enqueue_rollout({"after": "the failed reply"})  # nothing half-packed is left
        assert (await client.get_rollout_by_id(rollout.rollout_id)) == rollout
        await client.close()

    run(scenario)


def test_S4_a_request_that_cannot_be_packed_raises_to_its_caller_and_the_channel_survives(
    served: tuple[InMemoryLightningStore, IpcStoreServer],
) -> None:
    _, server = served

    async def scenario() -> None:
        client = IpcLightningStore(server.path)
        rollout = await client.enqueue_rollout({"i": 1})
        with pytest.raises(TypeError):
            await client.update_rollout(rollout.rollout_id, metadata={"not msgpack": object()})
        big = {"blob": "z" * 2_000_000}  # larger than the socket takes at once: queued, then drained
        updated = await client.update_rollout(rollout.rollout_id, metadata=big)
        assert updated.metadata == big
        assert (await client.get_rollout_by_id(rollout.rollout_id)) == updated
        await client.close()

    run(scenario)
