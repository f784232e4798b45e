"""Breaks F2 (port-in-use): a taken listen port is silently replaced by a free one.

A client-server strategy (the reference ``cs``, subclassed) that "helpfully" retries on an ephemeral port
when the configured one is in use. The run goes ahead on a port nobody configured: runners on other
machines (or a firewall rule) expecting the configured port never find the server, and the user is
never told that the address was taken.
"""

from __future__ import annotations

import copy
import errno
import logging

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.client_server import ClientServerExecutionStrategy
from agentlightning.store.base import LightningStore

__all__ = ["BREAKS", "PortFallbackStrategy"]

BREAKS = "F2"

logger = logging.getLogger(__name__)


class PortFallbackStrategy(ClientServerExecutionStrategy):
    """``cs``, falling back to a free port when the configured one is taken."""

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        try:
            super().execute(algorithm, runner, store)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or self.server_port == 0:
                raise
            logger.info("port %s is taken; using a free port instead", self.server_port)
            fallback = copy.copy(self)
            fallback.server_port = 0
            fallback.execute(algorithm, runner, store)
