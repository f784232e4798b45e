"""The broken zoo: deliberately broken strategies, one realistic defect each, to prove the kit catches them.

Every module ``<id>_<defect>.py`` defines one strategy class and a module-level ``BREAKS = "<contract
ID>"``; its docstring says what the defect is and why a user would write it. A module may also say
``KIT_GAP = "why"`` while the kit misses its defect: the selfcheck reports it as a known gap, and the
meta-tests skip it. Run one through the gate to watch it fail for the right contract::

    pytest --strategy=strategies.broken.l1_worker_ids_from_one.WorkerIdsFromOneStrategy -k L1-

``specimens()`` lists them all (for ``python -m conformance.selfcheck`` and the meta-tests).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

__all__ = ["Specimen", "specimens"]


@dataclasses.dataclass(frozen=True)
class Specimen:
    """One broken strategy: its module name, the dotted path of its class, the contract it breaks."""

    name: str
    spec: str
    breaks: str
    uses_processes: bool
    defect: str
    kit_gap: str = ""  # why the kit misses this defect today (module-level ``KIT_GAP``), else ""

    @property
    def kind(self) -> str:
        return "processes" if self.uses_processes else "threads"


def _strategy_class(module: object) -> type:
    """The one strategy class the module defines (a class of its own with an ``execute`` method)."""
    name = getattr(module, "__name__", "?")
    found = [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and value.__module__ == name and callable(getattr(value, "execute", None))
    ]
    if len(found) != 1:
        names = [cls.__name__ for cls in found]
        raise ValueError(f"{name} must define exactly one strategy class, found {names}")
    return found[0]


def specimens() -> list[Specimen]:
    """Every module of this package that declares ``BREAKS``, in name order."""
    found: list[Specimen] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        breaks = getattr(module, "BREAKS", None)
        if not isinstance(breaks, str):
            continue
        cls = _strategy_class(module)
        manifest = dict(getattr(cls, "capability_manifest", {}) or {})
        doc = inspect.getdoc(module) or ""
        found.append(
            Specimen(
                name=info.name,
                spec=f"{cls.__module__}.{cls.__qualname__}",
                breaks=breaks,
                uses_processes=bool(manifest.get("uses_processes", True)),
                defect=" ".join(doc.split("\n\n", 1)[0].split()),
                kit_gap=str(getattr(module, "KIT_GAP", "")),
            )
        )
    return found
