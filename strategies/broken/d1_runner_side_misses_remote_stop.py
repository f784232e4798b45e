"""Breaks D1 (remote-stop): a runner machine never hears the algorithm's stop; it stops only once the
store server is gone.

The reference ``cs``, subclassed, whose runner side keeps polling the server (so it stays attached)
but ignores what the poll says: "the runners on other machines notice when the server goes away".
They do, many seconds after the algorithm returned, once the algorithm side has given up waiting for
them to detach and stopped its server, and the runner side has retried it for ``connect_timeout``.
"""

from __future__ import annotations

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.client_server import ClientServerExecutionStrategy, _Execution
from agentlightning.execution.event_bridge import EventBridge
from agentlightning.execution.remote_stop import RemoteStopEvent
from agentlightning.store.base import LightningStore
from agentlightning.store.http import HttpLightningStore

__all__ = ["BREAKS", "RunnerSideMissesRemoteStopStrategy"]

BREAKS = "D1"


class _IgnoredStop(RemoteStopEvent):
    async def wait(self, timeout: float, side: str | None = None) -> bool:
        await super().wait(timeout, side)  # attached, and errors still count: only the stop is ignored
        return False


class _DeafExecution(_Execution):
    def _make_bridge(self, client: HttpLightningStore) -> EventBridge:
        bridge = super()._make_bridge(client)
        bridge.remote = _IgnoredStop(bridge.client)
        return bridge


class RunnerSideMissesRemoteStopStrategy(ClientServerExecutionStrategy):
    """``cs`` whose runner sides learn the stop only from the server's disappearance."""

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        _DeafExecution(self, algorithm, runner, store).run()
