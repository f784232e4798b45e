"""Pausing the cyclic garbage collector while a bulk read builds its result.

A bulk read (``wait_for_rollouts`` over 100k ids, ``query_rollouts`` of a large store) makes one model per
record, and every one of them survives until the caller drops the list: a collection run while they are
being made can free none of them, yet each traverses them all, and past a few hundred thousand new objects
CPython starts full passes over everything the store holds. Measured with ``python -m bench.store --only
bulk`` on 3.11, collections were over half of a 100k-id wait's time.

``gc`` has only a process-wide switch, so pauses are counted: overlapping pauses in several threads turn
collection back on once, when the last one ends, and only if it was on when the first one began. Small
reads (under ``PAUSE_FROM`` records) are not worth the switch and run unpaused.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["PAUSE_FROM", "collection_paused"]

PAUSE_FROM = 512
"""Results smaller than this many records are built with the collector left as it is."""

_lock = threading.Lock()
_holders: list[object] = []  # one token per pause in progress
_resume = False  # whether the last pause to end turns collection back on


@contextlib.contextmanager
def collection_paused(size: int) -> Iterator[None]:
    """Hold the cyclic collector off while ``size`` records' worth of results are built."""
    global _resume
    if size < PAUSE_FROM:
        yield
        return
    token = object()
    try:
        with _lock:
            if not _holders:
                _resume = gc.isenabled()
            gc.disable()
            # Registered last: a KeyboardInterrupt landing before this line finds no token below, and
            # collection is still turned back on when no other pause holds it.
            _holders.append(token)
        yield
    finally:
        with _lock:
            with contextlib.suppress(ValueError):
                _holders.remove(token)
            if not _holders and _resume:
                gc.enable()
