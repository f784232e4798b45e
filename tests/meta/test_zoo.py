"""Meta-tests: the kit catches every defect of the broken zoo on its own contract, and passes the examples.

Each broken strategy of ``strategies/broken`` is run through the kit (``python -m conformance``, in a
subprocess, as a user would) on its own contract only, so the whole file stays within a few minutes on
two xdist workers; the collateral failures of the wider runs are ``python -m conformance.selfcheck``'s
business. The example strategies run the whole suite and must pass it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.catalogue import CATALOGUE
from conformance.hosts import probe_namespaces
from conformance.selfcheck import EXAMPLES, KIT_ISSUES, RAY_EXTRA, Row, example_args, render, run_one
from strategies.broken import Specimen, specimens

_ZOO = specimens()
_REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[dict[str, str]]:
    """One local Ray cluster for the Ray specimens of this module (started only if one of them runs)."""
    from conformance.ray_session import held_cluster

    with held_cluster() as env:
        yield env


def test_zoo_is_large_and_covers_every_section() -> None:
    sections = {specimen.breaks.rstrip("0123456789") for specimen in _ZOO}
    assert len(_ZOO) >= 25, f"only {len(_ZOO)} broken strategies"
    assert {"L", "K", "E", "R", "S", "F", "G"} <= sections, f"sections covered: {sorted(sections)}"
    kinds = {specimen.kind for specimen in _ZOO if not specimen.unavailable}
    assert kinds == {"threads", "processes"}, f"kinds covered: {sorted(kinds)}"


# The examples first: they are the longest runs, and xdist hands out tests in order.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("spec", EXAMPLES, ids=[spec.rsplit(".", 2)[-2] for spec in EXAMPLES])
def test_example_strategy_passes_the_kit(spec: str) -> None:
    row = run_one(Row(name=spec, spec=spec, role="example", extra=example_args(spec)), timeout=540.0)
    assert not row.error, row.error
    failed = set(row.failed)
    unexplained = sorted(failed - set(KIT_ISSUES))
    assert not unexplained, f"{spec} fails {unexplained}: " + "; ".join(
        f"{item}: {reason}" for item, reason in row.reasons.items()
    )
    if failed:
        pytest.xfail("; ".join(f"{cid}: {KIT_ISSUES[cid]}" for cid in sorted(failed)))


@pytest.mark.parametrize("specimen", _ZOO, ids=[specimen.name for specimen in _ZOO])
def test_broken_strategy_fails_its_contract(specimen: Specimen, request: pytest.FixtureRequest) -> None:
    assert specimen.breaks in CATALOGUE, f"{specimen.name}: BREAKS = {specimen.breaks!r} is no contract ID"
    assert specimen.defect, f"{specimen.name} documents no defect"
    if specimen.unavailable:
        pytest.skip(specimen.unavailable)
    env = request.getfixturevalue("ray_cluster") if specimen.needs == "ray" else None
    if specimen.kit_gap:
        # Not run here: a missed leak stays on the machine (python -m conformance.selfcheck still shows it).
        pytest.skip(f"known kit gap: {specimen.kit_gap}")
    if specimen.interleaving_only:
        # Found by P1's perturbation within its budget, not on every seed by construction: measured
        # over five seeds by python -m conformance.selfcheck --interleavings.
        pytest.skip("interleaving-only: see selfcheck --interleavings")
    row = run_one(
        Row(
            name=specimen.name,
            spec=specimen.spec,
            role="broken",
            breaks=specimen.breaks,
            selection=f"{specimen.breaks}-",
            # The first failing situation proves the catch: the others cost time.
            extra=("-x", *(RAY_EXTRA if specimen.needs == "ray" else ())),
        ),
        timeout=240.0 if env is None else 600.0,
        env=env,
    )
    if row.verdicts and specimen.breaks not in row.verdicts:
        pytest.skip(f"{specimen.breaks} is not checked by this kit build")
    assert not row.error, row.error
    caught = row.verdicts.get(specimen.breaks) == "fail"
    assert caught, (
        f"the kit missed {specimen.name}: {specimen.breaks} is {row.verdicts.get(specimen.breaks)!r}, "
        f"expected 'fail' (defect: {specimen.defect})"
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("name", "breaks", "selection", "blocked", "runs"),
    [
        # l1_ignores_n_runners once kept every scenario waiting out its hang bound; now L1 is settled first
        # and its dependents are reported blocked by it (L1 itself is not even selected here), while G2
        # (configuration) depends on nothing.
        ("l1_ignores_n_runners", "L1", "L2- or S1- or G2-", ["L2", "S1"], "G2"),
        # e5_waits_for_runners_ready hangs once a runner ends at once: L3's runner returns at once and L7's
        # blocks in its first step, so each waited out its hang bound; now E5 (not selected here) is settled
        # first and they are reported blocked by it, while E2 (a runner failing once all run) still runs.
        ("e5_waits_for_runners_ready", "E5", "L3- or L7- or E2-", ["L3", "L7"], "E2"),
    ],
)
def test_a_failed_prerequisite_blocks_its_dependents_on_the_zoo(
    name: str, breaks: str, selection: str, blocked: list[str], runs: str
) -> None:
    (specimen,) = [s for s in _ZOO if s.name == name]
    row = run_one(
        Row(name=specimen.name, spec=specimen.spec, role="broken", breaks=breaks, selection=selection),
        timeout=540.0,
    )
    assert not row.error, row.error
    assert sorted(row.blocked) == blocked, row.verdicts
    assert row.verdicts[runs] == "pass"


@pytest.mark.timeout(600)
def test_a_runner_side_that_never_gives_up_blocks_section_d_on_the_zoo() -> None:
    # d4_spins_on_absent_store's runner side retries an absent store without end: every other D item
    # waited out the 60 s multi-host hang bound; now D4 (not selected here) is settled first and they are
    # reported blocked by it.
    availability = probe_namespaces()
    if not availability.available:
        pytest.skip(availability.reason)
    (specimen,) = [s for s in _ZOO if s.name == "d4_spins_on_absent_store"]
    row = run_one(
        Row(name=specimen.name, spec=specimen.spec, role="broken", breaks="D4", selection="D1- or D3-"),
        timeout=540.0,
    )
    assert not row.error, row.error
    assert sorted(row.blocked) == ["D1", "D3"], row.verdicts


def test_the_selfcheck_table_shows_wall_time_against_the_good_strategies() -> None:
    rows = [
        Row(name="shm", spec="shm", role="reference", seconds=40.0),
        Row(name="ipc", spec="ipc", role="reference", seconds=60.0),
        Row(name="cs", spec="cs", role="reference", seconds=50.0),
        Row(
            name="l1_ignores_n_runners",
            spec="x",
            role="broken",
            breaks="L1",
            kind="threads",
            failed=["L1"],
            blocked=["L2", "K1"],
            verdicts={"L1": "fail", "L2": "blocked", "K1": "blocked"},
            seconds=75.0,
        ),
    ]
    table = render(rows)
    assert (
        "l1_ignores_n_runners  threads  L1      L1          caught  -           2        75s   1.50" in table
    )
    assert (
        "good strategies' median 50s; slowest broken strategy l1_ignores_n_runners 75s (1.50x); 1/1 within 2x"
        in table
    )


def test_ray_specimens_without_ray_are_skipped_naming_the_extra() -> None:
    # As if the extra were not installed: every Ray specimen and the good ray row are listed as skipped,
    # the reason naming the extra, and the selfcheck still succeeds.
    code = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from conformance.selfcheck import main\n"
        "sys.exit(main(['--quick', '--only', '_ray_']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=_REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    ray_specimens = [specimen.name for specimen in _ZOO if specimen.needs == "ray"]
    assert ray_specimens, "the zoo has no Ray specimen"
    extra = "pip install 'agentlightning-execution[ray]'"
    for name in ray_specimens:
        assert f"SKIPPED  {name}: needs the extra 'ray': {extra}" in out.stdout, out.stdout
    assert "SKIPPED  ray: Ray is not installed: pip install 'agentlightning-execution[ray]'" in out.stdout
    assert f"skipped (not run, not counted): {len(ray_specimens) + 1}: " in out.stdout, out.stdout
