"""The package's public surface is exactly what ``__all__`` says, and every name in it resolves lazily."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import agentlightning

_PUBLIC = {
    "__version__",
    "AlgorithmBundle",
    "ExecutionEvent",
    "ExecutionStrategy",
    "ExecutionStrategyRegistry",
    "InMemoryLightningStore",
    "InvalidValueError",
    "LightningStore",
    "MultiprocessingEvent",
    "RunnerBundle",
    "StoreChannelError",
    "StoreServerError",
    "StoreServerUnreachable",
    "ThreadedLightningStore",
    "ThreadingEvent",
    "Trainer",
    "WorkerDied",
    "build_component",
    "wait_async",
}


def test_all_is_exactly_the_public_surface() -> None:
    assert set(agentlightning.__all__) == _PUBLIC
    assert len(agentlightning.__all__) == len(_PUBLIC), "a name is listed twice"


def test_all_and_the_lazy_export_table_name_the_same_things() -> None:
    """A name added to one but not the other would be listed yet unimportable, or importable unlisted."""
    assert set(agentlightning.__all__) == set(agentlightning._EXPORTS) | {"__version__"}


def test_every_public_name_resolves_to_its_defining_object() -> None:
    for name in agentlightning.__all__:
        value = getattr(agentlightning, name)
        if name != "__version__":
            assert getattr(value, "__name__", name) == name, name


def test_unknown_name_is_an_attribute_error_naming_it() -> None:
    try:
        agentlightning.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("an unknown attribute resolved")


def test_importing_the_package_imports_no_runtime_module() -> None:
    code = (
        "import sys, agentlightning\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('agentlightning.'))\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_readme_points_only_inside_the_repository() -> None:
    readme = Path(__file__).resolve().parents[2] / "README.md"
    assert "../" not in readme.read_text(encoding="utf-8")
