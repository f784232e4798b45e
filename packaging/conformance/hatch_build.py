"""Build hooks of the agentlightning-conformance distribution.

The package lives at the repository root (``../../conformance``); an sdist carries its own copy next to
this file. Both hooks take whichever is present, so the wheel builds from the checkout and from the sdist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from hatchling.metadata.plugin.interface import MetadataHookInterface

__all__ = ["KitBuildHook", "KitMetadataHook"]


def _kit_dir(root: str) -> Path:
    """The conformance package: the sdist's copy, else the repository root's."""
    here = Path(root)
    for candidate in (here / "conformance", here.parent.parent / "conformance"):
        if (candidate / "__init__.py").is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"conformance/ found neither in {here} nor two levels above it")


class KitMetadataHook(MetadataHookInterface):
    """The version is conformance.__version__."""

    def update(self, metadata: dict[str, Any]) -> None:
        text = (_kit_dir(self.root) / "__init__.py").read_text(encoding="utf-8")
        found = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
        if found is None:
            raise ValueError('conformance/__init__.py has no __version__ = "..." line')
        metadata["version"] = found.group(1)


class KitBuildHook(BuildHookInterface):
    """Ship conformance/ (without caches) as the distribution's only package."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name == "wheel" and version == "editable":
            return  # dev-mode-dirs puts the repository root on sys.path
        kit = _kit_dir(self.root)
        for path in sorted(kit.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                build_data["force_include"][str(path)] = f"conformance/{path.relative_to(kit).as_posix()}"
