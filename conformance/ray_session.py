"""One local Ray cluster held for several kit runs (the selfcheck's Ray rows, the benchmark, CI).

Starting a Ray cluster costs tens of seconds on a small machine; a Ray strategy's scenarios (each in a
fresh process) join one instead, as the callers of such a strategy do: ``RAY_ADDRESS`` names it, and the
strategy's ``caller_connection`` hook (``conformance.caller_connection``) connects each scenario process
to it before ``execute()``. ``held_cluster()`` is ``agentlightning.execution.ray_cluster.LocalRayCluster``
(the one local cluster of the project: its own process session, its own token, never the user's
``~/.ray/auth_token``, every process stopped at the end) with the current directory on the workers'
``PYTHONPATH`` (so actors import what the scenario's strategy is made of); it yields the environment a kit
run needs.

From a shell (CI): ``python -m conformance.ray_session COMMAND...`` runs one command against such a
cluster (``python -m conformance.ray_session python -m conformance ray -n 2``) and exits with its status.

Ray itself is never imported here (only its command line runs, in the cluster's own processes).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentlightning.execution.ray_cluster import LocalRayCluster

__all__ = ["RAY_MISSING", "held_cluster", "held_local_cluster", "main", "ray_missing"]

RAY_MISSING = "Ray is not installed: pip install 'agentlightning-execution[ray]'"
"""Why a Ray row cannot run without the extra."""

_START_SECONDS = 180.0  # a loaded 2-core machine took over 20 s to start one


def ray_missing() -> str:
    """``RAY_MISSING`` when Ray cannot be imported here, else ``""``."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except ImportError:
        found = False
    return "" if found else RAY_MISSING


@contextlib.contextmanager
def held_cluster(num_cpus: int = 2, pythonpath: Sequence[str] = ()) -> Iterator[dict[str, str]]:
    """A local Ray cluster for the block: yields ``RAY_ADDRESS``, ``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN``
    (and ``PYTHONPATH``) for the processes that are to join it; stopped, and waited for, at the end.
    ``pythonpath``: directories its workers import from, before the current one."""
    with held_local_cluster(num_cpus, pythonpath) as (_, env):
        yield env


@contextlib.contextmanager
def held_local_cluster(
    num_cpus: int = 2, pythonpath: Sequence[str] = ()
) -> Iterator[tuple[LocalRayCluster, dict[str, str]]]:
    """``held_cluster``, yielding the cluster with the environment (a measurement waits for its pool)."""
    from agentlightning.execution.ray_cluster import LocalRayCluster

    path = os.pathsep.join(filter(None, [*pythonpath, os.getcwd(), os.environ.get("PYTHONPATH")]))
    with LocalRayCluster(
        num_cpus=num_cpus, start_timeout=_START_SECONDS, env={"PYTHONPATH": path}
    ) as cluster:
        yield cluster, {**cluster.environment(), "PYTHONPATH": path}


def main(argv: list[str]) -> int:
    """``COMMAND...``: run it against a held cluster, return its exit status."""
    if not argv:
        print("usage: python -m conformance.ray_session COMMAND [ARG...]", file=sys.stderr)
        return 2
    missing = ray_missing()
    if missing:
        print(f"conformance.ray_session: {missing}", file=sys.stderr)
        return 2
    with held_cluster() as env:
        return subprocess.run(argv, env={**os.environ, **env}, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
