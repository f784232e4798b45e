"""calc_x on three hosts: the algorithm on one, runners on two, and one runner host lost mid-run.

The hosts are network namespaces made on this machine (``conformance.hosts.NamespaceHosts``: root
and iproute2's ``ip`` needed; nothing is routed outside the machine, and everything is removed at the
end). Host 0 runs ``train_calc_agent.py`` with ``cs`` role ``algorithm`` serving the store on its
address; hosts 1 and 2 run it with role ``runner`` against that address, with the run's token. Once
``--kill-at`` of the rollouts are done and a runner of host 2 has claimed one (so that host 2 holds
work when it dies, however slowly its processes started; a ``--host-2-think-seconds`` longer than the
run makes sure it still holds it then), every process on host 2 is SIGKILLed (its link cut first with
``--silent``). ``cs`` (``on_host_loss="carry-on"``) gives up host 2's attempts after its
``host_loss_timeout``, the rollouts' retry policy requeues them, host 1 finishes them, and the
algorithm's summary accounts for every rollout::

    sudo python examples/calc_x/three_hosts.py --tasks 400

Exit status 0 when training completed with every rollout succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from conformance.hosts import HostProcess, NamespaceHosts, probe_namespaces

__all__ = ["main"]

_SCRIPT = Path(__file__).with_name("train_calc_agent.py")
_PROGRESS = re.compile(rb"(\d+)/(\d+) \[")
_LOOK = 0.05  # seconds between looks at the algorithm's progress


def _progress(process: HostProcess) -> int:
    """Rollouts done, as the algorithm's progress bar last said (0 before the first update)."""
    found = _PROGRESS.findall(Path(process.stderr_path).read_bytes())
    return int(found[-1][0]) if found else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--runners-per-host", type=int, default=2)
    parser.add_argument("--think-seconds", type=float, default=0.02, help="each problem's latency")
    parser.add_argument(
        "--host-2-think-seconds",
        type=float,
        default=None,
        help="host 2's latency per problem (default: --think-seconds); one longer than the run makes "
        "every runner of host 2 hold its problem when the host dies, so the loss always costs work in flight",
    )
    parser.add_argument("--kill-at", type=float, default=0.3, help="share of rollouts done when host 2 dies")
    parser.add_argument("--silent", action="store_true", help="cut host 2's link before killing it")
    parser.add_argument("--connect-timeout", type=float, default=2.0, help="cs connect_timeout (seconds)")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    if args.tasks < 1 or not 0.0 < args.kill_at < 1.0:
        parser.error(f"need --tasks >= 1 and 0 < --kill-at < 1; got {args.tasks}, {args.kill_at}")
    if args.host_2_think_seconds is not None and args.host_2_think_seconds < 0:
        parser.error(f"--host-2-think-seconds must be >= 0, got {args.host_2_think_seconds}")
    availability = probe_namespaces()
    if not availability.available:
        print(f"cannot make the hosts: {availability.reason}", file=sys.stderr)
        return 2
    token = secrets.token_hex(16)
    env = {**os.environ, "AGL_SERVER_TOKEN": token, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    deadline = time.monotonic() + args.timeout
    with NamespaceHosts(3) as hosts:
        port = hosts.free_port(0)
        common = [
            sys.executable, str(_SCRIPT), "--strategy", "cs", "--tasks", str(args.tasks),
            "--n-runners", str(args.runners_per_host), "--think-seconds", str(args.think_seconds),
            "--strategy-option", f"server_port={port}",
            "--strategy-option", f"connect_timeout={args.connect_timeout}",
        ]  # fmt: skip
        algorithm = hosts.run(
            0,
            [*common, "--strategy-option", "role=algorithm",
             "--strategy-option", f"server_host={hosts.address(0)}",
             "--strategy-option", "on_host_loss=carry-on"],
            env=env,
        )  # fmt: skip
        hosts.wait_reachable(1, 0, port, within=60.0)
        runner_argv = [
            *common, "--no-progress", "--strategy-option", "role=runner",
            "--strategy-option", f"server_host={hosts.address(0)}",
        ]  # fmt: skip
        mark = Path(tempfile.mkdtemp(prefix="agl-calc-")) / "host-2-claimed"
        # The runner script takes the last --think-seconds given.
        host_2_think = (
            [] if args.host_2_think_seconds is None else ["--think-seconds", str(args.host_2_think_seconds)]
        )
        runners = {
            1: hosts.run(1, runner_argv, env=env),
            2: hosts.run(2, [*runner_argv, *host_2_think, "--claimed-mark", str(mark)], env=env),
        }
        target = max(1, int(args.tasks * args.kill_at))
        try:
            while (
                (_progress(algorithm) < target or not mark.exists())
                and algorithm.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(_LOOK)
            done_at_loss = _progress(algorithm)
            if args.silent:
                hosts.cut(2)
            killed = hosts.kill_host(2)
        finally:
            # Only once host 2 is gone: its runners touch the mark at every claim, and one that found it
            # removed would raise, which stops the whole run (as any runner's error does).
            shutil.rmtree(mark.parent, ignore_errors=True)
        lost_at = time.monotonic()
        print(
            f"host 2 ({hosts.address(2)}) {'cut off and ' if args.silent else ''}killed at "
            f"{done_at_loss}/{args.tasks} rollouts: {len(killed)} processes",
            flush=True,
        )
        try:
            status = algorithm.wait(max(1.0, deadline - time.monotonic()))
            runner_status = runners[1].wait(max(1.0, deadline - time.monotonic()))
        except TimeoutError as error:
            print(f"the run did not finish within --timeout {args.timeout:g} s: {error}", file=sys.stderr)
            return 1
        took = time.monotonic() - lost_at
        print(
            f"algorithm host 0 exited with {status} {took:.1f} s after the loss; "
            f"runner host 1 with {runner_status}"
        )
        output = algorithm.stdout()
        print(output, end="")
        if status != 0:
            print(algorithm.stderr()[-3000:], file=sys.stderr)
    complete = f"rollouts: {args.tasks} enqueued, {args.tasks} succeeded" in output
    return 0 if status == 0 and complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
