"""Breaks R3 (no-fd-or-socket-leak): a listening "status" socket is opened per run and never closed.

The strategy opens a TCP socket on 127.0.0.1 (an ephemeral port) so that a dashboard can ask how the
run is going, and forgets to close it when ``execute()`` ends: every run leaks one fd and one listening
port.
"""

from __future__ import annotations

import socket
from typing import ClassVar

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.events import ExecutionEvent
from agentlightning.store.base import LightningStore
from strategies.thread_pool import Bundle, ThreadPoolExecutionStrategy

__all__ = ["BREAKS", "StatusSocketLeftOpenStrategy"]

BREAKS = "R3"


class StatusSocketLeftOpenStrategy(ThreadPoolExecutionStrategy):
    """The thread-pool example plus a status socket that is never closed."""

    # Kept referenced, as a status server would be: the leak is an open socket, not a garbage warning.
    status_sockets: ClassVar[list[socket.socket]] = []

    def _bundles(
        self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore, event: ExecutionEvent
    ) -> list[Bundle]:
        status = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        status.bind(("127.0.0.1", 0))
        status.listen(8)
        self.status_sockets.append(status)
        return super()._bundles(algorithm, runner, store, event)
