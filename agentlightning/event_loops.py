"""The event loop of the runtime's own worker processes: uvloop's where it is installed.

uvloop implements the ``asyncio`` event loop on libuv, in C. Where the loop's own machinery (callbacks,
transports, timers) is much of a process's CPU, as in the ``cs`` and ``ray`` strategies' runner
processes (their aiohttp client), it costs measurably less per request. It is a dependency on the
platforms it has wheels for (``pyproject.toml``); elsewhere, or with ``AGL_EVENT_LOOP=asyncio``, these
loops are asyncio's own, with the same behaviour.

Only processes the runtime starts and ends use it, each by passing ``new_event_loop`` as its loop
factory (``WorkerSpec.loop_factory``): no event loop policy is ever installed. The caller's own process
never gets a uvloop loop, not even in a thread of ours such as the ``cs`` store server's: libuv opens a
process-wide pipe with its first loop and never closes it, which would leave two descriptors behind
after ``execute()`` (R3). A strategy's algorithm bundle, the caller's code, keeps asyncio's loop too, and
so do the ``ipc`` strategy's runners: their client waits for replies in ``recv`` itself, and measured
more CPU per rollout on uvloop.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import sys
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any, TypeVar

from agentlightning.env import AGL_EVENT_LOOP

__all__ = ["loop_kind", "new_event_loop", "run"]

_T = TypeVar("_T")


@functools.cache
def _uvloop() -> ModuleType | None:
    """uvloop, imported on first use (a process that never makes a loop here does not pay for it)."""
    try:
        return importlib.import_module("uvloop")
    except ImportError:  # not installed on this platform (see pyproject.toml): asyncio's loop serves
        return None


def loop_kind() -> str:
    """``"uvloop"`` or ``"asyncio"``: what ``new_event_loop()`` makes here and now.

    ``AGL_EVENT_LOOP`` (``agentlightning.env``) decides when set (``uvloop`` when it is not installed
    is an error naming the variable); otherwise uvloop when it is installed.
    """
    installed = _uvloop() is not None
    wanted = AGL_EVENT_LOOP.get("uvloop" if installed else "asyncio")
    if wanted == "uvloop" and not installed:
        raise ValueError(f"{AGL_EVENT_LOOP.name}='uvloop', but uvloop is not installed on this platform")
    return wanted


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the kind ``loop_kind()`` names; never set as any thread's current loop."""
    uvloop = _uvloop()
    if uvloop is not None and loop_kind() == "uvloop":
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def run(
    main: Coroutine[Any, Any, _T],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = new_event_loop,
) -> _T:
    """``asyncio.run(main)`` on a loop made by ``loop_factory``: leftover tasks are cancelled, async
    generators and the default executor shut down, and the loop closed, however ``main`` ends."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(main)
    loop = loop_factory()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """What ``asyncio.run`` does with the tasks ``main`` left behind (Python 3.10, without a Runner)."""
    leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in leftovers:
        task.cancel()
    if not leftovers:
        return
    loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
    for task in leftovers:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
