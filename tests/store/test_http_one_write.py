"""The store server's one-write answers (``one_write.HeadWithBody``): a head goes out joined to its body,
against a recording transport and a live server on loopback."""

from __future__ import annotations

import httpx

from agentlightning.store.http import LightningStoreServer
from agentlightning.store.http.one_write import HeadWithBody
from agentlightning.store.memory import InMemoryLightningStore

_HANG = 10.0


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info {name}"


_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4\r\n\r\n"


def test_a_head_goes_out_joined_to_its_body() -> None:
    inner = _Transport()
    transport = HeadWithBody(inner)  # type: ignore[arg-type]
    transport.write(_HEAD)
    assert inner.writes == []
    transport.write(b"null")
    assert inner.writes == [_HEAD + b"null"]
    assert transport.get_extra_info("peername") == "info peername"  # everything else is the transport's


def test_a_head_without_a_body_write_goes_out_on_flush_or_close() -> None:
    inner = _Transport()
    transport = HeadWithBody(inner)  # type: ignore[arg-type]
    transport.write(_HEAD)
    transport.flush()
    assert inner.writes == [_HEAD]
    transport.write(_HEAD)
    transport.close()
    assert inner.writes == [_HEAD, _HEAD] and inner.closed


def test_writes_that_are_no_head_of_known_length_go_out_at_once() -> None:
    inner = _Transport()
    transport = HeadWithBody(inner)  # type: ignore[arg-type]
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    streamed = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    whole = _HEAD + b"null"
    for data in (interim, streamed, whole):
        transport.write(data)
    assert inner.writes == [interim, streamed, whole]
    big = b"x" * (1 << 20)
    transport.write(_HEAD)
    transport.write(big)
    assert inner.writes[-2:] == [_HEAD, big]  # a large body is not copied to join it


def test_a_head_request_is_answered() -> None:
    with LightningStoreServer(InMemoryLightningStore()) as server, httpx.Client(timeout=_HANG) as client:
        answer = client.head(f"{server.url}/v1/health")
        assert answer.status_code in (200, 405)  # answered, not held back
        assert client.get(f"{server.url}/v1/health").json() == {"status": "ok"}
