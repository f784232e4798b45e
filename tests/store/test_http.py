"""The store's HTTP boundary, against a live server on loopback (port 0): every method, and bad input."""

from __future__ import annotations

import asyncio
import pickle
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from agentlightning.store.http import (
    HttpLightningStore,
    LightningStoreServer,
    ServerBindError,
    StoreServerUnreachable,
)
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


class _HangingUp:
    """A TCP listener that accepts connections, reads the request and closes without answering."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
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
                conn.recv(65536)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(10)


def test_writes_are_not_retried_once_sent_reads_are() -> None:
    peer = _HangingUp()
    try:

        async def write(client: HttpLightningStore) -> None:
            with pytest.raises(StoreServerUnreachable, match=r"not retried since it may have taken effect"):
                await client.enqueue_rollout("x")

        _run(_with_client(f"http://127.0.0.1:{peer.port}", write, retry_seconds=5))
        assert peer.accepted == 1  # sent once, never again

        async def read(client: HttpLightningStore) -> None:
            with pytest.raises(StoreServerUnreachable, match=rf"127\.0\.0\.1:{peer.port}"):
                await client.query_rollouts()

        _run(_with_client(f"http://127.0.0.1:{peer.port}", read, retry_seconds=0.3))
        assert peer.accepted >= 2  # the first try and its retries
    finally:
        peer.close()


def test_the_runners_hot_path_answers_exactly_like_the_application() -> None:
    """dequeue_rollout and update_attempt skip the framework's layers on a live server: same answers."""
    from agentlightning.store.http import create_app

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
