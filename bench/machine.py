"""The machine a benchmark ran on: CPU model, cores, memory, Python, OS and the load average.

Figures from a shared 2-core machine mean little without this; the load average is sampled at the start
and at the end of a run so a reader can tell a quiet run from a busy one.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import psutil

__all__ = ["describe", "load_average"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> tuple[float, float, float] | None:
    """1, 5 and 15-minute load averages, or None where the OS has none."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def describe() -> dict[str, Any]:
    """Static facts about this machine and interpreter (the load average is sampled separately)."""
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": psutil.virtual_memory().total / 2**30,
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "platform": platform.platform(),
    }
