"""``agentlightning.event_loops``: the loop of the runtime's own worker processes.

uvloop where it is installed (a dependency on Linux), asyncio's otherwise or when ``AGL_EVENT_LOOP``
says so; never a global policy, so the caller's loop and policy are untouched. A uvloop loop is only ever
made in a child process here: libuv keeps a process-wide pipe open once it made one (the module
docstring), which this test process must not get.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys

import pytest

from agentlightning import event_loops
from agentlightning.env import AGL_EVENT_LOOP

_HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None

_PROBE = """
import asyncio
from agentlightning import event_loops
from agentlightning.env import AGL_EVENT_LOOP

async def main():
    return type(asyncio.get_running_loop()).__module__.split(".")[0]

policy = asyncio.get_event_loop_policy()
print(event_loops.run(main(), event_loops.new_event_loop))
print(asyncio.get_event_loop_policy() is policy and asyncio._get_running_loop() is None)
"""


def _probe(choice: str | None) -> list[str]:
    """What loop ``run(..., new_event_loop)`` ran on in a fresh process, and whether it left the
    process's policy and running loop as they were."""
    env = {key: value for key, value in os.environ.items() if key != AGL_EVENT_LOOP.name}
    if choice is not None:
        env[AGL_EVENT_LOOP.name] = choice
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_uvloop_is_the_default_where_it_is_installed() -> None:
    assert _probe(None) == ["uvloop" if _HAS_UVLOOP else "asyncio", "True"]


def test_the_environment_chooses_asyncio() -> None:
    assert _probe("asyncio") == ["asyncio", "True"]


def test_a_bad_choice_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AGL_EVENT_LOOP.name, "tokio")
    with pytest.raises(ValueError, match=r"AGL_EVENT_LOOP='tokio'"):
        event_loops.new_event_loop()


def test_run_cancels_what_main_left_behind() -> None:
    cancelled = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> int:
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)
        return 7

    assert event_loops.run(main(), asyncio.new_event_loop) == 7
    assert cancelled == [True]
