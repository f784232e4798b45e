"""The store stands on its own: no module under ``agentlightning/store/`` imports the execution package.

Read, not imported (``ast``): an import inside a function or under ``TYPE_CHECKING`` counts as well, and
a module behind an optional extra is checked like the rest.
"""

from __future__ import annotations

import ast
from pathlib import Path

import agentlightning.store as store_package

_FORBIDDEN = "agentlightning.execution"


def _imported(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` in ``tree`` names, with its line (relative
    imports resolved against ``package``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found += [(node.lineno, module)] + [
                (node.lineno, f"{module}.{alias.name}") for alias in node.names
            ]
    return found


def _offenders(root: Path, package: str) -> list[str]:
    offenders = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).with_suffix("")
        parts = [package, *relative.parts[:-1]]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        lines = {
            line: module
            for line, module in reversed(_imported(tree, ".".join(parts)))
            if module == _FORBIDDEN or module.startswith(_FORBIDDEN + ".")
        }
        offenders += [
            f"{path.relative_to(root.parent)}:{line} imports {lines[line]}" for line in sorted(lines)
        ]
    return offenders


def test_no_store_module_imports_the_execution_package() -> None:
    root = Path(store_package.__path__[0])
    assert sorted(root.rglob("*.py")), root  # the walk found the package
    assert _offenders(root, "agentlightning.store") == []


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    package = tmp_path / "store"
    (package / "http").mkdir(parents=True)
    (package / "a.py").write_text("import agentlightning.execution.events\n")
    (package / "b.py").write_text("def f():\n    from agentlightning.execution import threads\n")
    (package / "http" / "c.py").write_text("from ...execution.events import wait_async\n")
    (package / "http" / "d.py").write_text("from agentlightning import execution\n")
    (package / "ok.py").write_text(
        "from agentlightning.store.base import LightningStore\nimport executionist\n"
    )
    assert [line.split(" imports ")[0] for line in _offenders(package, "agentlightning.store")] == [
        "store/a.py:1",
        "store/b.py:2",
        "store/http/c.py:1",
        "store/http/d.py:1",
    ]
