"""Generated documentation stays in step with the code it is generated from."""

from __future__ import annotations

from pathlib import Path

from conformance.catalogue import catalogue_markdown

REPO = Path(__file__).resolve().parents[2]


def test_contract_reference_matches_the_catalogue() -> None:
    committed = (REPO / "docs" / "contracts.md").read_text(encoding="utf-8")
    assert committed == catalogue_markdown(), (
        "docs/contracts.md is stale: regenerate it with "
        "`python -m conformance --catalogue-markdown > docs/contracts.md`"
    )


def test_readme_names_both_commands_for_ci() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "<!-- main-command -->" in readme
    assert "<!-- test-command -->" in readme
