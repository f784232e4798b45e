"""The store's HTTP boundary, against a live server on loopback (port 0): every method, and bad input."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import pickle
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
import trustme

from agentlightning.store.http import (
    HttpLightningStore,
    LightningStoreServer,
    ServerBindError,
    StoreServerUnreachable,
    create_app,
)
from agentlightning.store.http.client import StoreServerError
from agentlightning.store.http.limits import DEFAULT_MAX_BODY_BYTES, ServerLimits
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import RolloutConfig, Span

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def served() -> Iterator[tuple[InMemoryLightningStore, LightningStoreServer]]:
    store = InMemoryLightningStore()
    server = LightningStoreServer(store, "127.0.0.1", 0)
    server.start()
    try:
        yield store, server
    finally:
        server.stop()


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with_client(url: str, body: Any, **kwargs: Any) -> Any:
    client = HttpLightningStore(url, **kwargs)
    try:
        return await body(client)
    finally:
        await client.close()


# -- every method -----------------------------------------------------------------------------------------


def test_every_store_method_round_trips(served: tuple[InMemoryLightningStore, LightningStoreServer]) -> None:
    store, server = served

    async def body(client: HttpLightningStore) -> None:
        await client.health()
        res = await client.add_resources({"model": {"endpoint": "http://model"}})
        assert (await client.get_latest_resources()) == res
        assert (await client.get_resources_by_id(res.resources_id)) == res
        assert (await client.get_resources_by_id("no-such-resources")) is None

        config = RolloutConfig(max_attempts=2, retry_condition=["failed"])
        queued = await client.enqueue_rollout(
            {"q": 1}, mode="train", resources_id=res.resources_id, config=config, metadata={"k": "v"}
        )
        assert queued.status == "queuing" and queued.config == config and queued.metadata == {"k": "v"}
        started = await client.start_rollout({"q": 2}, mode="val")
        assert started.attempt.sequence_id == 1 and started.status == "preparing"

        claimed = await client.dequeue_rollout()
        assert claimed is not None and claimed.rollout_id == queued.rollout_id
        assert (await client.dequeue_rollout()) is None

        span = await client.add_span(
            Span(
                rollout_id=claimed.rollout_id, attempt_id=claimed.attempt.attempt_id, span_id="s1", name="llm"
            )
        )
        assert span.sequence_id == 1
        assert [s.span_id for s in await client.query_spans(claimed.rollout_id)] == ["s1"]
        assert [s.span_id for s in await client.query_spans(claimed.rollout_id, "latest")] == ["s1"]

        failed = await client.update_attempt(claimed.rollout_id, claimed.attempt.attempt_id, status="failed")
        assert failed.status == "failed"
        requeued = await client.get_rollout_by_id(claimed.rollout_id)
        assert requeued is not None and requeued.status == "requeuing"
        second = await client.start_attempt(claimed.rollout_id)
        assert second.attempt.sequence_id == 2
        assert [a.sequence_id for a in await client.query_attempts(claimed.rollout_id)] == [1, 2]
        latest = await client.get_latest_attempt(claimed.rollout_id)
        assert latest is not None and latest.attempt_id == second.attempt.attempt_id
        beat = await client.update_attempt(
            claimed.rollout_id, "latest", worker_id="w0", last_heartbeat_time=1.0, metadata={"a": 1}
        )
        assert beat.worker_id == "w0" and beat.status == "running" and beat.metadata == {"a": 1}
        await client.update_attempt(claimed.rollout_id, "latest", status="succeeded")

        done = await client.wait_for_rollouts(rollout_ids=[claimed.rollout_id, started.rollout_id], timeout=0)
        assert [r.rollout_id for r in done] == [claimed.rollout_id]

        # update_rollout changes only what is given; None is a value for mode/resources_id.
        updated = await client.update_rollout(started.rollout_id, mode=None, metadata={"m": 2})
        assert updated.mode is None and updated.metadata == {"m": 2} and updated.input == {"q": 2}
        cancelled = await client.update_rollout(started.rollout_id, status="cancelled")
        assert cancelled.status == "cancelled"

        by_status = await client.query_rollouts(status=["succeeded", "cancelled"])
        assert {r.rollout_id for r in by_status} == {claimed.rollout_id, started.rollout_id}
        by_id = await client.query_rollouts(rollout_ids=[started.rollout_id])
        assert [r.rollout_id for r in by_id] == [started.rollout_id]
        assert len(await client.query_rollouts()) == 2

    _run(_with_client(server.url, body))
    # Writes over HTTP land in the served store itself.
    assert _run(store.get_rollout_by_id(_run(store.query_rollouts())[0].rollout_id)) is not None
    assert {r.status for r in _run(store.query_rollouts())} == {"succeeded", "cancelled"}


def test_lookups_of_unknown_ids_answer_none(
    served: tuple[InMemoryLightningStore, LightningStoreServer],
) -> None:
    _, server = served

    async def body(client: HttpLightningStore) -> None:
        assert await client.get_rollout_by_id("ro-missing") is None
        assert await client.get_latest_attempt("ro-missing") is None
        assert await client.get_latest_resources() is None

    _run(_with_client(server.url, body))


def test_wait_for_rollouts_does_not_block_the_server(
    served: tuple[InMemoryLightningStore, LightningStoreServer],
) -> None:
    _, server = served

    async def body(client: HttpLightningStore) -> None:
        rollout = await client.enqueue_rollout("x")
        waiting = asyncio.create_task(client.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=60))
        # Other requests are served while the wait is held; completing the rollout wakes it.
        claimed = await client.dequeue_rollout()
        assert claimed is not None
        assert not waiting.done()
        await client.update_attempt(claimed.rollout_id, claimed.attempt.attempt_id, status="succeeded")
        done = await asyncio.wait_for(waiting, 30)
        assert [r.status for r in done] == ["succeeded"]

    _run(_with_client(server.url, body))


class _CountingStore(InMemoryLightningStore):
    """Signals each ``wait_for_rollouts`` request the server makes, so the test can act at a chosen one."""

    def __init__(self) -> None:
        super().__init__()
        self.wait_calls = 0
        self.second_wait = threading.Event()

    async def wait_for_rollouts(self, *, rollout_ids: list[str], timeout: float | None = None) -> list[Any]:
        self.wait_calls += 1
        if self.wait_calls == 2:
            self.second_wait.set()
        return await super().wait_for_rollouts(rollout_ids=rollout_ids, timeout=timeout)


def test_long_waits_are_bounded_per_request_and_resumed_by_the_client() -> None:
    store = _CountingStore()
    with LightningStoreServer(store, max_wait_seconds=0.05) as server:

        async def body(client: HttpLightningStore) -> None:
            rollout = await client.enqueue_rollout("x")
            claimed = await client.dequeue_rollout()
            assert claimed is not None
            waiting = asyncio.create_task(client.wait_for_rollouts(rollout_ids=[rollout.rollout_id]))
            # The server cut the first request short and the client asked again: finish the rollout now.
            assert await asyncio.to_thread(store.second_wait.wait, 30)
            await client.update_attempt(claimed.rollout_id, claimed.attempt.attempt_id, status="succeeded")
            done = await asyncio.wait_for(waiting, 30)
            assert [r.rollout_id for r in done] == [rollout.rollout_id]

        _run(_with_client(server.url, body))
    assert store.wait_calls >= 2


def test_openapi_describes_every_method(served: tuple[InMemoryLightningStore, LightningStoreServer]) -> None:
    _, server = served
    spec = httpx.get(f"{server.url}/openapi.json").json()
    methods = {
        "start_rollout",
        "enqueue_rollout",
        "dequeue_rollout",
        "start_attempt",
        "update_rollout",
        "query_rollouts",
        "get_rollout_by_id",
        "wait_for_rollouts",
        "query_attempts",
        "get_latest_attempt",
        "update_attempt",
        "add_span",
        "query_spans",
        "add_resources",
        "get_latest_resources",
        "get_resources_by_id",
    }
    assert {f"/v1/{m}" for m in methods} <= set(spec["paths"])
    assert {"Rollout", "AttemptedRollout", "Span", "Attempt", "ResourcesUpdate"} <= set(
        spec["components"]["schemas"]
    )


def test_client_pickles_without_its_connections(
    served: tuple[InMemoryLightningStore, LightningStoreServer],
) -> None:
    _, server = served

    async def body(client: HttpLightningStore) -> None:
        await client.enqueue_rollout("x")
        clone = pickle.loads(pickle.dumps(client))
        try:
            assert len(await clone.query_rollouts()) == 1
        finally:
            await clone.close()

    _run(_with_client(server.url, body))


# -- bad input: the server answers 4xx, names the problem, and keeps its state ------------------------------


def _post(url: str, method: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/{method}", timeout=10, **kwargs)


def test_bad_input_gets_named_4xx_and_the_server_survives(
    served: tuple[InMemoryLightningStore, LightningStoreServer],
) -> None:
    store, server = served
    url = server.url
    kept = _run(store.enqueue_rollout("keep me"))

    malformed = _post(
        url, "enqueue_rollout", content=b'{"input": ', headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"] == "invalid_json"

    wrong_type = _post(url, "enqueue_rollout", json={"input": 1, "mode": "nonsense"})
    assert wrong_type.status_code == 422
    assert "mode" in wrong_type.json()["detail"]

    missing = _post(url, "update_attempt", json={"rollout_id": "r"})
    assert missing.status_code == 422 and "attempt_id" in missing.json()["detail"]

    extra = _post(url, "get_rollout_by_id", json={"rollout_id": "r", "bogus": 1})
    assert extra.status_code == 422 and "bogus" in extra.json()["detail"]

    null_status = _post(url, "update_rollout", json={"rollout_id": kept.rollout_id, "status": None})
    assert null_status.status_code == 422 and "status" in null_status.json()["detail"]

    unknown = _post(
        url, "update_attempt", json={"rollout_id": "ro-ghost", "attempt_id": "a", "status": "failed"}
    )
    assert unknown.status_code == 404
    assert unknown.json()["rollout_id"] == "ro-ghost" and "ro-ghost" in unknown.json()["detail"]

    unknown_wait = _post(
        url, "wait_for_rollouts", json={"rollout_ids": [kept.rollout_id, "ro-ghost"], "timeout": 0}
    )
    assert unknown_wait.status_code == 404 and unknown_wait.json()["rollout_id"] == "ro-ghost"

    claimed = _run(store.dequeue_rollout())
    assert claimed is not None
    unknown_attempt = _post(
        url,
        "update_attempt",
        json={"rollout_id": kept.rollout_id, "attempt_id": "at-ghost", "status": "failed"},
    )
    assert unknown_attempt.status_code == 404 and unknown_attempt.json()["attempt_id"] == "at-ghost"

    _run(store.update_attempt(kept.rollout_id, claimed.attempt.attempt_id, status="succeeded"))
    illegal = _post(url, "update_rollout", json={"rollout_id": kept.rollout_id, "status": "running"})
    assert illegal.status_code == 409
    assert "succeeded" in illegal.json()["detail"] and "running" in illegal.json()["detail"]

    negative = _post(url, "wait_for_rollouts", json={"rollout_ids": [], "timeout": -1})
    assert negative.status_code == 422 and "timeout" in negative.json()["detail"]

    not_json_object = _post(url, "add_resources", json=[1, 2])
    assert not_json_object.status_code == 422

    unknown_route = _post(url, "drop_everything", json={})
    assert unknown_route.status_code == 404

    # Nothing above reached or broke the store, and the server still serves.
    rollouts = _run(store.query_rollouts())
    assert [(r.rollout_id, r.status) for r in rollouts] == [(kept.rollout_id, "succeeded")]
    assert _post(url, "query_rollouts", json={}).status_code == 200


def test_oversized_bodies_get_413() -> None:
    store = InMemoryLightningStore()
    with LightningStoreServer(store, max_body_bytes=1024) as server:
        big = {"input": "x" * 4096}
        declared = _post(server.url, "enqueue_rollout", json=big)
        assert declared.status_code == 413 and "1024" in declared.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
            yield b'{"input": "'
            for _ in range(8):
                yield b"y" * 512
            yield b'"}'

        streamed = _post(
            server.url, "enqueue_rollout", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert _run(store.query_rollouts()) == []
        assert _post(server.url, "enqueue_rollout", json={"input": "small"}).status_code == 200


def test_client_reraises_server_value_errors_with_their_message(
    served: tuple[InMemoryLightningStore, LightningStoreServer],
) -> None:
    _, server = served

    async def body(client: HttpLightningStore) -> None:
        with pytest.raises(ValueError, match="ro-ghost"):
            await client.start_attempt("ro-ghost")
        with pytest.raises(ValueError, match="ro-ghost"):
            await client.wait_for_rollouts(rollout_ids=["ro-ghost"], timeout=0)
        with pytest.raises(ValueError, match="mode"):
            await client.enqueue_rollout("x", mode="bogus")  # type: ignore[arg-type]

    _run(_with_client(server.url, body))


def test_token_is_required_when_configured() -> None:
    store = InMemoryLightningStore()
    with LightningStoreServer(store, token=TOKEN) as server:
        assert _post(server.url, "query_rollouts", json={}).status_code == 401
        wrong = _post(server.url, "query_rollouts", json={}, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        assert httpx.get(f"{server.url}/openapi.json").status_code == 401

        async def denied(client: HttpLightningStore) -> None:
            with pytest.raises(PermissionError, match=r"127\.0\.0\.1"):
                await client.query_rollouts()

        async def allowed(client: HttpLightningStore) -> None:
            await client.enqueue_rollout("x")
            assert len(await client.query_rollouts()) == 1

        _run(_with_client(server.url, denied))
        _run(_with_client(server.url, allowed, token=TOKEN))


def test_non_loopback_host_requires_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGL_SERVER_TOKEN", raising=False)
    with pytest.raises(ValueError, match=r"0\.0\.0\.0.*AGL_SERVER_TOKEN"):
        LightningStoreServer(InMemoryLightningStore(), "0.0.0.0", 0)
    monkeypatch.setenv("AGL_SERVER_TOKEN", "from-the-environment-0123")
    assert LightningStoreServer(InMemoryLightningStore(), "0.0.0.0", 0).token == "from-the-environment-0123"


# -- addresses, ports and clean stops -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_named_with_host_and_port() -> None:
    port = _free_port()

    async def body(client: HttpLightningStore) -> None:
        with pytest.raises(StoreServerUnreachable, match=rf"127\.0\.0\.1:{port}"):
            await client.dequeue_rollout()
        with pytest.raises(StoreServerUnreachable, match=rf"127\.0\.0\.1:{port}"):
            await client.health()

    _run(_with_client(f"http://127.0.0.1:{port}", body, retry_seconds=0.2))


def test_host_is_honoured_exactly() -> None:
    with LightningStoreServer(InMemoryLightningStore(), "127.0.0.2", 0) as server:
        assert server.url == f"http://127.0.0.2:{server.port}"
        assert httpx.get(f"{server.url}/v1/health").status_code == 200
        # Another loopback address on the same port is not served.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{server.port}/v1/health")


def test_taken_port_is_a_clear_error_naming_host_and_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = LightningStoreServer(InMemoryLightningStore(), "127.0.0.1", port)
        with pytest.raises(ServerBindError, match=rf"127\.0\.0\.1:{port}.*already in use"):
            server.start()
        assert not server.running


def test_bind_listens_before_start_and_requests_wait_for_it() -> None:
    """``bind()`` listens (the port is known, connections queue) without a thread; ``start()`` serves (F2:
    a strategy binds before it starts anything)."""
    proc = psutil.Process()
    threads_before = {t.ident for t in threading.enumerate()}
    fds_before = proc.num_fds()
    server = LightningStoreServer(InMemoryLightningStore(), token="bind-then-start-token")
    server.bind()
    assert {t.ident for t in threading.enumerate()} == threads_before
    assert [sock.getsockname()[1] for sock in server.sockets] == [server.port]
    with pytest.raises(RuntimeError, match="already bound"):
        server.bind()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30.0) as early:
        early.sendall(
            b"GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bind-then-start-token\r\n\r\n"
        )
        server.start()
        assert early.recv(4096).startswith(b"HTTP/1.1 200")
    server.stop()
    assert proc.num_fds() == fds_before
    # Bound but never started: stop() closes the socket all the same.
    unstarted = LightningStoreServer(InMemoryLightningStore())
    unstarted.bind()
    unstarted.stop()
    assert proc.num_fds() == fds_before


def test_unix_socket_serves_the_same_api_under_the_token(tmp_path: Any) -> None:
    """A server with ``unix_socket`` answers there as on TCP (token checked), and removes it on stop."""
    path = str(tmp_path / "store.sock")
    token = "unix-socket-test-token"
    with LightningStoreServer(InMemoryLightningStore(), token=token, unix_socket=path) as server:
        assert sorted(sock.family.name for sock in server.sockets) == ["AF_INET", "AF_UNIX"]
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), base_url=server.url) as anonymous:
            assert anonymous.get("/v1/health").status_code == 401

        async def body(client: HttpLightningStore) -> None:
            await client.enqueue_rollout("through the unix socket")
            assert (await client.dequeue_rollout()) is not None

        async def main() -> None:
            client = HttpLightningStore(server.url, token=token, unix_socket=path)
            try:
                await body(client)
            finally:
                await client.close()

        _run(main())
        # A copy travels to runner processes with its socket.
        copy = pickle.loads(pickle.dumps(HttpLightningStore(server.url, unix_socket=path)))
        assert copy.unix_socket == path
    assert not os.path.exists(path)
    with pytest.raises(ServerBindError, match=r"cannot listen on /nonexistent-dir/store\.sock"):
        LightningStoreServer(InMemoryLightningStore(), unix_socket="/nonexistent-dir/store.sock").start()


def test_stop_leaves_nothing_and_the_port_can_be_bound_again() -> None:
    proc = psutil.Process()
    threads_before = {t.ident for t in threading.enumerate()}
    fds_before = proc.num_fds()
    store = InMemoryLightningStore()
    server = LightningStoreServer(store)
    server.start()
    port = server.port

    async def body(client: HttpLightningStore) -> None:
        await client.enqueue_rollout("x")

    _run(_with_client(server.url, body))
    server.stop()
    server.stop()  # idempotent
    assert {t.ident for t in threading.enumerate()} == threads_before
    assert proc.num_fds() == fds_before
    # The same port serves again at once (R3).
    with LightningStoreServer(store, "127.0.0.1", port) as again:
        assert again.port == port
        assert httpx.get(f"{again.url}/v1/health").status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"port": 70000}, "port"),
        ({"port": -1}, "port"),
        ({"host": ""}, "host"),
        ({"graceful_seconds": -1}, "graceful"),
    ],
)
def test_invalid_server_parameters_are_named(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        LightningStoreServer(InMemoryLightningStore(), **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        (("localhost:80",), {}, "base_url"),
        (("http://h:1/store",), {}, "base_url"),
        (("http://h:1",), {"retry_seconds": -1}, "retry_seconds"),
        (("http://h:1",), {"request_timeout": 0}, "request_timeout"),
    ],
)
def test_invalid_client_parameters_are_named(
    args: tuple[Any, ...], kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        HttpLightningStore(*args, **kwargs)


def test_write_request_ids_are_unique_across_threads_copies_and_forks() -> None:
    """Two writes under one id would make the server drop the second as a replay of the first."""
    from agentlightning.store.http import client as http_client

    store = HttpLightningStore("http://127.0.0.1:1")
    ids = http_client._RequestIds()
    drawn: list[list[str]] = [[] for _ in range(4)]
    barrier = threading.Barrier(len(drawn))

    def draw(into: list[str]) -> None:
        barrier.wait()
        into.extend(ids.next() for _ in range(5000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for into in drawn for i in into]
    assert len(set(every)) == len(every) == 20000

    first = store._request_ids.next()
    copies = [pickle.loads(pickle.dumps(store)), store.named("other")]
    prefixes = {first.rsplit("-", 1)[0]} | {c._request_ids.next().rsplit("-", 1)[0] for c in copies}
    assert len(prefixes) == 3
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports its next id and leaves at once
        os.write(write, store._request_ids.next().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child.rsplit("-", 1)[0] != first.rsplit("-", 1)[0]


class _HangingUp:
    """A TCP listener that accepts connections, reads the request and closes without answering."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.request_ids: list[str | None] = []
        self._thread = threading.Thread(target=self._serve, name="test-hanging-up", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                head = conn.recv(65536).decode("latin-1").lower()
                found = [
                    line.split(":", 1)[1].strip()
                    for line in head.split("\r\n")
                    if line.startswith("x-agl-request-id:")
                ]
                self.request_ids.append(found[0] if found else None)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(10)


def test_a_write_whose_answer_is_lost_is_retried_under_one_request_id() -> None:
    peer = _HangingUp()
    try:

        async def write(client: HttpLightningStore) -> None:
            with pytest.raises(StoreServerUnreachable, match=rf"127\.0\.0\.1:{peer.port}"):
                await client.enqueue_rollout("x")

        _run(_with_client(f"http://127.0.0.1:{peer.port}", write, retry_seconds=0.3))
        assert peer.accepted >= 2  # the first try and its retries
        assert len(set(peer.request_ids)) == 1 and peer.request_ids[0]  # one id for every copy

        async def read(client: HttpLightningStore) -> None:
            with pytest.raises(StoreServerUnreachable):
                await client.query_rollouts()

        before = len(peer.request_ids)
        _run(_with_client(f"http://127.0.0.1:{peer.port}", read, retry_seconds=0.3))
        assert peer.request_ids[before:] and set(peer.request_ids[before:]) == {None}  # reads need none
    finally:
        peer.close()


def test_a_write_sent_again_under_its_request_id_is_answered_again_not_applied_again() -> None:
    store = InMemoryLightningStore()
    with LightningStoreServer(store, "127.0.0.1", 0, token=TOKEN) as server:
        _replayed_once(store, server)


def _replayed_once(store: InMemoryLightningStore, server: LightningStoreServer) -> None:
    body = json.dumps({"input": {"n": 1}}).encode()

    def post(request_id: str, token: str | None = TOKEN) -> httpx.Response:
        headers = {"x-agl-request-id": request_id, "content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return httpx.post(f"{server.url}/v1/enqueue_rollout", content=body, headers=headers, timeout=10)

    first, again, other = post("id-1"), post("id-1"), post("id-2")
    assert first.status_code == again.status_code == other.status_code == 200
    assert first.json() == again.json() and first.json()["rollout_id"] != other.json()["rollout_id"]
    assert len(_run(store.query_rollouts())) == 2  # id-1 applied once
    assert (
        post("id-1", token="wrong-token-of-enough-length").status_code == 401
    )  # never answered to a stranger


def test_the_runners_hot_path_answers_exactly_like_the_application() -> None:
    """dequeue_rollout and update_attempt skip the framework's layers on a live server: same answers."""
    store = InMemoryLightningStore()
    for index in range(2):
        _run(store.enqueue_rollout({"index": index}))
    app = create_app(store, token=TOKEN)

    def reference(method: str, **kwargs: Any) -> httpx.Response:  # the application alone, in process
        async def post() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as c:
                return await c.post(f"/v1/{method}", **kwargs)

        return _run(post())

    with LightningStoreServer(store, token=TOKEN, max_body_bytes=4096) as server:
        auth = {"authorization": f"Bearer {TOKEN}"}
        fast = _post(server.url, "dequeue_rollout", headers=auth)
        slow = reference("dequeue_rollout", headers=auth)
        assert fast.status_code == slow.status_code == 200
        assert fast.headers["content-type"] == "application/json"
        assert (
            set(fast.json()) == set(slow.json())
            and fast.json()["attempt"].keys() == slow.json()["attempt"].keys()
        )

        updates = []
        for answer, post in (
            (fast, lambda body: _post(server.url, "update_attempt", json=body, headers=auth)),
            (slow, lambda body: reference("update_attempt", json=body, headers=auth)),
        ):
            body = {
                "rollout_id": answer.json()["rollout_id"],
                "attempt_id": answer.json()["attempt"]["attempt_id"],
            }
            updates.append(post({**body, "status": "succeeded"}))
        assert [u.status_code for u in updates] == [200, 200]
        assert updates[0].json().keys() == updates[1].json().keys()
        assert updates[0].json()["status"] == updates[1].json()["status"] == "succeeded"

        # Errors and unusual requests get the application's own answers.
        assert _post(server.url, "dequeue_rollout").status_code == 401
        ghost = _post(
            server.url, "update_attempt", json={"rollout_id": "ro-ghost", "attempt_id": "a"}, headers=auth
        )
        assert ghost.status_code == 404 and ghost.json()["rollout_id"] == "ro-ghost"
        bad = _post(
            server.url, "update_attempt", content=b"{", headers={**auth, "content-type": "application/json"}
        )
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_json"
        big = _post(
            server.url, "update_attempt", json={"rollout_id": "r" * 5000, "attempt_id": "a"}, headers=auth
        )
        assert big.status_code == 413
        done = updates[0].json()

        def chunks() -> Iterator[bytes]:  # no Content-Length: the application reads it
            yield b'{"rollout_id": "' + done["rollout_id"].encode()
            yield b'", "attempt_id": "' + done["attempt_id"].encode() + b'", "metadata": {"k": 1}}'

        streamed = _post(
            server.url,
            "update_attempt",
            content=chunks(),
            headers={**auth, "content-type": "application/json"},
        )
        assert streamed.status_code == 200 and streamed.json()["metadata"] == {"k": 1}
        assert _post(server.url, "dequeue_rollout", headers=auth).json() is None


# -- before authentication: connections, header time and size (limits.py) ----------------------------------

HANG = 30.0


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends on ``sock`` until it closes it (hang bound: the socket's timeout)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_idle_connections_are_capped_and_unfinished_headers_time_out() -> None:
    limits = ServerLimits(max_connections=4, header_timeout=0.5, max_header_bytes=2048)
    with LightningStoreServer(InMemoryLightningStore(), limits=limits) as server:
        address = ("127.0.0.1", server.port)
        held = [socket.create_connection(address, timeout=HANG) for _ in range(4)]
        try:
            held[0].sendall(b"POST /v1/query_rollouts HTTP/1.1\r\nHost: x\r\n")  # slowloris: never ends
            # One connection over the cap is answered 503 and closed at once, whatever it sends.
            with socket.create_connection(address, timeout=HANG) as extra:
                answer = _read_until_closed(extra)
            assert answer.startswith(b"HTTP/1.1 503") and b'"error": "busy"' in answer, answer
            # The ones that never completed their headers are answered 408 and closed.
            for sock in held:
                answer = _read_until_closed(sock)
                assert answer.startswith(b"HTTP/1.1 408") and b"header_timeout" in answer, answer
        finally:
            for sock in held:
                sock.close()
        # Headers that never end are not buffered past the cap: 431, closed.
        with socket.create_connection(address, timeout=HANG) as flood:
            flood.sendall(b"POST /v1/query_rollouts HTTP/1.1\r\nHost: x\r\nX-Flood: " + b"a" * 8192)
            answer = _read_until_closed(flood)
        assert answer.startswith(b"HTTP/1.1 431") and b"headers_too_large" in answer, answer
        # A later request on a kept-alive connection is timed too once its headers start.
        with socket.create_connection(address, timeout=HANG) as kept:
            kept.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            first = b""
            while b'"ok"}' not in first:
                first += kept.recv(4096)
            assert first.startswith(b"HTTP/1.1 200"), first
            kept.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            answer = _read_until_closed(kept)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        # Ordinary clients are served meanwhile and afterwards, bodies past the header cap included.
        assert _post(server.url, "query_rollouts", json={}).status_code == 200
        big = _post(server.url, "enqueue_rollout", json={"input": "x" * 10_000})
        assert big.status_code == 200 and big.json()["input"] == "x" * 10_000


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_connections": 0}, "max_connections"),
        ({"header_timeout": 0}, "header_timeout"),
        ({"header_timeout": float("inf")}, "header_timeout"),
        ({"max_header_bytes": -1}, "max_header_bytes"),
        ({"max_json_elements": 1.5}, "max_json_elements"),
        ({"keepalive_seconds": 0}, "keepalive_seconds"),
    ],
)
def test_invalid_limits_are_named(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ServerLimits(**kwargs)


# -- tokens ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "tiny-tok", "x" * 15, "has a space in it!", "caf\u00e9-token-0123456"])
def test_empty_short_or_unsendable_tokens_are_refused_naming_the_parameter(token: str) -> None:
    for build in (
        lambda: LightningStoreServer(InMemoryLightningStore(), "0.0.0.0", 0, token=token),
        lambda: HttpLightningStore("http://127.0.0.1:1", token=token),
        lambda: create_app(InMemoryLightningStore(), token=token),
    ):
        with pytest.raises(ValueError, match=r"^token must") as refused:
            build()
        assert token not in str(refused.value) or not token


def test_a_short_token_in_the_environment_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGL_SERVER_TOKEN", "tiny-secret")
    for build in (
        lambda: LightningStoreServer(InMemoryLightningStore(), "0.0.0.0", 0),
        lambda: HttpLightningStore("http://127.0.0.1:1"),
    ):
        with pytest.raises(ValueError, match=r"AGL_SERVER_TOKEN.*at least 16") as refused:
            build()
        assert "tiny-secret" not in str(refused.value)


def test_two_authorization_headers_are_refused_whichever_comes_last() -> None:
    with LightningStoreServer(InMemoryLightningStore(), token=TOKEN) as server:
        for method in ("query_rollouts", "dequeue_rollout"):  # the application and the hot path
            for pair in (("Bearer wrong", f"Bearer {TOKEN}"), (f"Bearer {TOKEN}", "Bearer wrong")):
                answer = httpx.post(
                    f"{server.url}/v1/{method}",
                    json={},
                    headers=[("authorization", pair[0]), ("authorization", pair[1])],
                    timeout=HANG,
                )
                assert answer.status_code == 400, (method, pair, answer.text)
                assert answer.json()["error"] == "bad_request" and "Authorization" in answer.json()["detail"]
        answer = _post(server.url, "query_rollouts", json={}, headers={"authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200


def test_the_token_never_appears_in_reprs_or_errors() -> None:
    with LightningStoreServer(InMemoryLightningStore(), token=TOKEN) as server:
        client = HttpLightningStore(server.url, token=TOKEN)
        wrong = HttpLightningStore(server.url, token="a-wrong-token-of-enough-length")
        texts = [repr(server), str(server), repr(client), str(client)]

        async def refused() -> None:
            try:
                await wrong.query_rollouts()
            finally:
                await wrong.close()

        with pytest.raises(PermissionError) as denied:
            _run(refused())
        texts.append(str(denied.value))
        texts.append(_post(server.url, "query_rollouts", json={}).text)
    assert all(TOKEN not in text for text in texts), texts


# -- unexpected failures: a request id, never internal text, and the connection stays usable ---------------


class _FailsOnce(InMemoryLightningStore):
    """Raises an unexpected error once, in the path the test arms; behaves normally otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.armed: set[str] = set()

    def _fire(self, name: str) -> bool:
        if name in self.armed:
            self.armed.discard(name)
            return True
        return False

    async def query_rollouts(self, **kwargs: Any) -> Any:
        if self._fire("lookup"):  # reached while a ValueError of the store is being classified
            raise RuntimeError("internal detail /srv/secret.db")
        return await super().query_rollouts(**kwargs)

    async def get_latest_resources(self) -> Any:
        if self._fire("answer"):
            return {"not": "a ResourcesUpdate"}  # the answer itself cannot be serialised
        return await super().get_latest_resources()

    async def dequeue_rollout(self) -> Any:
        if self._fire("hot"):
            raise KeyError("internal detail /srv/secret.db")
        return await super().dequeue_rollout()


@pytest.mark.parametrize("where", ["lookup", "answer", "hot"])
def test_after_an_unexpected_500_the_next_write_succeeds(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = _FailsOnce()
    with LightningStoreServer(store) as server:

        async def body(client: HttpLightningStore) -> None:
            await client.enqueue_rollout("before")
            store.armed.add(where)
            with pytest.raises(StoreServerError, match=r"request id [0-9a-f]{16}") as failed:
                if where == "lookup":
                    await client.start_attempt("ro-ghost")
                elif where == "answer":
                    await client.get_latest_resources()
                else:
                    await client.dequeue_rollout()
            assert "secret" not in str(failed.value)
            # The same client, the same pool: the next write goes through (it used to be lost).
            await client.enqueue_rollout("after")
            assert sorted(r.input for r in await client.query_rollouts()) == ["after", "before"]

        with caplog.at_level(logging.ERROR):
            _run(_with_client(server.url, body))
    logged = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert re.search(r"request [0-9a-f]{16}", logged[0].getMessage())


def test_every_error_answer_has_the_documented_shape(
    served: tuple[InMemoryLightningStore, LightningStoreServer],
) -> None:
    _, server = served
    answers = [
        _post(server.url, "drop_everything", json={}),  # unknown route
        httpx.get(f"{server.url}/v1/query_rollouts", timeout=HANG),  # wrong method
        _post(server.url, "query_rollouts", content=b"{", headers={"content-type": "text/plain"}),
        _post(server.url, "query_rollouts", content=b"[1, 2]", headers={"content-type": "application/json"}),
        _post(server.url, "get_rollout_by_id", json={"rollout_id": ""}),
        _post(server.url, "start_attempt", json={"rollout_id": "ro-ghost"}),
    ]
    for answer in answers:
        assert answer.status_code >= 400 and answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("detail"), str), answer.text
    assert [a.status_code for a in answers] == [404, 405, 400, 422, 422, 404]
    spec = httpx.get(f"{server.url}/openapi.json", timeout=HANG).json()
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            for status in ("401", "422", "500"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status, schema)


# -- bodies that would amplify, and values the store refuses ------------------------------------------------


def test_nan_and_infinity_literals_are_malformed_json(
    served: tuple[InMemoryLightningStore, LightningStoreServer],
) -> None:
    store, server = served
    for method, text in (
        ("enqueue_rollout", b'{"input": {"x": NaN}}'),
        ("enqueue_rollout", b'{"input": [-Infinity]}'),
        ("update_attempt", b'{"rollout_id": "r", "attempt_id": "a", "last_heartbeat_time": Infinity}'),
    ):
        answer = _post(server.url, method, content=text, headers={"content-type": "application/json"})
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_json", answer.text
        assert "NaN" in answer.json()["detail"] or "Infinity" in answer.json()["detail"]
    assert _run(store.query_rollouts()) == []


_SERVE_IN_A_CHILD = """
import sys
from agentlightning.store.http import LightningStoreServer
from agentlightning.store.memory import InMemoryLightningStore
with LightningStoreServer(InMemoryLightningStore(), token=sys.argv[1]) as server:
    print(server.port, flush=True)
    sys.stdin.read()  # serve until the test closes our stdin
"""


def test_a_body_of_millions_of_empty_containers_is_refused_before_parsing() -> None:
    """16 MiB of ``[{},{},...]`` used to grow the server by over a gigabyte and stall it for seconds."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SERVE_IN_A_CHILD, TOKEN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        url = f"http://127.0.0.1:{int(child.stdout.readline())}"
        auth = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
        server = psutil.Process(child.pid)
        assert httpx.post(f"{url}/v1/query_rollouts", json={}, headers=auth, timeout=HANG).status_code == 200
        baseline = server.memory_info().rss
        peak = baseline
        done = threading.Event()

        def sample() -> None:  # another process: the server's GIL cannot hide its peak from us
            nonlocal peak
            while not done.wait(0.001):
                peak = max(peak, server.memory_info().rss)

        count = (DEFAULT_MAX_BODY_BYTES - 64) // 3
        big = b'{"input": [' + b",".join([b"{}"] * count) + b"]}"
        windows: list[tuple[float, float]] = []
        answers: list[httpx.Response] = []

        def send_big() -> None:
            for _ in range(3):
                started = time.monotonic()
                answers.append(
                    httpx.post(f"{url}/v1/enqueue_rollout", content=big, headers=auth, timeout=HANG)
                )
                windows.append((started, time.monotonic()))

        sampler = threading.Thread(target=sample, name="test-rss-sampler")
        sender = threading.Thread(target=send_big, name="test-big-body")
        sampler.start()
        sender.start()
        small: list[float] = []
        with httpx.Client(headers=auth, timeout=HANG) as client:
            while sender.is_alive():
                assert client.post(f"{url}/v1/get_latest_resources").status_code == 200
                small.append(time.monotonic())
        sender.join()
        done.set()
        sampler.join()
        for answer in answers:
            assert answer.status_code == 413 and answer.json()["error"] == "too_many_elements", answer.text
            assert str(2 * count + 1) in answer.json()["detail"]  # each "{}" and "," counts
        growth = (peak - baseline) / 2**20
        assert growth < 200, f"the server grew by {growth:.0f} MiB for a refused body"
        # Small requests were answered while the big ones were being received and refused.
        assert any(start <= moment <= end for moment in small for start, end in windows), (small, windows)
        assert httpx.post(f"{url}/v1/query_rollouts", json={}, headers=auth, timeout=HANG).json() == []
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(HANG)


class _Recording(InMemoryLightningStore):
    """A store that records which writes reach it (a user's own store served over HTTP)."""

    def __init__(self) -> None:
        super().__init__()
        self.reached: list[str] = []

    async def enqueue_rollout(self, *args: Any, **kwargs: Any) -> Any:
        self.reached.append("enqueue_rollout")
        return await super().enqueue_rollout(*args, **kwargs)

    async def update_attempt(self, *args: Any, **kwargs: Any) -> Any:
        self.reached.append("update_attempt")
        return await super().update_attempt(*args, **kwargs)

    async def add_span(self, *args: Any, **kwargs: Any) -> Any:
        self.reached.append("add_span")
        return await super().add_span(*args, **kwargs)

    async def add_resources(self, *args: Any, **kwargs: Any) -> Any:
        self.reached.append("add_resources")
        return await super().add_resources(*args, **kwargs)


def test_poison_values_are_refused_naming_the_field_before_the_store_is_called() -> None:
    store = _Recording()
    claimed = _run(store.start_rollout("legit"))
    rollout_id, attempt_id = claimed.rollout_id, claimed.attempt.attempt_id
    deep = "[" * 300 + "]" * 300
    poisons = [
        ("enqueue_rollout", '{"input": {"text": "a\\ud800b"}}', "input['text']"),
        ("enqueue_rollout", '{"input": ' + deep + "}", "input[0]"),
        ("enqueue_rollout", '{"input": 1, "metadata": {"n": 1e999}}', "metadata['n']"),
        ("add_resources", '{"resources": {"model": {"name": "\\udc00"}}}', "resources['model']['name']"),
        (
            "update_attempt",  # the runners' hot path hands this one to the application
            f'{{"rollout_id": "{rollout_id}", "attempt_id": "{attempt_id}", "metadata": {{"k": "\\ud800"}}}}',
            "metadata['k']",
        ),
        (
            "add_span",
            f'{{"rollout_id": "{rollout_id}", "attempt_id": "{attempt_id}", "span_id": "s", "name": "n", '
            f'"attributes": {{"a": ["\\ud800"]}}}}',
            "span.attributes['a'][0]",
        ),
    ]
    with LightningStoreServer(store) as server:
        for method, text, field in poisons:
            answer = _post(
                server.url, method, content=text.encode(), headers={"content-type": "application/json"}
            )
            assert answer.status_code == 422, (method, answer.text)
            assert answer.json()["error"] == "invalid_value", answer.text
            assert answer.json()["field"].startswith(field), (field, answer.text)
        assert store.reached == []
        # Nothing half-written: every read still answers, and the legit rollout is intact.
        rollouts = _post(server.url, "query_rollouts", json={})
        assert rollouts.status_code == 200 and [r["input"] for r in rollouts.json()] == ["legit"]
        assert _post(server.url, "dequeue_rollout").status_code == 200


def test_the_client_refuses_poison_values_before_sending() -> None:
    """A client pointed at nothing: a round trip would be StoreServerUnreachable, not a ValueError."""
    nowhere = f"http://127.0.0.1:{_free_port()}"
    span = Span(rollout_id="r", attempt_id="a", span_id="s", name="n", attributes={"x": [math.nan]})
    calls: list[tuple[Any, str]] = [
        (lambda c: c.enqueue_rollout({"text": "a\ud800"}), r"input\['text'\]"),
        (lambda c: c.enqueue_rollout(1, metadata={"score": math.inf}), r"metadata\['score'\]"),
        (lambda c: c.update_attempt("r", "a", metadata={"n": math.nan}), r"metadata\['n'\]"),
        (lambda c: c.add_resources({"deep": json.loads("[" * 100 + "]" * 100)}), r"resources\['deep'\]"),
        (lambda c: c.add_span(span), r"span\.attributes\['x'\]\[0\]"),
    ]

    async def body(client: HttpLightningStore) -> None:
        for call, field in calls:
            with pytest.raises(ValueError, match=field) as refused:
                await call(client)
            assert not isinstance(refused.value, StoreServerUnreachable)

    _run(_with_client(nowhere, body, retry_seconds=0))


# -- TLS -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A throwaway CA and a certificate for 127.0.0.1 it signed, as PEM files."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    directory = tmp_path_factory.mktemp("tls")
    files = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    issued.private_key_pem.write_to_path(str(files["key"]))
    for pem in issued.cert_chain_pems:
        pem.write_to_path(str(files["cert"]), append=True)
    return {name: str(path) for name, path in files.items()}


def test_tls_serves_https_to_clients_that_verify_it(tls_files: dict[str, str]) -> None:
    store = InMemoryLightningStore()
    with LightningStoreServer(
        store, token=TOKEN, tls_cert=tls_files["cert"], tls_key=tls_files["key"]
    ) as server:
        assert server.url.startswith("https://127.0.0.1:") and "tls" in repr(server)

        async def verified(client: HttpLightningStore) -> None:
            await client.health()
            await client.enqueue_rollout("over tls")
            assert [r.input for r in await client.query_rollouts()] == ["over tls"]

        _run(_with_client(server.url, verified, token=TOKEN, tls_ca=tls_files["ca"]))

        async def unverified(client: HttpLightningStore) -> None:
            with pytest.raises(StoreServerUnreachable, match=r"127\.0\.0\.1.*does not verify.*tls_ca"):
                await client.query_rollouts()
            with pytest.raises(StoreServerUnreachable, match=r"does not verify"):
                await client.health()

        # Without the CA (the system's CAs do not know it): refused at once, not retried for 30 s.
        _run(_with_client(server.url, unverified, token=TOKEN, retry_seconds=30))

        async def plain(client: HttpLightningStore) -> None:
            with pytest.raises(StoreServerUnreachable):
                await client.query_rollouts()

        _run(_with_client(server.url.replace("https:", "http:"), plain, token=TOKEN, retry_seconds=0.3))
    assert [r.input for r in _run(store.query_rollouts())] == ["over tls"]


def test_tls_settings_from_the_environment(
    tls_files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGL_SERVER_TLS_CERT", tls_files["cert"])
    monkeypatch.setenv("AGL_SERVER_TLS_KEY", tls_files["key"])
    monkeypatch.setenv("AGL_SERVER_TLS_CA", tls_files["ca"])
    with LightningStoreServer(InMemoryLightningStore()) as server:
        assert server.url.startswith("https://")

        async def body(client: HttpLightningStore) -> None:
            assert await client.query_rollouts() == []

        _run(_with_client(server.url, body))


def test_invalid_tls_settings_are_named(
    tls_files: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    store = InMemoryLightningStore()
    with pytest.raises(ValueError, match=r"tls_key is missing"):
        LightningStoreServer(store, tls_cert=tls_files["cert"])
    with pytest.raises(ValueError, match=r"tls_cert is missing"):
        LightningStoreServer(store, tls_key=tls_files["key"])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ValueError, match=r"tls_cert=.*garbage\.pem.*do not load"):
        LightningStoreServer(store, tls_cert=str(garbage), tls_key=tls_files["key"])
    with pytest.raises(ValueError, match=r"tls_ca=.*garbage\.pem.*does not load"):
        HttpLightningStore("https://127.0.0.1:1", tls_ca=str(garbage))
    with pytest.raises(ValueError, match=r"tls_ca verifies an https:// server"):
        HttpLightningStore("http://127.0.0.1:1", tls_ca=tls_files["ca"])
    monkeypatch.setenv("AGL_SERVER_TLS_CERT", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match=r"AGL_SERVER_TLS_CERT=.*missing\.pem.*existing file"):
        LightningStoreServer(store, tls_key=tls_files["key"])


def test_the_client_drops_idle_connections_before_the_server_does_and_needs_no_server_framework() -> None:
    from agentlightning.store.http import client
    from agentlightning.store.http.limits import DEFAULT_KEEPALIVE_SECONDS

    assert client._KEEPALIVE_SECONDS < DEFAULT_KEEPALIVE_SECONDS
    code = (
        "import sys, agentlightning.execution.client_server_workers, agentlightning.store.http; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'uvicorn', 'starlette'}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    # A runner process imports the client only: it is forked by a forkserver that preloads
    # client_server_workers (or, under spawn, unpickles that module's functions).
    assert loaded.stdout.strip() == "[]"
