"""Benchmarks of execution strategies: throughput, stop, SIGINT and start-up latency.

Workloads (each strategy, n_runners = 1, 2, 4, medians over repeated runs):

- W1 throughput: the algorithm enqueues N rollouts, the runners claim and complete them, the algorithm
  waits for all of them (rollouts/s, from the first enqueue to the last completion seen).
- W2 stop latency: the algorithm returns -> ``execute()`` returns (ms).
- W3 SIGINT latency: SIGINT to the process while every bundle runs -> ``execute()`` raises
  ``KeyboardInterrupt`` (ms; sent from outside to a child process running ``execute()``, as a
  terminal's Ctrl+C; a strategy that swallows the interrupt fails W3 whatever its latency).
- W4 start-up latency: ``execute()`` called -> every runner running (ms).

``ray`` (when the extra is installed) runs against one local Ray cluster on 127.0.0.1, started before
its first measurement and stopped after its last (``conformance.ray_session``; or the cluster
``RAY_ADDRESS`` names, which is never stopped here): the measuring process connects to it once, as a
training script's ``ray.init()`` does, so W1, W2 and W4 are ``execute()`` on an already running cluster
and an open connection; W3's child joins it by address. Measured beside other strategies, ``ray`` runs
in a child process of its own (``python -m bench.strategies --strategy ray``), after them: a Ray
connection leaves threads in its process (``ray.shutdown()`` does not end them all), and ``ipc`` and
``cs`` fork their runners only from a single-threaded caller, so in a process connected to Ray they
would be measured with forkserver runners, which no user without Ray gets (measured: ``ipc`` W1 5,900
against 9,700 rollouts/s, ``cs`` W4 185 against 48 ms). So ``ray``'s W1 repeats do not alternate with
the others'; its target against ``cs`` compares medians of the same invocation. The cluster started
here keeps a pool of prestarted Ray workers (``ray_worker_pool``), which replaces the workers a run's
actors took by booting new ones, about 0.75 CPU-s each: a user's cluster has no pool and never makes
those boots, so each ``ray`` W1 repeat begins once the pool is full again
(``LocalRayCluster.await_full_pool``) rather than beside the boots of the repeat before it.

The bundles live in ``bench.bundles`` (importable by name in every process that unpickles them, Ray's
workers included). A strategy joins the benchmark with one entry in ``STRATEGIES``.

Usage: ``python -m bench.strategies [--quick] [--strategy shm ...] [--runners 1 2 4] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.bundles import (
    HANG,
    LifecycleAlgorithm,
    LifecycleRunner,
    ThroughputAlgorithm,
    ThroughputRunner,
    read_stamp,
)

__all__ = [
    "RELATIVE_TARGETS",
    "STRATEGIES",
    "TARGETS",
    "BenchStrategy",
    "apply_relative_targets",
    "main",
    "run",
]

_REPO = Path(__file__).resolve().parent.parent
# Bounds the wait for the pool before a W1 repeat: a loaded 2-core machine boots a Ray worker in seconds.
_POOL_SECONDS = 120.0
_RAY_CHILD_SECONDS = 3600.0  # every runner count's ray figures, Ray's cluster start and stop included
_RAY_CHILD_STOP_SECONDS = 120.0  # after SIGINT: the child stops its cluster (a loaded machine is slow)


@dataclass(frozen=True)
class BenchStrategy:
    """How to build one strategy for the benchmark: its class (dotted path) and constructor options."""

    name: str
    class_path: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, n_runners: int) -> Any:
        module, _, cls = self.class_path.rpartition(".")
        return getattr(importlib.import_module(module), cls)(n_runners=n_runners, **self.options)


STRATEGIES: dict[str, BenchStrategy] = {
    spec.name: spec
    for spec in (
        BenchStrategy("shm", "agentlightning.execution.shared_memory.SharedMemoryExecutionStrategy"),
        BenchStrategy("cs", "agentlightning.execution.client_server.ClientServerExecutionStrategy"),
        BenchStrategy("ipc", "agentlightning.execution.inter_process.InterProcessExecutionStrategy"),
        BenchStrategy("ray", "agentlightning.execution.ray_actors.RayExecutionStrategy"),
    )
}
"""Every benchmarked strategy, by name. Add one line to benchmark another."""

TARGETS: dict[str, dict[str, tuple[str, float]]] = {
    "shm": {"W1": (">=", 8600.0), "W2": ("<=", 10.0), "W3": ("<=", 100.0), "W4": ("<=", 20.0)},
    "cs": {"W1": (">=", 2500.0), "W2": ("<=", 50.0), "W3": ("<=", 150.0)},
    "ipc": {"W1": (">=", 8000.0), "W2": ("<=", 20.0), "W3": ("<=", 100.0)},
    "ray": {"W2": ("<=", 100.0), "W3": ("<=", 500.0), "W4": ("<=", 2000.0)},
}
"""Absolute targets per strategy, with 2 runners and N = 1,000 (W1 in rollouts/s, the others in ms)."""

RELATIVE_TARGETS: dict[str, dict[str, tuple[str, float, str]]] = {
    "ray": {"W1": (">=", 1.0, "cs")},
}
"""Targets as a ratio to another strategy's median measured in the same run (same runners, N = 1,000):
``(op, factor, baseline strategy)``; judged only when the baseline was measured too."""

UNITS = {"W1": "rollouts/s", "W2": "ms", "W3": "ms", "W4": "ms"}


# -- one measurement each ----------------------------------------------------------------------------------


def _store() -> Any:
    from agentlightning.store.memory import InMemoryLightningStore

    return InMemoryLightningStore()


def measure_w1(
    spec: BenchStrategy, n_runners: int, n_rollouts: int, payload_bytes: int = 0, work_seconds: float = 0.0
) -> float:
    """W1 in rollouts/s; every rollout's input carries ``payload_bytes`` of string when non-zero, and
    costs its runner ``work_seconds`` of pure-Python CPU when non-zero."""
    wait_seconds = HANG + n_rollouts * work_seconds
    with tempfile.TemporaryDirectory(prefix="agl-bench-") as directory:
        strategy = spec.build(n_runners)
        strategy.execute(
            ThroughputAlgorithm(directory, n_runners, n_rollouts, payload_bytes, wait_seconds),
            ThroughputRunner(directory, work_seconds),
            _store(),
        )
        return read_stamp(directory, "rate")


def measure_w2_w4(spec: BenchStrategy, n_runners: int) -> tuple[float, float]:
    """(W2, W4) in ms from one run: stop latency and start-up latency."""
    with tempfile.TemporaryDirectory(prefix="agl-bench-") as directory:
        strategy = spec.build(n_runners)
        algorithm, runner, store = (
            LifecycleAlgorithm(directory, n_runners),
            LifecycleRunner(directory),
            _store(),
        )
        called = time.monotonic()
        strategy.execute(algorithm, runner, store)
        returned = time.monotonic()
        ready = max(read_stamp(directory, f"ready-{i}") for i in range(n_runners))
        return (returned - read_stamp(directory, "algorithm-returns")) * 1e3, (ready - called) * 1e3


def measure_w3(spec: BenchStrategy, n_runners: int) -> dict[str, Any]:
    """W3: ``{"outcome", "latency_ms"}``, SIGINT sent from this process to a child running ``execute()``.

    Sent from outside, as a terminal's Ctrl+C is, once every runner reported it runs; the child stamps
    the moment ``execute()`` raised (``time.monotonic()`` is one clock for both processes).
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])),
    }
    with tempfile.TemporaryDirectory(prefix="agl-bench-") as directory:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.strategies", "--w3-child", spec.name, str(n_runners), directory],
            cwd=_REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ready = [Path(directory, f"ready-{i}") for i in range(n_runners)]
            deadline = time.monotonic() + HANG
            while not all(path.exists() for path in ready):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"W3 child never had all runners running: {proc.communicate()[1][-2000:]}"
                    )
                time.sleep(0.0002)  # polling files the child writes; not part of the measured interval
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=HANG * 2)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"W3 child failed ({proc.returncode}): {err[-2000:]}")
    result = json.loads(lines[-1])
    return {"outcome": result["outcome"], "latency_ms": (result["raised_at"] - sent) * 1e3}


def _w3_child(name: str, n_runners: int, directory: str) -> None:
    strategy = STRATEGIES[name].build(n_runners)
    algorithm = LifecycleAlgorithm(directory, n_runners, wait_for_stop=True)
    outcome = "returned (interrupt swallowed)"
    try:
        strategy.execute(algorithm, LifecycleRunner(directory), _store())
    except KeyboardInterrupt:
        outcome = "KeyboardInterrupt"
    except BaseException as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    raised_at = time.monotonic()
    print(json.dumps({"outcome": outcome, "raised_at": raised_at}), flush=True)


# -- the benchmark -----------------------------------------------------------------------------------------


def _summary(
    name: str, workload: str, n_runners: int, samples: list[float], n_rollouts: int, **extra: Any
) -> dict[str, Any]:
    median = statistics.median(samples)
    target = TARGETS.get(name, {}).get(workload)
    applies = target is not None and n_runners == 2 and (workload != "W1" or n_rollouts == 1000)
    op, bound = target if target is not None else ("", 0.0)
    meets = _meets(op, median, bound) if applies else None
    return {
        "strategy": name,
        "workload": workload,
        "n_runners": n_runners,
        "unit": UNITS[workload],
        "median": median,
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
        "n_rollouts": n_rollouts if workload == "W1" else None,
        "target": f"{op} {bound:g}" if applies else None,
        "meets_target": meets,
        **extra,
    }


def _meets(op: str, value: float, bound: float) -> bool:
    return value >= bound if op == ">=" else value <= bound


def apply_relative_targets(rows: list[dict[str, Any]]) -> None:
    """Judge ``RELATIVE_TARGETS`` against the baseline strategy's median from the same rows."""
    medians = {(r["strategy"], r["workload"], r["n_runners"]): r["median"] for r in rows}
    for row in rows:
        relative = RELATIVE_TARGETS.get(row["strategy"], {}).get(row["workload"])
        if relative is None or row["n_runners"] != 2 or row.get("n_rollouts") not in (None, 1000):
            continue
        op, factor, baseline = relative
        reference = medians.get((baseline, row["workload"], row["n_runners"]))
        if reference is None:
            continue  # the baseline was not measured in this run: nothing to judge against
        row["target"] = f"{op} {factor:g}x {baseline} ({reference * factor:,.0f})"
        row["ratio_to_baseline"] = row["median"] / reference
        row["meets_target"] = _meets(op, row["median"], reference * factor)


def run(
    strategies: Sequence[str] | None = None,
    quick: bool = False,
    runners: Sequence[int] = (1, 2, 4),
    n_rollouts: int = 1000,
    repeats: int | None = None,
    w1_repeats: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure every workload for each strategy and runner count; one dict per (strategy, n, workload).

    ``repeats`` overrides the number of runs per figure (default 3 with ``quick``, else 9);
    ``w1_repeats`` that of W1 alone (default: ``repeats``); ``progress`` hears of each runner count as
    it starts. One call measures every runner count against one Ray cluster (a process imports Ray once).
    """
    names = list(strategies or available(list(STRATEGIES))[0])
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {unknown[0]!r}; known: {', '.join(sorted(STRATEGIES))}")
    for name, why in available(names)[1].items():
        raise ValueError(f"cannot benchmark {name!r}: {why}")
    if repeats is None:
        repeats = 3 if quick else 9
    if w1_repeats is None:
        w1_repeats = repeats
    if repeats < 1 or w1_repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {min(repeats, w1_repeats)}")
    rows: list[dict[str, Any]] = []
    here = [name for name in names if name != "ray"] if len(names) > 1 else names
    specs = [STRATEGIES[name] for name in here]
    with _cluster_for(here) as settle:
        for n in runners:
            if progress is not None:
                progress(f"W1-W4 {', '.join(here)} with {n} runner{'s' if n > 1 else ''}")
            rows += _measure(specs, n, n_rollouts, repeats, w1_repeats, settle)
    if here != names:
        if progress is not None:
            progress(f"W1-W4 ray with {', '.join(map(str, runners))} runners, in a child process")
        rows += _ray_in_child(runners, n_rollouts, repeats, w1_repeats)
    apply_relative_targets(rows)
    return rows


def _ray_in_child(
    runners: Sequence[int], n_rollouts: int, repeats: int, w1_repeats: int
) -> list[dict[str, Any]]:
    """``ray``'s rows, measured by ``python -m bench.strategies`` in a child process (module docstring),
    exactly as a user runs it: the child starts its own cluster (or joins ``RAY_ADDRESS``'s). A child
    that overruns its bound is interrupted as a terminal's Ctrl+C would, so it stops its cluster, and
    killed only if that does not end it."""
    with tempfile.TemporaryDirectory(prefix="agl-bench-ray-") as directory:
        out = Path(directory, "ray.json")
        command = [
            sys.executable, "-m", "bench.strategies", "--strategy", "ray",
            "--runners", *map(str, runners), "--rollouts", str(n_rollouts),
            "--repeats", str(repeats), "--w1-repeats", str(w1_repeats), "--json", str(out),
        ]  # fmt: skip
        child = subprocess.Popen(command, cwd=_REPO, stdout=subprocess.DEVNULL)
        try:
            status = child.wait(_RAY_CHILD_SECONDS)
        except BaseException as stopped:  # the bound, or the user's Ctrl+C: the child stops its cluster
            if not isinstance(stopped, KeyboardInterrupt):
                # A terminal's Ctrl+C reached the child too (one process group): a second one would
                # hurry it past its cluster's stop.
                child.send_signal(signal.SIGINT)
            try:
                child.wait(_RAY_CHILD_STOP_SECONDS)
            finally:
                child.kill()
                child.wait()
            raise
        # Its exit status says whether ray met its absolute targets, which its rows say too: only a
        # child that wrote no rows has failed.
        if not out.exists():
            raise RuntimeError(f"measuring ray in a child process failed (exit status {status})")
        rows: list[dict[str, Any]] = json.loads(out.read_text())
        return rows


def available(names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The strategies of ``names`` that can run here, and why each other one cannot (its extra)."""
    from conformance.ray_session import ray_missing

    missing = {name: ray_missing() for name in names if name == "ray" and ray_missing()}
    return [name for name in names if name not in missing], missing


@contextlib.contextmanager
def _cluster_for(names: Sequence[str]) -> Iterator[Callable[[], object]]:
    """For ``ray``: a running cluster (``RAY_ADDRESS``'s, never stopped here; else one started for the
    block, on 127.0.0.1, and stopped at its end) that this process is connected to, and its environment
    (address, token) set for W3's children; nothing for the other strategies. Yields what to call before
    each W1 repeat: on a cluster started here, wait until its pool of prestarted workers is full again
    (module docstring); else nothing.

    Ray reads ``RAY_AUTH_MODE`` once, when it is first imported (its native config is cached then): the
    cluster's environment is set before Ray is imported, or this process would join with token
    authentication disabled and the cluster would refuse it (``InvalidAuthToken``).
    """
    settle: Callable[[], object] = _no_pool
    if "ray" not in names:
        yield settle
        return
    from conformance.ray_session import held_local_cluster

    with contextlib.ExitStack() as stack:
        if not os.environ.get("RAY_ADDRESS"):
            if "ray" in sys.modules:
                raise RuntimeError(
                    "Ray was imported before the benchmark's cluster was started: it would not see the "
                    "cluster's RAY_AUTH_MODE; import it after, or name a running cluster in RAY_ADDRESS"
                )
            # Its workers have the repository on their path already: the job keeps the default
            # runtime env, the one the cluster's prestarted workers have (ray_worker_pool).
            cluster, env = stack.enter_context(held_local_cluster(pythonpath=[str(_REPO)]))
            settle = functools.partial(cluster.await_full_pool, _POOL_SECONDS)
            saved = {key: os.environ.get(key) for key in env}
            os.environ.update(env)
            stack.callback(_restore, saved)
            runtime_env: dict[str, Any] = {}
        else:
            # The actors and their runner processes unpickle ``bench.bundles`` by name: the repository on
            # the path of a cluster's workers started elsewhere.
            path = os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))
            runtime_env = {"env_vars": {"PYTHONPATH": path}}
        import ray

        ray.init(
            address=os.environ["RAY_ADDRESS"],
            configure_logging=False,
            log_to_driver=False,
            runtime_env=runtime_env or None,
        )
        stack.callback(ray.shutdown)
        yield settle


def _no_pool() -> None:
    """Nothing to wait for before a W1 repeat: no cluster, or one started elsewhere."""


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _measure(
    specs: Sequence[BenchStrategy],
    n: int,
    n_rollouts: int,
    repeats: int,
    w1_repeats: int,
    settle: Callable[[], object] = _no_pool,
) -> list[dict[str, Any]]:
    """Every workload for each of ``specs`` with ``n`` runners; ``settle()`` before each W1 repeat."""
    rows: list[dict[str, Any]] = []
    for spec in specs:
        measure_w1(spec, n, min(n_rollouts, 100))  # warm-up: imports, first loop, allocator
    # W1 repeats go round the strategies in turn, so that a ratio between two of them compares runs
    # made minutes apart at most once each, not one strategy's whole series against another's.
    w1: dict[str, list[float]] = {spec.name: [] for spec in specs}
    for _ in range(w1_repeats):
        for spec in specs:
            settle()
            w1[spec.name].append(measure_w1(spec, n, n_rollouts))
    for spec in specs:
        w2, w4 = zip(*(measure_w2_w4(spec, n) for _ in range(repeats)), strict=True)
        w3_runs = [measure_w3(spec, n) for _ in range(repeats)]
        swallowed = [r["outcome"] for r in w3_runs if r["outcome"] != "KeyboardInterrupt"]
        w3 = [r["latency_ms"] for r in w3_runs if r["latency_ms"] is not None]
        rows.append(_summary(spec.name, "W1", n, w1[spec.name], n_rollouts))
        rows.append(_summary(spec.name, "W2", n, list(w2), n_rollouts))
        rows.append(
            _summary(spec.name, "W3", n, w3, n_rollouts, w3_outcomes=swallowed or ["KeyboardInterrupt"])
        )
        rows.append(_summary(spec.name, "W4", n, list(w4), n_rollouts))
        if swallowed:  # a swallowed interrupt fails W3 whatever the latency
            rows[-2]["meets_target"] = False
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table: one line per strategy and runner count, median [min-max] per workload."""
    header = f"{'strategy':<9}{'runners':>8}  " + "  ".join(
        f"{w + ' ' + UNITS[w]:>24}" for w in ("W1", "W2", "W3", "W4")
    )
    lines = [header, "-" * len(header)]
    keys = sorted({(r["strategy"], r["n_runners"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for strategy, n in keys:
        cells = []
        for workload in ("W1", "W2", "W3", "W4"):
            row = next(
                r for r in rows if (r["strategy"], r["n_runners"], r["workload"]) == (strategy, n, workload)
            )
            fmt = "{:,.0f}" if workload == "W1" else "{:.2f}"
            mark = {True: " ok", False: " !!", None: "   "}[row["meets_target"]]
            text = f"{fmt.format(row['median'])} [{fmt.format(row['min'])}-{fmt.format(row['max'])}]{mark}"
            cells.append(f"{text:>24}")
        lines.append(f"{strategy:<9}{n:>8}  " + "  ".join(cells))
    lines.append("median [min-max]; ok/!! = target met/missed (2 runners, N=1000):")
    for strategy in sorted({r["strategy"] for r in rows}):
        absolute = [f"{w} {op} {bound:g} {UNITS[w]}" for w, (op, bound) in TARGETS.get(strategy, {}).items()]
        relative = [
            f"{w} {op} {factor:g}x {base}"
            for w, (op, factor, base) in RELATIVE_TARGETS.get(strategy, {}).items()
        ]
        lines.append(f"  {strategy}: {', '.join(sorted(absolute + relative)) or 'none'}")
    for row in rows:
        if row["workload"] == "W3" and row.get("w3_outcomes") != ["KeyboardInterrupt"]:
            lines.append(
                f"W3 {row['strategy']} n={row['n_runners']}: interrupt NOT re-raised: {row['w3_outcomes']}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.strategies", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 9")
    parser.add_argument("--strategy", action="append", choices=sorted(STRATEGIES), help="repeatable")
    parser.add_argument("--runners", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rollouts", type=int, default=1000, help="N for W1")
    parser.add_argument("--repeats", type=int, help="runs per figure (default 3 with --quick, else 9)")
    parser.add_argument("--w1-repeats", type=int, help="runs per W1 figure (default: --repeats)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--w3-child", nargs=3, metavar=("STRATEGY", "N", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.w3_child:
        _w3_child(args.w3_child[0], int(args.w3_child[1]), args.w3_child[2])
        return 0
    rows = run(
        args.strategy,
        quick=args.quick,
        runners=args.runners,
        n_rollouts=args.rollouts,
        repeats=args.repeats,
        w1_repeats=args.w1_repeats,
    )
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["meets_target"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
