"""The ``ray`` strategy on a Ray cluster of three nodes (three raylets) on this machine.

The head node is the test process's own ``ray.init`` (Ray 2.60 rewrites a loopback address to the
machine's own address in ``ray.init``, so the head is on that address and a loopback-only cluster could
not be joined by address at all); the two worker nodes are added with ``ray.cluster_utils`` bound to
127.0.0.1. Runners are placed one per worker node
(``strict_spread``); killing the node of one runner mid-run surfaces as ``WorkerDied`` naming the runner
and its node, and the rollout it held is requeued by its policy: nothing is lost.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentlightning.execution.processes import WorkerDied
from agentlightning.store.memory import InMemoryLightningStore
from conformance.ray_session import RAY_MISSING

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

try:
    import ray
    from ray.cluster_utils import Cluster
except ImportError:
    ray = None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(ray is None, reason=RAY_MISSING),
]


@pytest.fixture(scope="module")
def nodes() -> Iterator[dict[str, Any]]:
    """Head (the driver's, 1 CPU) plus two worker nodes with a ``worker`` resource; node id -> node."""
    import ray_bundles

    path = os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])
    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    cluster = Cluster(initialize_head=False, shutdown_at_exit=False)
    cluster.head_node = ray._private.worker._global_node
    try:
        for _ in range(2):
            node = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={"worker": 1})
            ray_bundles.NODES[node.node_id] = node
        yield ray_bundles.NODES
    finally:
        for node in list(cluster.worker_nodes):
            cluster.remove_node(node, allow_graceful=False)
        ray_bundles.NODES.clear()
        ray.shutdown()


def _started(directory: str) -> dict[str, str]:
    from ray_bundles import read_journal

    return {
        line.split()[2]: line.split("node=")[1].split()[0]
        for line in read_journal(directory)
        if line.startswith("runner started")
    }


def test_runners_on_different_nodes_and_a_lost_node_loses_nothing(
    nodes: dict[str, Any], tmp_path: Path
) -> None:
    from ray_bundles import Algorithm, Runner, read_journal

    from agentlightning.execution.ray_actors import RayExecutionStrategy

    assert len(ray.nodes()) == 3
    strategy = RayExecutionStrategy(
        n_runners=2,
        placement="strict_spread",
        runner_resources={"worker": 1},
        graceful_timeout=5.0,
        terminate_timeout=2.0,
    )
    # Runs first: every rollout completed exactly once by runners on two different worker nodes.
    first = tmp_path / "first"
    first.mkdir()
    strategy.execute(Algorithm(str(first), n_rollouts=4), Runner(str(first)), InMemoryLightningStore())
    placed = _started(str(first))
    assert set(placed) == {"0", "1"} and len(set(placed.values())) == 2 and set(placed.values()) <= set(nodes)
    completed = [line.split()[1] for line in read_journal(str(first)) if line.startswith("completed ")]
    assert len(completed) == 4 == len(set(completed))

    # Then the node of runner 1 is killed while it holds a rollout.
    second = tmp_path / "second"
    second.mkdir()
    store = InMemoryLightningStore()
    with pytest.raises(WorkerDied, match=r"runner-1.*node") as info:
        strategy.execute(
            Algorithm(str(second), "kill-node-of-runner-1", 2, n_rollouts=1),
            Runner(str(second), "claim-1"),
            store,
        )
    lost = _started(str(second))["1"]
    assert lost[:12] in str(info.value)  # the node is named
    rollout_id = next(line.split()[1] for line in read_journal(str(second)) if line.startswith("claimed "))
    attempts = asyncio.run(store.query_attempts(rollout_id))
    rollout = asyncio.run(store.get_rollout_by_id(rollout_id))
    assert attempts[0].status == "unresponsive"  # given up as soon as the actor was seen dead
    # Requeued by its policy; the surviving runner may already have taken it up again before it saw
    # the stop (nothing lost either way), as in the single-node test.
    assert rollout is not None and rollout.status in ("queuing", "requeuing", "running", "succeeded"), rollout
