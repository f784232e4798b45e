"""Services a strategy needs once per kit session (a cluster, a broker), shared by every scenario.

Every scenario runs ``execute()`` in a fresh process (``sandbox``). A strategy that joins something
expensive to start (a Ray cluster takes tens of seconds) would pay for it in every scenario, and on a
small machine a scenario's hang bound could not hold it. Such a strategy names a *session service* on
its class::

    class MyClusterStrategy(ExecutionStrategy):
        conformance_session_service: ClassVar[str] = "my_pkg.cluster:kit_session"

The value is ``"module:callable"`` (imported by the kit only, so the strategy never imports the kit).
The callable takes no argument and returns a context manager; entering it starts the service (or
decides that one is already given, e.g. by an address in the environment, and starts nothing), and
yields a mapping of environment variables that tells the strategy where the service is. Leaving it
stops whatever it started, and only that.

The kit enters the service once per pytest session, in the process that owns the session (the only
process, or the xdist controller, before any worker starts), and exports the mapping into its
environment: every xdist worker, sandbox zygote and scenario process inherits it. The kit leaves the
service at the end of the session (``pytest_unconfigure``, which also runs after Ctrl+C or a failure),
and restores the environment. A service that fails to start is a usage error naming it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SERVICE_ATTRIBUTE", "SessionService", "SessionServiceError", "service_of", "started"]

SERVICE_ATTRIBUTE = "conformance_session_service"
"""The strategy class attribute naming its session service (see the module docstring)."""


class SessionServiceError(RuntimeError):
    """A strategy's session service is misdeclared, or failed to start or to stop."""


@dataclass
class SessionService:
    """A declared session service: ``spec`` (``module:callable``) and, once started, what it exported."""

    spec: str
    environment: dict[str, str] = field(default_factory=dict)
    start_seconds: float = 0.0


def service_of(strategy_class: type | None) -> SessionService | None:
    """The session service ``strategy_class`` declares, or ``None``; a malformed value raises naming it."""
    spec = getattr(strategy_class, SERVICE_ATTRIBUTE, None)
    if spec is None:
        return None
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise SessionServiceError(
            f"{getattr(strategy_class, '__qualname__', strategy_class)}.{SERVICE_ATTRIBUTE} must be "
            f"'module:callable'; got {spec!r}"
        )
    return SessionService(spec)


def _factory(spec: str) -> Any:
    module_name, name = spec.split(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise SessionServiceError(f"session service {spec!r} could not be loaded: {exc}") from exc
    if not callable(factory):
        raise SessionServiceError(f"session service {spec!r} is not callable: {factory!r}")
    return factory


@contextlib.contextmanager
def started(service: SessionService) -> Iterator[SessionService]:
    """Start ``service``, export its environment into ``os.environ``; on exit stop it and restore."""
    began = time.monotonic()
    stack = contextlib.ExitStack()
    try:
        exported = stack.enter_context(_factory(service.spec)())
        if not isinstance(exported, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in exported.items()
        ):
            raise SessionServiceError(
                f"session service {service.spec!r} must yield a mapping of environment variable names "
                f"to strings; got {exported!r}"
            )
    except BaseException as exc:
        stack.close()
        if isinstance(exc, SessionServiceError):
            raise
        raise SessionServiceError(f"session service {service.spec!r} failed to start: {exc}") from exc
    service.environment = dict(exported)
    service.start_seconds = time.monotonic() - began
    saved = {name: os.environ.get(name) for name in exported}
    os.environ.update(exported)
    try:
        with stack:
            yield service
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
