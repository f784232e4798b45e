"""``RemoteLightningStore``: the store's methods over one abstract call, shared by every remote client.

A client of a store served elsewhere (``http.client.HttpLightningStore``, ``ipc.IpcLightningStore``)
implements ``_call(method, arguments)``: send one call, return its result's JSON. This base implements
every ``LightningStore`` method once over it, from the method table (``methods.METHODS``): the arguments
are bound by the method's signature, checked by the store's value rule (``values.py``) with the client's
limits, models sent as their fields, and the result rebuilt by the method's ``TypeAdapter``. A transport
is then its wire, its connections and its lifecycle, nothing else.

Errors, one rule for every remote path (HTTP and ipc alike):

- The served store's ``ValueError`` (an unknown id, an illegal transition, a refused value) reaches the
  caller as a ``ValueError`` with the store's message, as does a request the server refuses as malformed.
  A value the client can tell is refused is refused before anything is sent, naming its field.
- Any other exception of the served store reaches the caller as ``StoreServerError`` (a
  ``RuntimeError``) naming the method: its type is not carried, because the caller may not be able to
  import it and the server must not depend on what a client can unpickle. Over ipc (same machine, same
  user) its message names the original type and message, and the original is its ``__cause__``; over
  HTTP its text stays in the server's log under the request id the message gives.
- Failures of the channel itself are the transport's own ``ConnectionError`` (``StoreServerUnreachable``,
  ``StoreChannelError``), and a refused token a ``PermissionError``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from agentlightning.store.base import UNSET, LightningStore
from agentlightning.store.methods import METHODS, StoreMethod
from agentlightning.store.values import ValueLimits, check_json, check_span
from agentlightning.store.wrapping import wrapping_methods
from agentlightning.types import Span

__all__ = ["RemoteLightningStore", "StoreServerError"]

_F = TypeVar("_F", bound=Callable[..., Coroutine[Any, Any, Any]])


class StoreServerError(RuntimeError):
    """The served store, or its server, failed with an error that is not the caller's bad input."""


async def _send(
    store: RemoteLightningStore,
    declared: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """The call, implemented over ``RemoteLightningStore._call``."""
    method = METHODS[declared.__name__]
    arguments = store._outgoing(method, method.bind(args, kwargs))
    return method.decode(await store._call(method, arguments))


_remote = wrapping_methods(_send)


class RemoteLightningStore(LightningStore):
    """A ``LightningStore`` whose every method is one ``_call`` to a store served elsewhere.

    Subclasses implement ``_call`` and ``_outgoing_limits`` (the value rule's bounds to check arguments
    with: keep them the server's), and may override a method for what their wire needs (the HTTP client
    waits in chunks). See the module docstring for the error rule every subclass keeps.
    """

    @property
    @abstractmethod
    def _outgoing_limits(self) -> ValueLimits:
        """The value rule's bounds the arguments are checked with before they are sent."""

    @abstractmethod
    async def _call(self, method: StoreMethod, arguments: dict[str, Any]) -> bytes | None:
        """Send one call of ``method`` with ``arguments`` (checked, JSON-ready); its result's JSON.

        ``None`` stands for a ``None`` result (a wire may carry it as its own nil). Raises per the error
        rule of the module docstring.
        """

    def _outgoing(self, method: StoreMethod, given: dict[str, Any]) -> dict[str, Any]:
        """The arguments to send: ``UNSET`` ones dropped (the store keeps its default), every value checked
        by the value rule (its checked copy), models as their fields, sequences as lists."""
        limits = self._outgoing_limits
        arguments: dict[str, Any] = {}
        for name, value in given.items():
            if value is UNSET:
                continue
            model = method.models.get(name)
            if value is None:
                arguments[name] = None
            elif model is not None:
                if not isinstance(value, model):
                    raise TypeError(
                        f"{name} must be a {model.__name__}, got {type(value).__name__} {value!r}"
                    )
                # A span's fields as the value rule checks them (model_dump(mode="json") would turn bytes
                # into str on the way instead of refusing them).
                dumped = (
                    check_span(value, limits) if isinstance(value, Span) else value.model_dump(mode="json")
                )
                arguments[name] = dumped
            elif name in method.lists and not isinstance(value, (str, bytes)):
                arguments[name] = check_json(name, list(value), limits)
            else:
                arguments[name] = check_json(name, value, limits)
        return arguments

    start_rollout = _remote(LightningStore.start_rollout)
    enqueue_rollout = _remote(LightningStore.enqueue_rollout)
    dequeue_rollout = _remote(LightningStore.dequeue_rollout)
    start_attempt = _remote(LightningStore.start_attempt)
    update_rollout = _remote(LightningStore.update_rollout)
    query_rollouts = _remote(LightningStore.query_rollouts)
    get_rollout_by_id = _remote(LightningStore.get_rollout_by_id)
    wait_for_rollouts = _remote(LightningStore.wait_for_rollouts)
    query_attempts = _remote(LightningStore.query_attempts)
    get_latest_attempt = _remote(LightningStore.get_latest_attempt)
    update_attempt = _remote(LightningStore.update_attempt)
    add_span = _remote(LightningStore.add_span)
    query_spans = _remote(LightningStore.query_spans)
    add_resources = _remote(LightningStore.add_resources)
    get_latest_resources = _remote(LightningStore.get_latest_resources)
    get_resources_by_id = _remote(LightningStore.get_resources_by_id)
