"""The broken zoo: deliberately broken strategies, one realistic defect each, to prove the kit catches them.

Every module ``<id>_<defect>.py`` defines one strategy class and a module-level ``BREAKS = "<contract
ID>"``; its docstring says what the defect is and why a user would write it. A module may also say
``KIT_GAP = "why"`` while the kit misses its defect: the selfcheck reports it as a known gap, and the
meta-tests skip it. Run one through the gate to watch it fail for the right contract::

    pytest --strategy=strategies.broken.l1_worker_ids_from_one.WorkerIdsFromOneStrategy -k L1-

``specimens()`` lists them all (for ``python -m conformance.selfcheck`` and the meta-tests).
"""

from __future__ import annotations

from strategies.zoo import Specimen, collect

__all__ = ["Specimen", "specimens"]


def _is_strategy(cls: type) -> bool:
    return callable(getattr(cls, "execute", None))


def _kind(cls: type) -> str:
    manifest = dict(getattr(cls, "capability_manifest", {}) or {})
    return "processes" if manifest.get("uses_processes", True) else "threads"


def specimens() -> list[Specimen]:
    """Every module of this package that declares ``BREAKS``, in name order."""
    return collect(__name__, __path__, _is_strategy, _kind)
