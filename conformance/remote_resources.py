"""Resources a strategy holds outside the scenario's process tree, reported to the kit for R2 and R6.

The kit's snapshots see what the scenario process and its children hold. A cluster strategy's runners
(Ray actors, Dask workers, Kubernetes Jobs) are not its children, so a leaked one would be invisible.
Such a strategy reports them through one public method on its instance::

    def remote_resources(self) -> Iterable[str]:
        '''One line per remote resource this instance created that is still alive (empty: none).'''

The kit calls it after ``execute()`` returns or raises, in the same polled settle window as its own
snapshots (so a resource that is still being torn down is not a leak), and reports every line left at
the end of the window as a leaked process ("remote: <line>"), exactly as a leaked child process: R2
fails naming it, and R6 counts it across repeats. A probe that raises is reported the same way (a
probe that cannot look must not pass silently). See docs/running-on-ray.md for the Ray strategy's
probe, and docs/writing-a-strategy.md for the rest of the strategy author's guide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["PROBE_METHOD", "RemoteProbe", "probe_of", "remote_leftovers"]

PROBE_METHOD = "remote_resources"
"""The name of the strategy method the kit calls (see the module docstring)."""

RemoteProbe = Callable[[], Iterable[str]]


def probe_of(strategy: Any) -> RemoteProbe | None:
    """The strategy's remote-resource probe, or ``None`` when it declares none."""
    probe = getattr(strategy, PROBE_METHOD, None)
    return probe if callable(probe) else None


def remote_leftovers(probe: RemoteProbe | None) -> list[str]:
    """What ``probe`` reports alive now, each line prefixed ``remote:``; a failing probe is one entry."""
    if probe is None:
        return []
    try:
        return [f"remote: {line}" for line in probe()]
    except Exception as exc:
        return [f"remote: {PROBE_METHOD}() failed, so nothing the strategy holds could be checked: {exc!r}"]
