"""Generated documentation stays in step with the code it is generated from (docs/contracts.md: see
tests/conformance/test_catalogue.py, which proves it is what the catalogue renders)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_names_both_commands_for_ci() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "<!-- main-command -->" in readme
    assert "<!-- test-command -->" in readme


def test_the_ci_workflow_certifies_and_verifies() -> None:
    import pytest

    yaml = pytest.importorskip("yaml", reason="PyYAML reads the workflow file")
    workflow = yaml.safe_load((REPO / "docs" / "ci" / "conformance.yml").read_text(encoding="utf-8"))
    steps = [step.get("run", "") for step in workflow["jobs"]["certify"]["steps"]]
    assert any("--conformance-profile=certify" in s and "--conformance-certificate=" in s for s in steps)
    assert any(s.startswith("python -m conformance verify conformance-certificate.json") for s in steps)
    guide = (REPO / "docs" / "gating-in-ci.md").read_text(encoding="utf-8")
    for profile in ("quick", "ci", "thorough", "certify"):
        assert f"| `{profile}`" in guide
