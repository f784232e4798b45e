"""``wrapping_methods``: a store method made from its declaration and one rule for the call."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agentlightning.store.base import LightningStore
from agentlightning.store.wrapping import wrapping_methods

Seen = tuple[object, Callable[..., Awaitable[Any]], tuple[Any, ...], dict[str, Any]]


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[Seen] = []

    async def rule(
        self,
        store: object,
        method: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> str:
        self.seen.append((store, method, args, kwargs))
        return f"{method.__name__} answered"


def test_the_method_keeps_its_declaration_and_is_no_longer_abstract() -> None:
    wrapped = wrapping_methods(_Recorder().rule)(LightningStore.query_spans)
    assert wrapped.__name__ == "query_spans"
    assert wrapped.__doc__ == LightningStore.query_spans.__doc__
    assert inspect.signature(wrapped) == inspect.signature(LightningStore.query_spans)
    assert not getattr(wrapped, "__isabstractmethod__", False)
    assert getattr(LightningStore.query_spans, "__isabstractmethod__", False)  # the declaration is untouched


def test_the_rule_gets_the_store_the_declared_method_and_the_call_as_made() -> None:
    recorder = _Recorder()
    store = object()
    wrapped = wrapping_methods(recorder.rule)(LightningStore.query_spans)
    answer = asyncio.run(wrapped(store, "ro-1", attempt_id="latest"))
    assert answer == "query_spans answered"
    assert recorder.seen == [(store, LightningStore.query_spans, ("ro-1",), {"attempt_id": "latest"})]


def test_an_error_of_the_rule_reaches_the_caller() -> None:
    async def refuse(store: object, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        raise ValueError(f"unknown rollout id {args[0]!r}")

    wrapped = wrapping_methods(refuse)(LightningStore.get_rollout_by_id)
    with pytest.raises(ValueError, match="unknown rollout id 'ro-9'"):
        asyncio.run(wrapped(object(), "ro-9"))
