"""Breaks D2 (host-loss): a runner machine that vanishes takes the rollout it held with it.

The reference ``cs``, subclassed, that notices a silent runner side and forgets it, but never gives
up the attempts its runners held: "the unresponsive window will catch them". That window is ten
minutes by default, so the rollout sits claimed by a dead machine; no other runner gets it, and the
algorithm waits for it (or ends without it).
"""

from __future__ import annotations

import logging

from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.client_server import ClientServerExecutionStrategy, _Execution
from agentlightning.execution.remote_stop import SilentSide
from agentlightning.store.base import LightningStore
from agentlightning.store.claims import ClaimLedger

__all__ = ["BREAKS", "HostLossLosesRolloutStrategy"]

BREAKS = "D2"

logger = logging.getLogger(__name__)


class _ForgetfulExecution(_Execution):
    def _lost_side(self, lost: SilentSide, claims: ClaimLedger, served: LightningStore) -> None:
        logger.warning("runner side %s at %s went silent; forgetting it", lost.side, lost.address)


class HostLossLosesRolloutStrategy(ClientServerExecutionStrategy):
    """``cs`` that forgets a lost runner machine without giving up what it held."""

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        _ForgetfulExecution(self, algorithm, runner, store).run()
