"""One way to implement a ``LightningStore`` method by wrapping another: ``wrapping_methods``.

The stores that wrap or stand in for another (the remote clients, the claim-tracking wrapper, the
thread-safe wrapper, the durable store over the in-memory one) each implement many methods by one rule:
"send it", "forward it", "call it on the owner loop", "run it, then commit". The rule is written once per
store, as a function of the call; ``wrapping_methods(rule)`` turns it into a decorator that makes each
method from its declaration (name, signature, docstring, what ``inspect`` shows) and is no longer
abstract, so ``ABC`` lets the class be instantiated.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["WrapRule", "wrapping_methods"]

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])

WrapRule = Callable[[Any, Callable[..., Awaitable[Any]], tuple[Any, ...], dict[str, Any]], Awaitable[Any]]
"""``rule(store, method, args, kwargs)``: the awaitable result of calling the declared ``method`` on
``store`` with ``args`` and ``kwargs``. A plain function returning the wrapped call's coroutine costs one
function call per store call; an ``async def`` rule costs one coroutine more."""


def wrapping_methods(rule: WrapRule) -> Callable[[_F], _F]:
    """A decorator: each ``LightningStore`` method given to it becomes one that awaits ``rule`` on its
    call. The method given is the declaration (``LightningStore.add_span``) or the implementation being
    wrapped (``InMemoryLightningStore.add_span``); ``rule`` receives it as ``method``."""

    def wrap(method: _F) -> _F:
        @functools.wraps(method)
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await rule(self, method, args, kwargs)

        wrapper.__isabstractmethod__ = False  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return wrap
