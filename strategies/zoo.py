"""What the two broken zoos share: a specimen (one module, one defect, the contract it breaks) and how a
package of them is listed.

``strategies/broken`` holds broken strategies, ``strategies/broken_stores`` broken stores. Every module
of either declares ``BREAKS = "<contract ID>"`` (and ``KIT_GAP = "why"`` while the kit misses it) and
defines one class; its docstring's first paragraph is the defect. ``ALSO_BREAKS = ("T9",)`` names
contracts that must catch the same defect too (a broken store whose defect shows in any history of its
clients is caught by its own contract and by T9 history). ``INTERLEAVING_ONLY = True`` marks a defect
that shows only in a rare interleaving of the strategy's own threads (P1 finds it with its scheduling
perturbation; ``python -m conformance.selfcheck --interleavings`` runs each such specimen five times).
``NEEDS = "ray"`` names the optional extra a specimen is built on: without it installed the module cannot
be imported, and the specimen is still listed (read from its source), ``unavailable`` saying why, so the
selfcheck reports it as skipped with the reason instead of dropping it.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import inspect
import os
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
    needs: str = ""  # the optional extra it is built on (module-level ``NEEDS``), else ""
    unavailable: str = ""  # why it cannot be imported here (its extra is missing), else ""


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
        try:
            module = importlib.import_module(f"{package}.{info.name}")
        except ImportError as exc:
            missing = _unavailable(package, info.name, path, exc)
            if missing is None:
                raise
            found.append(missing)
            continue
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
                needs=str(getattr(module, "NEEDS", "")),
            )
        )
    return found


def _unavailable(package: str, name: str, path: Iterable[str], error: ImportError) -> Specimen | None:
    """The specimen ``name`` read from its source, when it declares ``NEEDS`` and could not be imported
    (its extra is missing); ``None`` for any other module, whose import error is a plain error."""
    source = next(
        (os.path.join(d, f"{name}.py") for d in path if os.path.exists(os.path.join(d, f"{name}.py"))), ""
    )
    if not source:
        return None
    with open(source, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), source)
    values: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(ValueError):
                values[node.targets[0].id] = ast.literal_eval(node.value)
    classes = [
        node.name for node in tree.body if isinstance(node, ast.ClassDef) and not node.name.startswith("_")
    ]
    breaks, needs = values.get("BREAKS"), values.get("NEEDS")
    if not isinstance(breaks, str) or not isinstance(needs, str) or len(classes) != 1:
        return None
    doc = ast.get_docstring(tree) or ""
    return Specimen(
        name=name,
        spec=f"{package}.{name}.{classes[0]}",
        breaks=breaks,
        kind="unavailable",
        defect=" ".join(doc.split("\n\n", 1)[0].split()),
        kit_gap=str(values.get("KIT_GAP", "")),
        also_breaks=tuple(values.get("ALSO_BREAKS", ())),  # type: ignore[arg-type]
        interleaving_only=values.get("INTERLEAVING_ONLY") is True,
        needs=needs,
        unavailable=f"needs the extra {needs!r}: pip install 'agentlightning-execution[{needs}]' ({error})",
    )
