"""Helpers shared by the store tests: a clock moved by hand, and running a coroutine to its end."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

_T = TypeVar("_T")


def run(coro: Awaitable[_T]) -> _T:
    async def _main() -> _T:
        return await coro

    return asyncio.run(_main())


class FakeClock:
    """A clock the test moves by hand, so liveness deadlines are reached without sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
