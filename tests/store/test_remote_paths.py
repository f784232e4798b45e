"""The remote access paths (HTTP and ipc) as one: the method table they are built from, and the one error
rule they keep (``agentlightning.store.remote``).

Every test runs over both paths against the same served store, so a path that drifts from the other fails
here by name.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agentlightning.store.base import LightningStore
from agentlightning.store.http import HttpLightningStore, LightningStoreServer
from agentlightning.store.ipc import IpcLightningStore, IpcStoreServer
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.methods import METHODS
from agentlightning.store.remote import RemoteLightningStore, StoreServerError
from agentlightning.store.values import InvalidValueError

HANG = 30.0

Connect = Callable[[], RemoteLightningStore]


class _Refused(ValueError):
    """A store's own ValueError subclass."""


class _Failing(InMemoryLightningStore):
    """Fails on demand: ``armed`` maps a method to the exception its next call raises."""

    def __init__(self) -> None:
        super().__init__()
        self.armed: dict[str, BaseException] = {}

    def _fire(self, name: str) -> None:
        error = self.armed.pop(name, None)
        if error is not None:
            raise error

    async def get_latest_resources(self) -> Any:
        self._fire("get_latest_resources")
        return await super().get_latest_resources()

    async def enqueue_rollout(self, *args: Any, **kwargs: Any) -> Any:
        self._fire("enqueue_rollout")
        return await super().enqueue_rollout(*args, **kwargs)


@contextmanager
def _served(path: str, store: LightningStore, tmp_path: Path) -> Iterator[Connect]:
    if path == "http":
        with LightningStoreServer(store) as server:
            yield lambda: HttpLightningStore(server.url, retry_seconds=1.0)
    else:
        with IpcStoreServer(store, tmp_path / "store.sock") as ipc_server:
            yield lambda: IpcLightningStore(ipc_server.path)


def _over(
    path: str, tmp_path: Path, program: Callable[[RemoteLightningStore, _Failing], Awaitable[None]]
) -> None:
    """Run ``program(client, store)`` with a client of ``path`` to a served ``_Failing`` store."""
    store = _Failing()
    with _served(path, store, tmp_path) as connect:

        async def scenario() -> None:
            client = connect()
            try:
                await program(client, store)
            finally:
                await client.close()

        asyncio.run(asyncio.wait_for(scenario(), HANG))


PATHS = ["http", "ipc"]


def test_the_table_declares_every_store_method_and_only_those() -> None:
    abstract = {
        name
        for name, member in inspect.getmembers(LightningStore)
        if getattr(member, "__isabstractmethod__", False)
    }
    assert set(METHODS) == abstract
    for remote in (HttpLightningStore, IpcLightningStore):
        assert not inspect.isabstract(remote), remote
        for name in METHODS:
            # The clients keep the interface's signatures (what IDEs and type checkers show).
            assert inspect.signature(getattr(remote, name)) == inspect.signature(
                getattr(LightningStore, name)
            )


def test_the_table_says_which_methods_are_safe_to_retry_and_which_wait() -> None:
    assert {name for name, method in METHODS.items() if method.waits} == {"wait_for_rollouts"}
    assert {name for name, method in METHODS.items() if not method.idempotent} == {
        "start_rollout",
        "enqueue_rollout",
        "dequeue_rollout",
        "start_attempt",
        "update_rollout",
        "update_attempt",
        "add_span",
        "add_resources",
    }
    assert {name: set(method.models) for name, method in METHODS.items() if method.models} == {
        "start_rollout": {"config"},
        "enqueue_rollout": {"config"},
        "update_rollout": {"config"},
        "add_span": {"span"},
    }


@pytest.mark.parametrize("path", PATHS)
def test_a_store_value_error_reaches_the_caller_as_a_value_error_with_its_message(
    path: str, tmp_path: Path
) -> None:
    async def program(client: RemoteLightningStore, store: _Failing) -> None:
        store.armed["enqueue_rollout"] = _Refused("the store refuses rollout 'ro-7' for its own reasons")
        with pytest.raises(ValueError, match="refuses rollout 'ro-7' for its own reasons"):
            await client.enqueue_rollout({"x": 1})
        with pytest.raises(ValueError, match="ro-unknown"):  # the store's own refusal of an id
            await client.update_rollout("ro-unknown", status="failed")
        with pytest.raises(ValueError, match="rollout_id"):  # refused by the server's validation
            await client._call(METHODS["get_rollout_by_id"], {"rollout_id": ""})
        assert (await client.enqueue_rollout({"x": 2})).input == {"x": 2}  # the connection carries on

    _over(path, tmp_path, program)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyError("secret"), TypeError("odd")])
def test_any_other_store_error_reaches_the_caller_as_store_server_error_naming_the_method(
    path: str, error: Exception, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def program(client: RemoteLightningStore, store: _Failing) -> None:
        store.armed["get_latest_resources"] = error
        with pytest.raises(StoreServerError, match="get_latest_resources") as failed:
            await client.get_latest_resources()
        assert not isinstance(failed.value, ValueError)
        if path == "ipc":  # same machine: the original is kept as the cause
            assert type(failed.value.__cause__) is type(error)
            assert type(error).__name__ in str(failed.value)
        else:  # across machines: its text stays in the server's log, under the request id
            assert "request id" in str(failed.value)
        assert await client.get_latest_resources() is None  # the connection carries on

    with caplog.at_level(logging.ERROR):
        _over(path, tmp_path, program)


@pytest.mark.parametrize("path", PATHS)
def test_a_value_the_rule_refuses_is_refused_before_it_is_sent_naming_its_field(
    path: str, tmp_path: Path
) -> None:
    async def program(client: RemoteLightningStore, store: _Failing) -> None:
        with pytest.raises(InvalidValueError, match=r"metadata\['n'\]"):
            await client.enqueue_rollout({}, metadata={"n": float("nan")})
        assert await store.query_rollouts() == []

    _over(path, tmp_path, program)
