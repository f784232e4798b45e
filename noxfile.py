"""Nox sessions: the test matrix over Python 3.10-3.13, the kit against each reference strategy and the
store suite against the reference store, the ``ray`` strategy's tests and kit run on every Python Ray
ships wheels for, lint, types, coverage across threads and child processes, and the benchmarks (not in
the default set).

A missing interpreter is an error, not a silent skip: a green matrix means all four versions ran.
"""

from __future__ import annotations

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
STRATEGIES = ["shm", "ipc", "cs"]
# The kit is its own distribution (packaging/conformance) that the runtime depends on by name: installed
# from the checkout first, in the same pip call, so the dependency resolves to the working copy.
KIT = ("-e", "./packaging/conformance")

# ``ray`` is not in the default set: about ten minutes per Python, of which the kit on ``ray`` takes four to
# five (each ``execute()`` is a Ray job of its own, with an actor and a runner process per runner: 2-4 s on
# this machine). ``.ci/run`` runs its tests and the kit on the default Python. Run it with ``nox -s ray``.
nox.options.sessions = ["tests", "conformance", "store", "lint", "types", "coverage", "package"]
nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Unit and meta tests on each supported Python."""
    session.install(*KIT, "-e", ".[test,bench]")
    session.run("python", "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python="3.11")
@nox.parametrize("strategy", STRATEGIES)
def conformance(session: nox.Session, strategy: str) -> None:
    """The conformance kit against one reference strategy."""
    session.install(*KIT, "-e", ".[test]")
    session.run(
        "python", "-m", "conformance", strategy, "-n", "2", "-p", "no:cacheprovider",
        f"--conformance-report=conformance-report-{strategy}", *session.posargs,
    )  # fmt: skip


RAY_VERSION = "2.60.0"
RAY_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
"""Every supported Python that Ray ships Linux wheels for, checked per version with
``pip download ray==2.60.0 --no-deps --only-binary=:all: --python-version 3.1X``: all four have them."""
RAY_WITHOUT_WHEELS: dict[str, str] = {}
"""Supported Pythons left out of the ``ray`` session, each with the reason (none today)."""


@nox.session(python=[v for v in RAY_PYTHONS if v not in RAY_WITHOUT_WHEELS])
def ray(session: nox.Session) -> None:
    """The ``ray`` strategy's tests, then the kit on ``ray`` and on the zoo's broken Ray strategies (each
    caught on its contract, the good ``ray`` beside them), against one local cluster held for the run."""
    session.install(*KIT, "-e", ".[test,ray]", f"ray=={RAY_VERSION}")
    session.run(
        "python", "-m", "pytest", "-p", "no:cacheprovider", "-n", "0",
        "tests/execution/test_ray_actors.py", "tests/execution/test_ray_multinode.py",
        "tests/conformance/test_ray_session.py", "tests/execution/test_ray_cluster.py",
        "tests/execution/test_ray_worker_pool.py", *session.posargs,
    )  # fmt: skip
    session.run("python", "-m", "conformance.selfcheck", "--quick", "--only", "_ray_", "--jobs", "1")
    session.run(
        "python", "-m", "conformance.ray_session",
        "python", "-m", "conformance", "ray", "-n", "2", "-p", "no:cacheprovider",
        f"--conformance-report=conformance-report-ray-{session.python}",
    )  # fmt: skip


@nox.session(python="3.11")
def store(session: nox.Session) -> None:
    """The store suite (section T) against the reference store, through every access path."""
    session.install(*KIT, "-e", ".[test]")
    session.run(
        "python", "-m", "conformance", "--store", "agentlightning.store.memory.InMemoryLightningStore",
        "-n", "2", "-p", "no:cacheprovider", "--conformance-report=conformance-report-store",
        *session.posargs,
    )  # fmt: skip


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def types(session: nox.Session) -> None:
    """mypy, strict on agentlightning/, conformance/, strategies/ and bench/ (pyproject.toml)."""
    session.install(*KIT, "-e", ".[test,bench]", "mypy>=1.10")
    session.run("mypy")


@nox.session(python="3.11")
def coverage(session: nox.Session) -> None:
    """Line coverage across threads and child processes, combined; at least 90% enforced."""
    session.install(*KIT, "-e", ".[test,bench]")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", *session.posargs)
    session.run("coverage", "combine")
    session.run("coverage", "report", "--fail-under=90")


@nox.session(python="3.11")
def package(session: nox.Session) -> None:
    """Build both distributions (the kit, the runtime), install each in a fresh venv, use what it exposes.

    The kit alone must not bring any agentlightning; the runtime alone pulls the kit by name (found among
    the freshly built artefacts) and its plugin is declared once.
    """
    import pathlib
    import tempfile

    session.install("build>=1.2")
    work = pathlib.Path(tempfile.mkdtemp(prefix="agl-dist-"))
    dist = work / "dist"
    session.run("python", "-m", "build", "--outdir", str(dist), "packaging/conformance")
    session.run("python", "-m", "build", "--outdir", str(dist), ".")
    empty = tempfile.mkdtemp(prefix="agl-empty-")  # no conftest, no tests: only the installed plugin
    plugin_once = (
        "from importlib.metadata import entry_points; "
        "found = [e for e in entry_points(group='pytest11') if e.value == 'conformance.plugin']; "
        "assert len(found) == 1, found"
    )
    for artefact in sorted(dist.iterdir()):
        venv = work / f"venv-{artefact.name}"
        session.run("python", "-m", "venv", str(venv))
        python = str(venv / "bin" / "python")
        session.run(python, "-m", "pip", "install", "-q", "--find-links", str(dist), str(artefact))
        with session.chdir(empty):
            session.run(python, "-c", plugin_once)
            if artefact.name.startswith("agentlightning_conformance"):
                session.run(
                    python, "-c",
                    "import importlib.util, conformance.plugin; "
                    "assert importlib.util.find_spec('agentlightning') is None, 'the kit brought a runtime'",
                )  # fmt: skip
                continue
            session.run(python, "-m", "conformance", "shm", "-k", "L1 or K1", "-p", "no:cacheprovider")
            session.run(python, "-m", "pytest", "--strategy=shm", "-k", "L2", "-p", "no:cacheprovider")


UPSTREAM_VERDICTS = "packaging/conformance/upstream-verdicts.toml"
_SHM = "agentlightning.execution.shared_memory.SharedMemoryExecutionStrategy"
# P1 with a fixed seed and a fixed number of scenarios, not a time budget: upstream's scenarios are slow
# (each waits out its own shutdown), so a budget ends after a number of scenarios that depends on the
# machine's load, and the verdict with it.
UPSTREAM_P1 = ("--conformance-seed", "1", "--conformance-examples", "20")
UPSTREAM_STRATEGIES = {
    "shm-algorithm": (_SHM, 'main_thread="algorithm"'),
    "shm-runner": (_SHM, 'main_thread="runner"'),
    "cs": ("agentlightning.execution.client_server.ClientServerExecutionStrategy", None),
}


@nox.session(python="3.11", default=False)
@nox.parametrize("version", ["0.2.2", "0.3.0"])
def upstream(session: nox.Session, version: str) -> None:
    """The kit distribution alone beside upstream agentlightning from the package index, on its shm (both
    main_thread settings) and cs strategies; fails on any verdict other than the pinned ones."""
    import json
    import pathlib
    import tempfile

    import tomllib

    pinned = tomllib.loads(pathlib.Path(UPSTREAM_VERDICTS).read_text(encoding="utf-8"))
    # Only upstream and the kit distribution (pytest-xdist runs the items on two workers, as measured).
    session.install(f"agentlightning=={version}", "./packaging/conformance", "pytest-xdist")
    work = pathlib.Path(tempfile.mkdtemp(prefix="agl-upstream-"))  # outside the checkout: upstream's package
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # upstream imports litellm, which would fetch a price list
    changed: list[str] = []
    for name, (strategy, option) in UPSTREAM_STRATEGIES.items():
        report = work / f"{version}-{name}"
        options = ["--strategy-option", option] if option else []
        with session.chdir(work):
            session.run(
                "python", "-m", "conformance", strategy, *options, "-n", "2", "-p", "no:cacheprovider",
                "--conformance-timeout-scale", "3", *UPSTREAM_P1,
                f"--conformance-report={report}.json", env=env, success_codes=[0, 1],
            )  # fmt: skip
        observed = json.loads(pathlib.Path(f"{report}.json").read_text(encoding="utf-8"))["contracts"]
        expected = pinned["verdicts"].get(version, {}).get(name, {})  # unpinned: every verdict is a change
        for cid in sorted(set(observed) | set(expected)):
            if observed.get(cid) != expected.get(cid):
                changed.append(f"{version} {name} {cid}: pinned {expected.get(cid)}, now {observed.get(cid)}")
    if changed:
        session.error("verdicts changed against " + UPSTREAM_VERDICTS + ":\n" + "\n".join(changed))


@nox.session(python="3.11", default=False)
def bench(session: nox.Session) -> None:
    """Every benchmark workload; regenerates docs/benchmarks.md and its plots."""
    session.install(*KIT, "-e", ".[dev]")
    session.run("python", "-m", "bench", *session.posargs)
