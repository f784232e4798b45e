"""One local Ray cluster held for several kit runs: Ray scenarios join it instead of starting their own.

Starting a Ray cluster costs tens of seconds on a small machine; a Ray strategy's scenarios (each in a
fresh process) join one instead, as the callers of such a strategy do: ``RAY_ADDRESS`` names it, and the
strategy's ``caller_connection`` hook (``conformance.caller_connection``) connects each scenario process
to it before ``execute()``. ``held_cluster()`` starts it in a holder process (``python -m
conformance.ray_session``, its own session), with a token of its own (``RAY_AUTH_TOKEN``, never the
user's ``~/.ray/auth_token``) and the current directory on the workers' ``PYTHONPATH`` (so actors import
what the scenario's strategy is made of), and yields the environment a kit run needs. The holder stops the
cluster when its stdin closes: when the block ends, or when the process that started it is gone.

From a shell (CI): ``python -m conformance.ray_session COMMAND...`` runs one command against such a
cluster (``python -m conformance.ray_session python -m conformance ray -n 2``) and exits with its status.

Ray is imported only in the holder process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil

__all__ = ["RAY_MISSING", "held_cluster", "main", "ray_missing"]

RAY_MISSING = "Ray is not installed: pip install 'agentlightning-execution[ray]'"
"""Why a Ray row cannot run without the extra."""

_HOLD = "--hold"  # the holder process's own argument
_START_SECONDS = 180.0  # a loaded 2-core machine took over 20 s to start one
_STOP_SECONDS = 60.0


def ray_missing() -> str:
    """``RAY_MISSING`` when Ray cannot be imported here, else ``""``."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except ImportError:
        found = False
    return "" if found else RAY_MISSING


@contextlib.contextmanager
def held_cluster(num_cpus: int = 2) -> Iterator[dict[str, str]]:
    """A local Ray cluster for the block: yields ``RAY_ADDRESS``, ``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN``
    (and ``PYTHONPATH``) for the processes that are to join it; stopped, and waited for, at the end."""
    path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "PYTHONPATH": path}
    holder = subprocess.Popen(
        [sys.executable, "-m", "conformance.ray_session", _HOLD, str(num_cpus)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
        start_new_session=True,
    )
    family: list[psutil.Process] = []
    try:
        address = _read_address(holder)
        with contextlib.suppress(psutil.Error):
            family = psutil.Process(holder.pid).children(recursive=True)
        yield {**env, "RAY_ADDRESS": address}
    finally:
        _stop(holder, family)


def _read_address(holder: subprocess.Popen[bytes]) -> str:
    assert holder.stdout is not None
    deadline = time.monotonic() + _START_SECONDS
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the local Ray cluster did not start within {_START_SECONDS:g} s")
        ready, _, _ = select.select([holder.stdout], [], [], left)
        if ready:
            chunk = os.read(holder.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(
                    f"the Ray cluster holder exited before the cluster started ({holder.wait()})"
                )
            line += chunk
    return line.decode().strip()


def _stop(holder: subprocess.Popen[bytes], family: list[psutil.Process]) -> None:
    """Close the holder's stdin (it shuts the cluster down), wait, then kill what is left of its family."""
    with contextlib.suppress(OSError):
        assert holder.stdin is not None
        holder.stdin.close()
    try:
        holder.wait(_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        holder.kill()
        holder.wait()
    for process in family:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(family, timeout=10.0)


def _hold(num_cpus: int) -> int:
    """The holder process: start the cluster, print its address, stop it when stdin closes."""
    import ray

    context = ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    print(context.address_info["gcs_address"], flush=True)
    try:
        sys.stdin.buffer.read()
    finally:
        ray.shutdown()
    return 0


def main(argv: list[str]) -> int:
    """``COMMAND...``: run it against a held cluster, return its exit status (``--hold N``: the holder)."""
    if argv[:1] == [_HOLD]:
        return _hold(int(argv[1]))
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
