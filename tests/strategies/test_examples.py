"""The example strategies keep K5 at its hardest moment: a second Ctrl+C in the middle of their teardown.

The kit's K5 sends its second SIGINT once the strategy reacts to the first, so where it lands in the
teardown is chance; these tests pin it to the one call a stray ``KeyboardInterrupt`` would cut short.
SIGINT must never reach the pytest process, so each scenario runs in ``examples_child.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CHILD = Path(__file__).with_name("examples_child.py")
ROOT = Path(__file__).resolve().parents[2]


def run_child(which: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(CHILD), which],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        },
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "which",
    [
        pytest.param("single-loop", id="single_loop-while-the-loop-closes"),
        pytest.param("thread-pool", id="thread_pool-while-the-pool-joins"),
    ],
)
def test_K5_a_second_sigint_in_the_teardown_leaves_nothing_behind(which: str) -> None:
    result = run_child(which)
    assert result["second_sent"], result
    assert result["raised"] == "KeyboardInterrupt", result
    assert result["loops_open"] == 0, result
    assert result["threads_left"] == [], result
    assert result["handler_restored"] and result["wakeup_fd_restored"], result  # R7


def test_K3_a_sigint_while_the_main_thread_holds_the_event_lock_is_not_a_deadlock() -> None:
    # The SIGINT handler runs on the main thread between two bytecodes: here, while that thread holds the
    # stop event's lock. A handler that sets the event itself takes that lock again and never returns.
    result = run_child("thread-pool-event-lock")
    assert result["sent"], result
    assert result["raised"] == "KeyboardInterrupt", result
    assert result["threads_left"] == [], result
    assert result["handler_restored"], result
