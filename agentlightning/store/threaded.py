"""``ThreadedLightningStore``: one store shared by several threads, each running its own event loop.

A store that declares ``thread_safe = True`` (``InMemoryLightningStore``) is called directly: its lock is
never held across an ``await`` and its waiters wake other threads' loops themselves. Any other store is
confined to one private thread (``agl-store-owner``) running an event loop: every call is shipped there
with ``asyncio.run_coroutine_threadsafe`` and awaited in the caller's loop through ``asyncio.wrap_future``,
so the wrapped store only ever sees one loop, and no caller's loop ever blocks. Cancelling a caller's await
cancels the call on the owner loop too.

The owner thread starts lazily, on the first call, and ``await close()`` (or ``close_sync()`` from plain
code) stops and joins it; calls still in flight then fail with ``RuntimeError``, and later calls too. A
wrapper that is garbage-collected unclosed stops its thread as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, TypeVar

from agentlightning.store.base import LightningStore
from agentlightning.store.wrapping import wrapping_methods

__all__ = ["OWNER_THREAD_NAME", "ThreadedLightningStore"]

_T = TypeVar("_T")

OWNER_THREAD_NAME = "agl-store-owner"

_new_lock: Callable[[], Any] = threading.Lock
"""Makes every lock of the wrapper. The one hook point the conformance kit's scheduling perturbation
(``conformance.perturbation``, racing point ``store-lock``) replaces while a scenario runs; private by
convention, plain ``threading.Lock`` otherwise (no cost when nothing is perturbed)."""


def _stop_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Ask the owner loop to stop (from any thread); a no-op once it is closed."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(loop.stop)


def _run_owner_loop(loop: asyncio.AbstractEventLoop, on_exit: Callable[[], None]) -> None:
    """Body of the owner thread: run the loop until stopped, then cancel leftovers and close it."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            on_exit()


async def _on_owner_loop(call: Coroutine[Any, Any, _T], owner: _OwnerThread) -> _T:
    """Run one shipped call; if closing the wrapper cancels it, the caller gets a clear error instead."""
    try:
        return await call
    except asyncio.CancelledError:
        if owner.stopping:
            raise RuntimeError("ThreadedLightningStore was closed while this call was in flight") from None
        raise


class _OwnerThread:
    """The private thread and loop that a non-thread-safe store is confined to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.stopping = False  # set before the loop is stopped: in-flight calls then fail, not "cancel"
        self.exited = threading.Event()
        self._exit_waiters: list[Callable[[], None]] = []
        self._lock = _new_lock()
        self.thread = threading.Thread(
            target=_run_owner_loop, args=(self.loop, self._on_exit), name=OWNER_THREAD_NAME, daemon=True
        )
        # Calls submitted before the thread gets going are queued by the loop and run once it starts,
        # so starting never makes a caller wait.
        self.thread.start()

    def _on_exit(self) -> None:
        with self._lock:
            self.exited.set()
            waiters, self._exit_waiters = self._exit_waiters, []
        for wake in waiters:
            wake()

    async def wait_exited(self) -> None:
        """Await the thread's exit without blocking the caller's loop."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def _wake() -> None:
            def _set() -> None:
                if not done.done():
                    done.set_result(None)

            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set)

        with self._lock:
            if self.exited.is_set():
                return
            self._exit_waiters.append(_wake)
        await done


def _delegate(
    store: ThreadedLightningStore,
    method: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Awaitable[Any]:
    """The call on the wrapped store: directly when it is thread-safe, else shipped to its owner loop."""
    name = method.__name__
    if store._direct and not store._closed:
        return getattr(store._inner, name)(*args, **kwargs)  # type: ignore[no-any-return]
    return store._call(lambda: getattr(store._inner, name)(*args, **kwargs))


_delegated = wrapping_methods(_delegate)


class ThreadedLightningStore(LightningStore):
    """A ``LightningStore`` usable from any thread's event loop; ``inner`` is the wrapped store.

    ``close_inner=True`` makes ``close()`` also close the wrapped store (on its owner loop, where its
    connections live); by default the wrapped store belongs to whoever created it and is left open.
    """

    thread_safe: ClassVar[bool] = True

    def __init__(self, store: LightningStore, *, close_inner: bool = False) -> None:
        if not isinstance(store, LightningStore):
            raise TypeError(f"store must be a LightningStore, got {type(store).__name__} {store!r}")
        if not isinstance(close_inner, bool):
            raise TypeError(f"close_inner must be a bool, got {close_inner!r}")
        self._inner = store
        self._close_inner = close_inner
        self._direct = getattr(store, "thread_safe", False) is True
        self._owner: _OwnerThread | None = None
        self._owner_lock = _new_lock()
        self._closed = False
        self._finalizer: weakref.finalize[[asyncio.AbstractEventLoop], ThreadedLightningStore] | None = None

    @property
    def inner(self) -> LightningStore:
        """The wrapped store."""
        return self._inner

    @property
    def direct(self) -> bool:
        """``True`` when calls go straight to the wrapped (thread-safe) store."""
        return self._direct

    @property
    def owner_thread(self) -> threading.Thread | None:
        """The thread the wrapped store is confined to, once started (``None`` on the direct path)."""
        return None if self._owner is None else self._owner.thread

    def __repr__(self) -> str:
        path = "direct" if self._direct else "owner-thread"
        return f"<ThreadedLightningStore {path} inner={self._inner!r} closed={self._closed}>"

    # -- dispatch -------------------------------------------------------------------------------------

    def _owner_thread(self) -> _OwnerThread:
        with self._owner_lock:
            if self._closed:
                raise RuntimeError("ThreadedLightningStore is closed")
            if self._owner is None:
                self._owner = _OwnerThread()
                self._finalizer = weakref.finalize(self, _stop_loop, self._owner.loop)
            return self._owner

    async def _call(self, make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        if self._direct:
            if self._closed:
                raise RuntimeError("ThreadedLightningStore is closed")
            return await make()
        owner = self._owner_thread()
        # The coroutine object is created here but only runs on the owner loop.
        future = asyncio.run_coroutine_threadsafe(_on_owner_loop(make(), owner), owner.loop)
        return await asyncio.wrap_future(future)

    # -- the interface, delegated ---------------------------------------------------------------------

    start_rollout = _delegated(LightningStore.start_rollout)
    enqueue_rollout = _delegated(LightningStore.enqueue_rollout)
    dequeue_rollout = _delegated(LightningStore.dequeue_rollout)
    start_attempt = _delegated(LightningStore.start_attempt)
    update_rollout = _delegated(LightningStore.update_rollout)
    query_rollouts = _delegated(LightningStore.query_rollouts)
    get_rollout_by_id = _delegated(LightningStore.get_rollout_by_id)
    wait_for_rollouts = _delegated(LightningStore.wait_for_rollouts)
    query_attempts = _delegated(LightningStore.query_attempts)
    get_latest_attempt = _delegated(LightningStore.get_latest_attempt)
    update_attempt = _delegated(LightningStore.update_attempt)
    add_span = _delegated(LightningStore.add_span)
    query_spans = _delegated(LightningStore.query_spans)
    add_resources = _delegated(LightningStore.add_resources)
    get_latest_resources = _delegated(LightningStore.get_latest_resources)
    get_resources_by_id = _delegated(LightningStore.get_resources_by_id)

    # -- lifecycle ------------------------------------------------------------------------------------

    def _begin_close(self) -> tuple[bool, _OwnerThread | None]:
        """Mark the wrapper closed: (whether this is the first close, the owner thread if started)."""
        with self._owner_lock:
            if self._closed:
                return False, None
            self._closed = True
            owner = self._owner
        if self._finalizer is not None:
            self._finalizer.detach()
        return True, owner

    async def close(self) -> None:
        """Stop and join the owner thread (closing the wrapped store first if ``close_inner``). Idempotent.

        Awaiting never blocks the caller's loop: the thread reports its exit back to it.
        """
        first, owner = self._begin_close()
        if not first:
            return
        try:
            if self._close_inner:
                if owner is None:
                    await self._inner.close()
                else:
                    closing = asyncio.run_coroutine_threadsafe(self._inner.close(), owner.loop)
                    await asyncio.wrap_future(closing)
        finally:
            if owner is not None:
                owner.stopping = True
                _stop_loop(owner.loop)
                await owner.wait_exited()
                owner.thread.join()  # it has already run its last line; this only reaps it

    def close_sync(self, timeout: float | None = 10.0) -> None:
        """``close()`` for plain (non-async) code such as a strategy's cleanup path. Idempotent.

        Raises ``TimeoutError`` if the owner thread does not exit within ``timeout`` seconds.
        """
        first, owner = self._begin_close()
        if not first:
            return
        if owner is not None and threading.current_thread() is owner.thread:
            raise RuntimeError("close_sync() called from the store's own owner thread")
        try:
            if self._close_inner:
                if owner is None:
                    _close_from_plain_code(self._inner)
                else:
                    asyncio.run_coroutine_threadsafe(self._inner.close(), owner.loop).result(timeout)
        finally:
            if owner is not None:
                owner.stopping = True
                _stop_loop(owner.loop)
                owner.thread.join(timeout)
                if owner.thread.is_alive():
                    raise TimeoutError(
                        f"store owner thread {owner.thread.name!r} did not exit within {timeout} s"
                    )


def _close_from_plain_code(store: LightningStore) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(store.close())
        return
    raise RuntimeError("close_sync(): a loop is running in this thread; use 'await store.close()' instead")
