"""What the two broken zoos share: a specimen (one module, one defect, the contract it breaks) and how a
package of them is listed.

``strategies/broken`` holds broken strategies, ``strategies/broken_stores`` broken stores. Every module
of either declares ``BREAKS = "<contract ID>"`` (and ``KIT_GAP = "why"`` while the kit misses it) and
defines one class; its docstring's first paragraph is the defect. ``ALSO_BREAKS = ("T9",)`` names
contracts that must catch the same defect too (a broken store whose defect shows in any history of its
clients is caught by its own contract and by T9 history). ``INTERLEAVING_ONLY = True`` marks a defect
that shows only in a rare interleaving of the strategy's own threads (P1 finds it with its scheduling
perturbation; ``python -m conformance.selfcheck --interleavings`` runs each such specimen five times).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable
from types import ModuleType

__all__ = ["Specimen", "collect"]


@dataclasses.dataclass(frozen=True)
class Specimen:
    """One broken strategy or store: its module name, the dotted path of its class, the contract it
    breaks, and what kind of thing it is (``threads`` or ``processes`` for a strategy, ``store``)."""

    name: str
    spec: str
    breaks: str
    kind: str
    defect: str
    kit_gap: str = ""  # why the kit misses this defect today (module-level ``KIT_GAP``), else ""
    also_breaks: tuple[str, ...] = ()  # further contracts that must catch it (module-level ``ALSO_BREAKS``)
    interleaving_only: bool = False  # shows only in a rare interleaving (module-level ``INTERLEAVING_ONLY``)


def _the_class(module: ModuleType, is_specimen: Callable[[type], bool]) -> type:
    """The one class the module defines for which ``is_specimen`` holds."""
    found = [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and value.__module__ == module.__name__ and is_specimen(value)
    ]
    if len(found) != 1:
        names = [cls.__name__ for cls in found]
        raise ValueError(f"{module.__name__} must define exactly one specimen class, found {names}")
    return found[0]


def collect(
    package: str,
    path: Iterable[str],
    is_specimen: Callable[[type], bool],
    kind_of: Callable[[type], str],
) -> list[Specimen]:
    """Every module of ``package`` (its ``__path__`` is ``path``) that declares ``BREAKS``, in name order."""
    found: list[Specimen] = []
    for info in sorted(pkgutil.iter_modules(path), key=lambda info: info.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        breaks = getattr(module, "BREAKS", None)
        if not isinstance(breaks, str):
            continue
        cls = _the_class(module, is_specimen)
        doc = inspect.getdoc(module) or ""
        found.append(
            Specimen(
                name=info.name,
                spec=f"{cls.__module__}.{cls.__qualname__}",
                breaks=breaks,
                kind=kind_of(cls),
                defect=" ".join(doc.split("\n\n", 1)[0].split()),
                kit_gap=str(getattr(module, "KIT_GAP", "")),
                also_breaks=tuple(getattr(module, "ALSO_BREAKS", ())),
                interleaving_only=getattr(module, "INTERLEAVING_ONLY", False) is True,
            )
        )
    return found
