"""Run a Python script of a test's own in a fresh interpreter, with this checkout importable.

A fresh interpreter is the way to test what depends on the whole process (its thread count, say): pytest's
own process has threads and state of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["run_script"]

_REPO = Path(__file__).resolve().parents[2]
_HANG = 60.0  # a hang bound for a loaded machine, not a target


def run_script(tmp_path: Path, source: str, *args: str) -> Any:
    """Write ``source`` to a file under ``tmp_path``, run it with ``args``, and return the JSON value its
    last line of output holds; a script that fails fails the test with its stderr."""
    script = tmp_path / "script.py"
    script.write_text(source)
    path = os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=_HANG,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])
