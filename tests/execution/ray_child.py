"""Child for the ``ray`` Ctrl+C test: execute() with a local cluster of its own, until SIGINT arrives."""

from __future__ import annotations

import sys

from ray_bundles import Algorithm, Runner

from agentlightning.execution.ray_actors import RayExecutionStrategy
from agentlightning.store.memory import InMemoryLightningStore

if __name__ == "__main__":
    directory = sys.argv[1]
    strategy = RayExecutionStrategy(n_runners=2, local_num_cpus=2, graceful_timeout=2.0)
    try:
        strategy.execute(
            Algorithm(directory, "wait-runners", 2), Runner(directory, "wait"), InMemoryLightningStore()
        )
    except KeyboardInterrupt:
        print("raised KeyboardInterrupt", flush=True)
    else:
        print("returned", flush=True)
