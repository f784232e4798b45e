"""Shared set-up of the kit's own tests: pytest's public ``pytester`` fixture, for runs of the plugin."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # ``pytest_plugins`` in a non-root conftest is refused by pytest; registering the plugin here (the hook
    # is historic, so it still runs for this late conftest) gives the same fixture in every invocation.
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kit_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A ``pytester`` project with the plugin's test strategies (``plugin_strategies``) and one own test.

    The kit is put on ``PYTHONPATH`` so the subprocess imports it from this checkout whatever the state
    of the installed copy.
    """
    existing = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), existing])))
    source = (Path(__file__).parent / "plugin_strategies.py").read_text(encoding="utf-8")
    pytester.makepyfile(
        plugin_strategies=source, test_own="def test_own_test_still_runs():\n    assert True\n"
    )
    return pytester
