"""CPU per ``execute()`` of the ``ray`` strategy, by where it is spent: ``python -m bench.ray_cost``.

The kit on ``ray`` is bound by CPU, not by waiting (``docs/running-on-ray.md``, "What one run costs"), so
what one run costs, and where, decides its wall time. This runs ``--runs`` ``execute()`` calls (default
6, plus one warm-up that starts the driver's forkserver and is not counted) one after the other in this
process, with ``--runners`` runners and the bundles of W4 (the algorithm returns once every runner runs),
against a local cluster started for the purpose with its prestarted workers, as the kit's and the
benchmark's are (``ray_cluster.LocalRayCluster``).

While they run, a thread reads the CPU time of every process from ``/proc`` every ``_EVERY`` seconds and
charges each increment to the role the process has at that moment, read from its command line: a pool
worker's boot and its later life as a runner actor are told apart. Counted: this process (less the
reading thread itself), its descendants (the driver and the forkserver it comes from) and every process
of the cluster's session (Ray's daemons and workers, the actors' runner processes). A process that ends
between two readings loses its last increment, so the figures are a floor. Linux only (``/proc``).

``--w1 N`` measures W1 instead (``bench.strategies.measure_w1``: N rollouts through 2 runners, one run
after a warm-up), and gives the CPU per rollout by role with the rate, for ``ray`` and, beside it in
the same invocation, ``cs``. "This process's children" are the ``ray`` driver (and its forkserver), and
``cs``'s runner processes, forked from this one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from bench.bundles import LifecycleAlgorithm, LifecycleRunner

if TYPE_CHECKING:
    from agentlightning.execution.ray_cluster import LocalRayCluster

__all__ = ["ROLES", "CpuReader", "main", "measure", "measure_w1_cost", "role_of"]

_EVERY = 0.02
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

ROLES = (
    "Ray workers (booting or idle)",
    "runner actors",
    "runner processes",
    "resource trackers",
    "caller",
    "this process's children",
    "raylet",
    "GCS",
    "pool keeper",
    "other cluster processes",
)
"""The roles a process is charged to, in the order the table lists them."""


def role_of(command: str, pid: int, own: bool, me: int) -> str:
    """The role of process ``pid`` whose command line is ``command``; ``own``: a descendant of ``me``.

    The daemons are told by their program first: the raylet's arguments name the worker script.
    """
    if pid == me:
        return "caller"
    program = command.split(maxsplit=1)[0] if command else ""
    if program.endswith("raylet"):
        return "raylet"
    if program.endswith("gcs_server"):
        return "GCS"
    if "default_worker.py" in command or program == "ray::IDLE":
        return "Ray workers (booting or idle)"
    if program.startswith("ray::") and "Agent" not in program:
        return "runner actors"
    if "resource_tracker" in command:
        return "resource trackers"
    if "spawn_main" in command and not own:
        return "runner processes"
    if "ray_worker_pool" in command:
        return "pool keeper"
    return "this process's children" if own else "other cluster processes"


@dataclasses.dataclass
class _Seen:
    cpu: float
    role: str


class CpuReader:
    """Charges the CPU every counted process spends to its role, read every ``every`` seconds."""

    def __init__(self, session_id: int, every: float = _EVERY) -> None:
        self.session_id = session_id
        self.every = every
        self.charged: dict[str, float] = dict.fromkeys(ROLES, 0.0)
        self._seen: dict[tuple[int, int], _Seen] = {}
        self._me = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-cpu-reader", daemon=True)
        self._own_cpu = 0.0

    def __enter__(self) -> CpuReader:
        self.read(charge=False)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.read(charge=True)
        self.charged["caller"] = max(0.0, self.charged["caller"] - self._own_cpu)

    def _loop(self) -> None:
        started = time.thread_time()
        while not self._stop.wait(self.every):
            self.read(charge=True)
        self._own_cpu = time.thread_time() - started

    def read(self, charge: bool) -> None:
        """One reading of every counted process: increments since the last reading go to its role now."""
        stats = _all_stats()
        parents = {pid: stat[0] for pid, stat in stats.items()}
        for pid, (_, session, started, cpu) in stats.items():
            # The cluster was started from here too: its session tells its processes from our own.
            own = session != self.session_id and _descends(pid, self._me, parents)
            if not own and session != self.session_id:
                continue
            key = (pid, started)
            previous = self._seen.get(key)
            command = _command(pid)
            role = role_of(command, pid, own, self._me) if command else (previous.role if previous else "")
            if not role:
                continue
            if charge:
                self.charged[role] += cpu - (previous.cpu if previous else 0.0)
            self._seen[key] = _Seen(cpu, role)


def _all_stats() -> dict[int, tuple[int, int, int, float]]:
    """``{pid: (parent, session, start time in ticks, CPU seconds)}`` of every readable process."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as file:
                text = file.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
        try:
            cpu = (int(fields[11]) + int(fields[12])) / _TICK
            found[int(name)] = (int(fields[1]), int(fields[3]), int(fields[19]), cpu)
        except (IndexError, ValueError):
            continue
    return found


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _descends(pid: int, ancestor: int, parents: dict[int, int]) -> bool:
    seen = 0
    while pid > 1 and seen < 64:
        if pid == ancestor:
            return True
        pid = parents.get(pid, 0)
        seen += 1
    return False


@contextlib.contextmanager
def _held_cluster() -> Iterator[LocalRayCluster]:
    """A local cluster with its pool, its address and token in this process's environment meanwhile."""
    from agentlightning.execution.ray_cluster import LocalRayCluster

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    saved = dict(os.environ)
    with LocalRayCluster(env={"PYTHONPATH": path}) as cluster:
        os.environ.update(cluster.environment())
        try:
            yield cluster
        finally:
            os.environ.clear()
            os.environ.update(saved)


def measure(runs: int, n_runners: int, progress: Callable[[str], None] = lambda _: None) -> dict[str, object]:
    """CPU seconds per ``execute()`` by role, and the wall time per run, on a cluster started here."""
    from agentlightning.execution.ray_actors import RayExecutionStrategy
    from agentlightning.store.memory import InMemoryLightningStore

    with _held_cluster() as cluster:
        assert cluster.session_id is not None
        strategy = RayExecutionStrategy(n_runners=n_runners)

        def run() -> None:
            with tempfile.TemporaryDirectory(prefix="agl-bench-") as directory:
                strategy.execute(
                    LifecycleAlgorithm(directory, n_runners),
                    LifecycleRunner(directory),
                    InMemoryLightningStore(),
                )

        progress("warm-up run (the driver's forkserver starts)")
        run()
        with CpuReader(cluster.session_id) as reader:
            began = time.monotonic()
            for index in range(runs):
                progress(f"run {index + 1} of {runs}")
                run()
            wall = time.monotonic() - began
    per_run = {role: seconds / runs for role, seconds in reader.charged.items()}
    return {"runs": runs, "runners": n_runners, "cpu_per_run": per_run, "wall_per_run": wall / runs}


def measure_w1_cost(strategy: str, n_rollouts: int) -> dict[str, object]:
    """W1 of ``strategy`` (``ray`` on a cluster started here, or a local one) and the CPU microseconds per
    rollout by role over its whole ``execute()``."""
    from bench.strategies import STRATEGIES, measure_w1

    spec = STRATEGIES[strategy]
    with contextlib.ExitStack() as stack:
        session = -1  # nothing but this process and its children
        cluster = stack.enter_context(_held_cluster()) if strategy == "ray" else None
        if cluster is not None:
            assert cluster.session_id is not None
            session = cluster.session_id
        measure_w1(spec, 2, 300)  # warm-up: the forkserver
        if cluster is not None:
            cluster.await_full_pool(120.0)  # the warm-up's replacements booted: they are not this run's
        with CpuReader(session) as reader:
            rate = measure_w1(spec, 2, n_rollouts)
    per_rollout = {role: seconds * 1e6 / n_rollouts for role, seconds in reader.charged.items()}
    return {"strategy": strategy, "rate": rate, "cpu_us_per_rollout": per_rollout}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="execute() calls counted (default 6)")
    parser.add_argument("--runners", type=int, default=2, help="runners per execute() (default 2)")
    parser.add_argument("--w1", type=int, metavar="N", help="measure W1 with N rollouts instead (ray and cs)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.runners < 1:
        parser.error(f"--runs and --runners must be >= 1; got {args.runs} and {args.runners}")
    if not sys.platform.startswith("linux"):
        parser.error("reads /proc: Linux only")
    from conformance.ray_session import ray_missing

    if ray_missing():
        parser.error(ray_missing())
    if args.w1 is not None:
        if args.w1 < 1:
            parser.error(f"--w1 must be >= 1; got {args.w1}")
        for strategy in ("ray", "cs"):
            w1 = measure_w1_cost(strategy, args.w1)
            per = w1["cpu_us_per_rollout"]
            assert isinstance(per, dict)
            print(
                f"{strategy}: W1 {w1['rate']:,.0f} rollouts/s (2 runners, N = {args.w1}); CPU us per rollout:"
            )
            for role in ROLES:
                if per[role] >= 0.5:
                    print(f"  {per[role]:8.1f}  {role}")
        return 0
    result = measure(args.runs, args.runners, progress=lambda line: print(line, file=sys.stderr, flush=True))
    cpu = result["cpu_per_run"]
    assert isinstance(cpu, dict)
    print(f"CPU seconds per execute() ({args.runners} runners, {args.runs} runs):")
    for role in ROLES:
        print(f"  {cpu[role]:7.3f}  {role}")
    print(f"  {sum(cpu.values()):7.3f}  total; wall {result['wall_per_run']:.2f} s per run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
