"""The store's IPC channel: every method over the Unix socket, errors, multiplexing, bad clients,
reconnects, pickling (G3) and cleanup of the socket file (R4), against a real server thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import re
import select
import socket
import stat
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest

from agentlightning.store.ipc import IpcLightningStore, IpcStoreServer, StoreChannelError
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.methods import METHODS
from agentlightning.store.remote import StoreServerError
from agentlightning.store.threaded import ThreadedLightningStore
from agentlightning.types import Rollout, RolloutConfig, Span

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
        try:
            sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            return b""  # dropped before it took it all
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
    from agentlightning.remote_errors import load_exception

    error = load_exception(payload)
    assert isinstance(error, ValueError) and "'__class__'" in str(error)


@pytest.mark.parametrize("size", [4000, 1_000_000])
def test_bad_client_is_dropped_and_others_continue(tmp_path: Path, size: int) -> None:
    with IpcStoreServer(InMemoryLightningStore(), tmp_path / "s.sock", max_request_bytes=1024) as server:
        # A message larger than the limit (whole in one read, or more than the reader buffers): dropped.
        assert _raw_call(server.path, b"\xc6" + struct.pack(">I", size) + b"x" * size) == b""
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
    reader = _FrameReader(1 << 20)
    messages = []
    for start in range(0, len(stream), chunk):
        messages += reader.messages(stream[start : start + chunk])
    assert [m[0] for m in messages] == list(range(40))
    assert messages[39][2] == {"payload": "x" * 39, "blob": b"\x00" * 39}
    assert reader.messages(b"") == []


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
    encode = ipc._encode
    monkeypatch.setattr(
        ipc,
        "_encode",
        lambda method, result: (
            {"not": object()} if method.name == "get_latest_resources" else encode(method, result)
        ),
    )

    async def scenario() -> None:
        client = IpcLightningStore(server.path)
        # Not a ValueError: raised as StoreServerError (the rule of every remote path), the cause kept.
        with pytest.raises(
            StoreServerError, match=r"failed get_latest_resources: TypeError: .*object"
        ) as failed:
            await client.get_latest_resources()
        assert isinstance(failed.value.__cause__, TypeError)
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
        with pytest.raises(ValueError, match=r"rollout_id: object is not JSON-representable"):
            await client.get_rollout_by_id(object())  # type: ignore[arg-type]  # refused before it is sent
        with pytest.raises(TypeError):  # below the value rule: msgpack cannot encode it
            await client._call(METHODS["get_rollout_by_id"], {"rollout_id": object()})
        with pytest.raises(ValueError, match=r"metadata\['not JSON'\]"):  # refused by the value rule
            await client.update_rollout(rollout.rollout_id, metadata={"not JSON": object()})
        big = {"blob": "z" * 2_000_000}  # larger than the socket takes at once: queued, then drained
        updated = await client.update_rollout(rollout.rollout_id, metadata=big)
        assert updated.metadata == big
        assert (await client.get_rollout_by_id(rollout.rollout_id)) == updated
        await client.close()

    run(scenario)


# -- backpressure and bounds ----------------------------------------------------------------------------

_FLOOD = 400
"""Requests a misbehaving client sends at most; each is answered with about a megabyte."""
_STALL = 1.0
"""Seconds without the server reading a byte from us after which we take it that it stopped reading."""


def _flood_without_reading(sock: socket.socket, request: bytes) -> int:
    """Send ``request`` up to ``_FLOOD`` times without reading a reply; how many went out whole.

    Stops early once the server has not read anything for ``_STALL`` seconds (our send buffer is full).
    """
    sock.setblocking(False)
    sent = 0
    pending = memoryview(request)
    while sent < _FLOOD:
        try:
            pending = pending[sock.send(pending) :]
        except BlockingIOError:
            if not select.select([], [sock], [], _STALL)[1]:
                break
            continue
        if not pending:
            sent += 1
            pending = memoryview(request)
    sock.setblocking(True)
    return sent


def _read_replies(sock: socket.socket, count: int) -> list[Any]:
    sock.settimeout(HANG)
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=0)
    replies: list[Any] = []
    while len(replies) < count:
        data = sock.recv(1 << 20)
        assert data, f"the server hung up after {len(replies)} of {count} replies"
        unpacker.feed(data)
        replies += list(unpacker)
    return replies


@pytest.mark.parametrize("confined", [False, True], ids=["answered-inline", "answered-by-tasks"])
def test_backpressure_a_client_that_reads_no_reply_is_not_read_from(
    tmp_path: Path, confined: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that sends without reading, while a wait of its own is pending (the server then reads it
    through its event loop): the server stops reading it instead of buffering its replies, its memory
    stays bounded, other clients are served meanwhile, and the stalled client gets every reply once it
    reads."""
    # A confined store's calls all suspend: the server may take up to this many small requests before
    # their replies, sent one by one, block it. Well under _FLOOD, so that stopping to read shows.
    monkeypatch.setattr("agentlightning.store.ipc._MAX_CALLS_IN_FLIGHT", 16, raising=False)
    store_cm = _confined_store() if confined else contextlib.nullcontext(InMemoryLightningStore())
    with store_cm as store, IpcStoreServer(store, tmp_path / "s.sock") as server:
        waited = run(store.start_rollout, {"never": "finishes"})
        big = run(store.enqueue_rollout, {"blob": "x" * 1_000_000})
        me = psutil.Process()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # we fill it quickly
            sock.connect(server.path)
            wait = {"rollout_ids": [waited.rollout_id], "timeout": None}
            sock.sendall(_frame([0, "wait_for_rollouts", wait]) + _frame([1, "get_latest_resources", {}]))
            assert _read_replies(sock, 1)[0][:2] == [1, 0], "answered while the wait is pending"
            rss_before = me.memory_info().rss
            sent = _flood_without_reading(
                sock, _frame([2, "get_rollout_by_id", {"rollout_id": big.rollout_id}])
            )
            growth = me.memory_info().rss - rss_before
            assert sent < _FLOOD, f"the server read all {sent} requests of a client that reads no reply"
            assert growth < 150 * 2**20, f"the server grew by {growth / 2**20:.0f} MiB for one stalled client"

            async def other_client() -> None:
                client = IpcLightningStore(server.path)
                assert (await client.get_rollout_by_id(waited.rollout_id)) is not None
                await client.close()

            run(other_client)
            replies = _read_replies(sock, sent)
            assert [r[:2] for r in replies] == [[2, 0]] * sent
            assert Rollout.model_validate_json(replies[-1][2]).rollout_id == big.rollout_id


class _HeldEnqueue(InMemoryLightningStore):
    """Not thread-safe (so the server's calls suspend); ``enqueue_rollout`` blocks until ``release``."""

    thread_safe = False

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    async def enqueue_rollout(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        assert self.release.wait(HANG)
        return await super().enqueue_rollout(*args, **kwargs)


def test_backpressure_calls_in_flight_hold_at_most_max_request_bytes(tmp_path: Path) -> None:
    """A client that floods a slow store with large requests: the server stops reading it once the calls
    in flight hold ``max_request_bytes``, instead of decoding every request into a pending task."""
    inner = _HeldEnqueue()
    held = ThreadedLightningStore(inner)
    limit = 8 * 2**20
    try:
        with IpcStoreServer(held, tmp_path / "s.sock", max_request_bytes=limit) as server:
            me = psutil.Process()
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(server.path)
                request = _frame([1, "enqueue_rollout", {"input": {"blob": "y" * 1_000_000}}])
                rss_before = me.memory_info().rss
                sent = _flood_without_reading(sock, request)
                growth = me.memory_info().rss - rss_before
                assert inner.entered.is_set()
                assert sent < _FLOOD, f"the server read all {sent} requests while none could be answered"
                assert growth < 150 * 2**20, f"the server grew by {growth / 2**20:.0f} MiB for one client"
                inner.release.set()
                replies = _read_replies(sock, sent)
                assert [r[:2] for r in replies] == [[1, 0]] * sent
    finally:
        inner.release.set()
        held.close_sync()


def test_connections_over_max_connections_are_refused_by_name(tmp_path: Path) -> None:
    with IpcStoreServer(InMemoryLightningStore(), tmp_path / "s.sock", max_connections=2) as server:

        async def scenario() -> None:
            first, second, third = (IpcLightningStore(server.path) for _ in range(3))
            assert await first.get_latest_resources() is None
            assert await second.get_latest_resources() is None
            with pytest.raises(
                StoreChannelError, match=r"was refused: .*at most 2 connections.*max_connections"
            ):
                await third.get_latest_resources()
            assert await first.enqueue_rollout({"still": "served"})  # the others carry on
            await first.close()
            await second.close()
            await third.close()

        run(scenario)


def test_a_request_over_max_request_bytes_is_refused_by_the_client_and_the_channel_survives(
    tmp_path: Path,
) -> None:
    with IpcStoreServer(InMemoryLightningStore(), tmp_path / "s.sock", max_request_bytes=2**20) as server:

        async def scenario() -> None:
            client = IpcLightningStore(server.path, max_request_bytes=server.max_request_bytes)
            with pytest.raises(ValueError, match=r"enqueue_rollout request of \d+ bytes exceeds .*1048576"):
                await client.enqueue_rollout({"blob": "z" * 2**20})
            fits = await client.enqueue_rollout({"blob": "z" * 900_000})
            assert (await client.get_rollout_by_id(fits.rollout_id)) == fits
            await client.close()

        run(scenario)


def test_waits_over_the_limit_are_refused_by_name_and_the_connection_carries_on(
    served: tuple[InMemoryLightningStore, IpcStoreServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, server = served
    monkeypatch.setattr("agentlightning.store.ipc._MAX_WAITS", 2)
    rollout = run(store.start_rollout, {})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(server.path)
        wait = {"rollout_ids": [rollout.rollout_id], "timeout": None}
        sock.sendall(b"".join(_frame([i, "wait_for_rollouts", wait]) for i in range(3)))
        sock.sendall(_frame([3, "get_latest_resources", {}]))
        refused, answered = _read_replies(sock, 2)
        assert refused[:2] == [2, 1] and answered == [3, 0, None]
        from agentlightning.remote_errors import load_exception

        error = load_exception(refused[2])
        assert isinstance(error, RuntimeError) and "2 waits pending" in str(error)
        run(store.update_attempt, rollout.rollout_id, rollout.attempt.attempt_id, "succeeded")
        assert sorted(r[0] for r in _read_replies(sock, 2)) == [0, 1]  # the pending waits end as usual


# -- T5: the value rule at the ipc boundary -------------------------------------------------------------

_WRITES = frozenset(
    {"enqueue_rollout", "start_rollout", "update_rollout", "update_attempt", "add_span", "add_resources"}
)


class _Recording(InMemoryLightningStore):
    """Records every write method the server looks up (it looks one up only to call it)."""

    def __init__(self) -> None:
        super().__init__()
        self.called: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        if name in _WRITES:
            object.__getattribute__(self, "called").append(name)
        return super().__getattribute__(name)


def _invalid_utf8(message: object) -> bytes:
    """``message`` packed, with every str ``"@@"`` in it replaced by two bytes that are not UTF-8."""
    return _frame(message).replace(b"\xa2@@", b"\xa2\xff\xfe")


def test_T5_the_server_applies_the_value_rule_before_calling_the_store(tmp_path: Path) -> None:
    """Whatever store it serves: bytes, str that is not UTF-8, non-str keys and NaN are refused naming the
    field, the store is never called with them, and the connection carries on."""
    from agentlightning.remote_errors import load_exception

    store = _Recording()
    rollout = run(store.start_rollout, {})
    before = run(store.get_rollout_by_id, rollout.rollout_id)
    store.called.clear()
    ids = {"rollout_id": rollout.rollout_id, "attempt_id": rollout.attempt.attempt_id}
    span = {**ids, "span_id": "s"}
    refused = [
        (_frame([1, "enqueue_rollout", {"input": {"b": b"\x00\xff"}}]), r"input\['b'\]: bytes"),
        (_invalid_utf8([2, "enqueue_rollout", {"input": {"k": ["@@"]}}]), r"input\['k'\]\[0\]"),
        (_frame([3, "enqueue_rollout", {"input": {}, "metadata": {7: "x"}}]), r"metadata\[7\]: key 7"),
        (_frame([4, "update_attempt", {**ids, "metadata": {"n": float("nan")}}]), r"metadata\['n'\]: nan"),
        (_frame([5, "add_span", {"span": {**span, "attributes": {"a": b"x"}}}]), r"span.attributes\['a'\]"),
        (_invalid_utf8([6, "add_span", {"span": {**span, "name": "@@"}}]), r"span.name"),
        (_frame([7, "add_resources", {"resources": {"r": b"\x01"}}]), r"resources\['r'\]: bytes"),
        (_invalid_utf8([8, "update_rollout", {"rollout_id": "@@", "status": "failed"}]), r"rollout_id"),
    ]
    with IpcStoreServer(store, tmp_path / "s.sock") as server, socket.socket(socket.AF_UNIX) as sock:
        sock.connect(server.path)
        for frame, field in refused:
            sock.sendall(frame)
            (reply,) = _read_replies(sock, 1)
            assert reply[1] == 1, reply
            error = load_exception(reply[2])
            assert isinstance(error, ValueError), error
            assert re.search(field, str(error)), (field, str(error))
        sock.sendall(_frame([9, "add_resources", {"resources": {"r": "ok"}}]))
        (reply,) = _read_replies(sock, 1)
        assert reply[:2] == [9, 0], "the same connection carries on"
    assert store.called == ["add_resources"]  # the store saw nothing refused
    assert run(store.get_rollout_by_id, rollout.rollout_id) == before  # nothing changed


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c, r: c.enqueue_rollout({"b": b"bytes"}), r"input\['b'\]: bytes"),
        (lambda c, r: c.start_rollout({}, metadata={"s": "\udc80"}), r"metadata\['s'\]: .*surrogate"),
        (lambda c, r: c.update_rollout(r.rollout_id, input=[{1: 2}]), r"input\[0\]\[1\]: key 1"),
        (lambda c, r: c.update_attempt(r.rollout_id, "latest", metadata={"x": float("inf")}), r"metadata"),
        (
            lambda c, r: c.add_span(
                Span(
                    rollout_id=r.rollout_id,
                    attempt_id=r.attempt.attempt_id,
                    span_id="s",
                    attributes={"b": b""},
                )
            ),
            r"span.attributes\['b'\]: bytes",
        ),
        (lambda c, r: c.add_resources({"m": {"weights": b"\x00"}}), r"resources\['m'\]\['weights'\]"),
    ],
    ids=["input", "metadata", "keys", "attempt-metadata", "span", "resources"],
)
def test_T5_the_client_refuses_values_before_sending_and_carries_on(
    tmp_path: Path, call: Any, field: str
) -> None:
    """A value the rule refuses never leaves the client (bytes are not turned into str on the way)."""
    store = _Recording()
    rollout = run(store.start_rollout, {})
    before = run(store.get_rollout_by_id, rollout.rollout_id)
    store.called.clear()
    with IpcStoreServer(store, tmp_path / "s.sock") as server:

        async def scenario() -> None:
            client = IpcLightningStore(server.path)
            assert await client.get_latest_resources() is None  # connected
            with pytest.raises(ValueError, match=field):
                await call(client, rollout)
            assert (await client.get_rollout_by_id(rollout.rollout_id)) == before
            assert len(server._connections) == 1  # the same connection carries on
            await client.close()

        run(scenario)
    assert store.called == []


def test_T5_values_read_back_equal_over_ipc(served: tuple[InMemoryLightningStore, IpcStoreServer]) -> None:
    _, server = served
    value = {
        "text": "héllo ✓ 𝄞",
        "nested": [[1, -(2**63), 2**63 - 1], {"f": 0.1, "e": -1.5e300}, [], {}],
        "flags": [True, False, None],
        "tuple": (1, "two"),
    }

    async def scenario() -> None:
        client = IpcLightningStore(server.path)
        rollout = await client.enqueue_rollout(value, metadata=value)
        expected = {**value, "tuple": [1, "two"]}  # every wire makes a list of a tuple
        for read in (rollout, await client.get_rollout_by_id(rollout.rollout_id)):
            assert read is not None and read.input == expected and read.metadata == expected
        await client.close()

    run(scenario)


def test_buffers_grown_by_a_large_message_are_dropped_once_it_is_through() -> None:
    """An idle connection keeps little memory, whatever it carried once; small messages keep reusing."""
    from agentlightning.store.ipc import _KEEP_BUFFER_BYTES, _FrameReader, _ReusedPacker

    large = _frame([1, "m", {"blob": "x" * (_KEEP_BUFFER_BYTES + 1)}])
    reader = _FrameReader(len(large))
    first = reader._unpacker
    assert reader.messages(_frame([0, "m", {}])) == [[0, "m", {}]]
    assert reader._unpacker is first  # reused
    for start in range(0, len(large), 1 << 20):
        reader.messages(large[start : start + (1 << 20)])
    assert reader._unpacker is not first  # the grown one is dropped
    assert reader.messages(_frame([2, "m", {}])) == [[2, "m", {}]]

    packer = _ReusedPacker()
    small_one = packer._packer
    packer.release(packer.pack("small"))
    assert packer._packer is small_one
    packer.release(packer.pack("x" * (_KEEP_BUFFER_BYTES + 1)))
    assert packer._packer is not small_one
    view = packer.pack("after")
    assert msgpack.unpackb(view) == "after"
    packer.release(view)
