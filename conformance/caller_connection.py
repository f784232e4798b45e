"""A cluster connection the caller opened before ``execute()``, which ``execute()`` must leave as it found it.

A cluster strategy (Ray, Dask) usually runs inside a program that is already connected to its cluster
(``ray.init()`` at the top of a training script, a ``dask.distributed.Client``). The strategy must use
that connection as it is: never close it, never stop a cluster it did not start. That is part of the
caller's state (R7), and the kit can check it only if the scenario process is such a caller. A strategy
tells the kit how, through one public method on its instance::

    def caller_connection(self) -> CallerConnection | None:
        '''Connect this process to the cluster, as the strategy's caller would (None: no cluster to join).'''

It returns an object with ``describe() -> str``: the connection as the cluster library sees it now
(``"connected to <address>"``, ``"not connected"``), read from the library itself, never from the
strategy's own bookkeeping, so a subclass cannot hide what it did. The kit calls ``caller_connection()``
in each scenario process before its first snapshot (what the connection holds is the baseline), and
``describe()`` with the rest of the caller's state before and after ``execute()``: a different
description fails R7 ("caller's cluster connection: was ..., now ..."), and with it every contract that
asks R7 to hold (K3-K5). A ``describe()`` that raises is recorded as such, so it cannot pass silently.
See docs/running-on-ray.md for the Ray strategy's connection and how other cluster strategies declare
theirs.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = [
    "CONNECTION_METHOD",
    "STATE_NAME",
    "CallerConnection",
    "connection_state",
    "open_caller_connection",
]

CONNECTION_METHOD = "caller_connection"
"""The name of the strategy method the kit calls (see the module docstring)."""

STATE_NAME = "caller's cluster connection"
"""How the connection is named among the caller's state in an R7 finding."""


class CallerConnection(Protocol):
    """What ``caller_connection()`` returns: the caller's connection, described on demand."""

    def describe(self) -> str: ...


def open_caller_connection(strategy: Any) -> CallerConnection | None:
    """Open the caller's connection the strategy declares (``None`` when it declares none or has no cluster
    to join). An error opening it propagates: the scenario cannot run as the caller the strategy expects."""
    method = getattr(strategy, CONNECTION_METHOD, None)
    if not callable(method):
        return None
    connection = method()
    if connection is not None and not callable(getattr(connection, "describe", None)):
        raise TypeError(
            f"{type(strategy).__qualname__}.{CONNECTION_METHOD}() must return None or an object with "
            f"describe() -> str; got {connection!r}"
        )
    return connection  # type: ignore[no-any-return]


def connection_state(connection: CallerConnection | None) -> dict[str, tuple[Any, str]]:
    """The connection as one entry of the caller's state (``leaks.caller_state``'s shape): compared by
    its description; empty without a connection."""
    if connection is None:
        return {}
    try:
        description = str(connection.describe())
    except Exception as exc:
        description = f"describe() failed, so the connection could not be checked: {exc!r}"
    return {STATE_NAME: (description, description)}
