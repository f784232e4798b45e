"""The placement declaration of section D: ``runs_on_many_hosts`` and ``host_sides`` in the manifest.

Validation names the offending path and value; resolution fills the placeholders (a bare ``{port}``
stays an int); the plan reports D as n/a only for ``runs_on_many_hosts=False``; and the declaration
that docs/multi-host-strategies.md gives for ``cs`` really places its two sides on two test hosts.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.capabilities import CapabilityError, validate_manifest
from conformance.catalogue import CATALOGUE
from conformance.hosts import NamespaceHosts, probe_namespaces
from conformance.journal import read_journal
from conformance.placement import (
    PLACEHOLDERS,
    PlacementValues,
    require_host_sides,
    resolve_side,
    validate_host_sides,
)
from conformance.plan import _applicability

HANG = 10.0
SIDE = Path(__file__).with_name("host_side.py")

# The declaration docs/multi-host-strategies.md gives for cs (kept in step with the page).
CS_HOST_SIDES: dict[str, Any] = {
    "algorithm": {
        "options": {"role": "algorithm", "server_host": "{address}", "server_port": "{port}"},
        "env": {"AGL_SERVER_TOKEN": "{token}"},
    },
    "runner": {
        "options": {"role": "runner", "server_host": "{algorithm_address}", "server_port": "{port}"},
        "env": {"AGL_SERVER_TOKEN": "{token}"},
    },
}

CS_ENV = {"AGL_SERVER_TOKEN": "Bearer {token}"}
VALUES = PlacementValues(address="198.18.3.2", algorithm_address="198.18.3.1", port=7000, token="s3cret")


def test_the_cs_declaration_validates_and_resolves_per_side() -> None:
    assert validate_host_sides(CS_HOST_SIDES) == CS_HOST_SIDES
    algorithm = resolve_side(CS_HOST_SIDES, "algorithm", VALUES)
    assert algorithm.options == {"role": "algorithm", "server_host": "198.18.3.2", "server_port": 7000}
    assert algorithm.env == {"AGL_SERVER_TOKEN": "s3cret"}
    runner = resolve_side(CS_HOST_SIDES, "runner", VALUES)
    assert runner.options == {"role": "runner", "server_host": "198.18.3.1", "server_port": 7000}


def test_templates_inside_text_and_nested_values_are_filled() -> None:
    sides = {
        "algorithm": {"options": {"listen": ["{address}", "{port}"], "limits": {"n": 2, "tag": "a-{port}"}}},
        "runner": {
            "options": {"url": "http://{algorithm_address}:{port}/v1", "literal": "{{not a placeholder}}"},
            "env": {"MY_PORT": "{port}"},
        },
    }
    algorithm = resolve_side(sides, "algorithm", VALUES)
    assert algorithm.options == {"listen": ["198.18.3.2", 7000], "limits": {"n": 2, "tag": "a-7000"}}
    assert algorithm.env == {}
    runner = resolve_side(sides, "runner", VALUES)
    assert runner.options == {"url": "http://198.18.3.1:7000/v1", "literal": "{not a placeholder}"}
    assert runner.env == {"MY_PORT": "7000"}  # the environment is text


def test_without_credentials_every_entry_naming_the_token_is_left_out() -> None:
    sides = {
        "algorithm": {"options": {"role": "algorithm", "auth": ["user", "{token}"]}, "env": CS_ENV},
        "runner": {"options": {"role": "runner"}, "env": {**CS_ENV, "OTHER": "kept"}},
    }
    algorithm = resolve_side(sides, "algorithm", VALUES, credentials=False)
    assert algorithm.options == {"role": "algorithm"} and algorithm.env == {}
    assert resolve_side(sides, "runner", VALUES, credentials=False).env == {"OTHER": "kept"}


@pytest.mark.parametrize(
    ("sides", "message"),
    [
        ([], "host_sides must be a mapping with the sides ['algorithm', 'runner']"),
        ({"algorithm": {}}, "host_sides: side 'runner' is missing; declare both algorithm and runner"),
        ({"algorithm": {}, "runner": {}, "worker": {}}, "host_sides: unknown side 'worker'"),
        ({"algorithm": [], "runner": {}}, "host_sides.algorithm must be a mapping with 'options' and/or"),
        ({"algorithm": {"opts": {}}, "runner": {}}, "host_sides.algorithm: unknown key 'opts'"),
        ({"algorithm": {}, "runner": {"options": ["role"]}}, "host_sides.runner.options must be a mapping"),
        ({"algorithm": {}, "runner": {"env": "X=1"}}, "host_sides.runner.env must be a mapping"),
        (
            {"algorithm": {}, "runner": {"options": {"server port": 1}}},
            "host_sides.runner.options: 'server port' is not a parameter name",
        ),
        (
            {"algorithm": {}, "runner": {"options": {"server_port": "{prot}"}}},
            "host_sides.runner.options.server_port: unknown placeholder '{prot}' in '{prot}'; known: "
            "{address}, {algorithm_address}, {port}, {token}",
        ),
        (
            {"algorithm": {}, "runner": {"options": {"server_port": "{port:d}"}}},
            "unknown placeholder '{port:d}'",
        ),
        (
            {"algorithm": {}, "runner": {"options": {"hosts": ["a", "{address.x}"]}}},
            "host_sides.runner.options.hosts[1]: unknown placeholder '{address.x}'",
        ),
        (
            {"algorithm": {"options": {"url": "http://{address"}}, "runner": {}},
            "host_sides.algorithm.options.url: 'http://{address' is not a valid template",
        ),
        (
            {"algorithm": {"options": {"clock": object}}, "runner": {}},
            "host_sides.algorithm.options.clock must be JSON-like",
        ),
        ({"algorithm": {"env": {"1BAD": "x"}}, "runner": {}}, "host_sides.algorithm.env: '1BAD' is not"),
        (
            {"algorithm": {"env": {"AGL_SERVER_PORT": 7000}}, "runner": {}},
            "host_sides.algorithm.env.AGL_SERVER_PORT must be a string, got 7000 (int)",
        ),
    ],
)
def test_a_bad_declaration_names_the_path_and_value(sides: Any, message: str) -> None:
    with pytest.raises(ValueError) as error:
        validate_host_sides(sides)
    assert message in str(error.value)


def test_the_placeholders_are_the_documented_ones() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "multi-host-strategies.md").read_text()
    for name in PLACEHOLDERS:
        assert f"`{{{name}}}`" in page, f"docs/multi-host-strategies.md does not document {{{name}}}"
    assert json.dumps(CS_HOST_SIDES["runner"]["options"]) in page.replace("\n", "")


# -- the manifest and the plan -----------------------------------------------------------------------------


def test_runs_on_many_hosts_defaults_to_true_and_host_sides_to_none() -> None:
    manifest = validate_manifest({})
    assert manifest["runs_on_many_hosts"] is True
    assert manifest["host_sides"] is None
    with pytest.raises(ValueError, match="declares no host_sides, so the kit cannot place"):
        require_host_sides(manifest)
    with pytest.raises(ValueError, match="declares runs_on_many_hosts=False"):
        require_host_sides(validate_manifest({"runs_on_many_hosts": False}))
    declared = validate_manifest({"host_sides": CS_HOST_SIDES})
    assert require_host_sides(declared) == CS_HOST_SIDES


def test_the_manifest_reports_a_bad_placement_with_its_owner() -> None:
    with pytest.raises(CapabilityError, match=r"^Mine\.capabilities: host_sides: side 'runner' is missing"):
        validate_manifest({"host_sides": {"algorithm": {}}}, owner="Mine.capabilities")
    with pytest.raises(CapabilityError, match="'runs_on_many_hosts' must be a bool, got 'no'"):
        validate_manifest({"runs_on_many_hosts": "no"})
    with pytest.raises(CapabilityError, match="'host_sides' places sides on other hosts, but 'runs_on_many"):
        validate_manifest({"runs_on_many_hosts": False, "host_sides": CS_HOST_SIDES})
    with pytest.raises(CapabilityError, match="did you mean 'runs_on_many_hosts'"):
        validate_manifest({"runs_on_many_host": False})


def test_D_is_na_only_for_strategies_that_declare_one_machine() -> None:
    one_machine = validate_manifest({"runs_on_many_hosts": False})
    assert _applicability(CATALOGUE["D1"], "after-return", one_machine, {}) == (
        "n/a",
        "runs_on_many_hosts",
        "the strategy declares runs_on_many_hosts=False (its runners run on one machine)",
    )
    # Undeclared (strictest) or declared without a placement: D runs, and fails asking for host_sides.
    assert _applicability(CATALOGUE["D1"], "after-return", validate_manifest({}), {})[0] == "run"
    declared = validate_manifest({"host_sides": CS_HOST_SIDES})
    assert _applicability(CATALOGUE["D1"], "after-return", declared, {})[0] == "run"


def test_single_machine_reference_strategies_declare_it() -> None:
    from agentlightning.execution.inter_process import InterProcessExecutionStrategy
    from agentlightning.execution.shared_memory import SharedMemoryExecutionStrategy

    for cls in (SharedMemoryExecutionStrategy, InterProcessExecutionStrategy):
        assert validate_manifest(cls.capability_manifest)["runs_on_many_hosts"] is False, cls


def test_cs_declares_the_documented_host_sides() -> None:
    from agentlightning.execution.client_server import ClientServerExecutionStrategy

    strategy = ClientServerExecutionStrategy()
    for manifest in (ClientServerExecutionStrategy.capability_manifest, strategy.capabilities):
        caps = validate_manifest(manifest)
        assert caps["runs_on_many_hosts"] is True
        assert caps["host_sides"] == CS_HOST_SIDES


# -- the declaration at work: cs's two sides on two test hosts ---------------------------------------------


@pytest.mark.slow  # two cs sides start and import their HTTP stacks: seconds on a loaded machine
def test_cs_sides_placed_by_the_declaration_complete_rollouts_across_two_hosts(tmp_path: Path) -> None:
    availability = probe_namespaces()
    if not availability.available:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to make network namespaces: {availability.reason}")
        pytest.skip(availability.reason)
    from agentlightning.execution.client_server import ClientServerExecutionStrategy

    sides = require_host_sides(validate_manifest(ClientServerExecutionStrategy.capability_manifest))
    journal = str(tmp_path / "journal.jsonl")
    token = secrets.token_hex(16)
    with NamespaceHosts(2) as hosts:
        port = hosts.free_port(0)

        def start(side: Any, host: int) -> Any:
            values = PlacementValues(hosts.address(host), hosts.address(0), port, token)
            placed = resolve_side(sides, side, values)
            spec = {"strategy": "cs", "options": placed.options, "journal": journal}
            argv = [sys.executable, str(SIDE), json.dumps(spec)]
            return hosts.run(host, argv, env={**os.environ, **placed.env})

        algorithm_side = start("algorithm", 0)
        hosts.wait_reachable(1, 0, port, HANG * 3)  # the store listens on host 0's switch address
        runner_side = start("runner", 1)
        assert algorithm_side.wait(HANG * 3) == 0, algorithm_side.stdout() + algorithm_side.stderr()
        assert runner_side.wait(HANG * 3) == 0, runner_side.stdout() + runner_side.stderr()
    records = read_journal(journal)
    waited = [r for r in records if r.bundle == "algorithm" and r.kind == "waited"]
    assert len(waited) == 1 and set(waited[0].data["statuses"].values()) == {"succeeded"}
    assert len(waited[0].data["statuses"]) == 3
    completed = [r for r in records if r.kind == "completed"]
    assert sorted(r.detail for r in completed) == sorted(waited[0].data["statuses"])
    runner_pids = {r.pid for r in records if r.bundle.startswith("runner")}
    algorithm_pids = {r.pid for r in records if r.bundle == "algorithm"}
    assert runner_pids and not runner_pids & algorithm_pids
    starts = [r for r in records if r.bundle.startswith("runner") and r.kind == "start"]
    # Each runner's HTTP client, seen through its claim tracker (heartbeats, T3).
    assert {r.data["store_type"] for r in starts} == {"agentlightning.store.claims.ClaimTrackingStore"}
