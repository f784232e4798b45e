"""Nox sessions: the test matrix over Python 3.10-3.13, the kit against each reference strategy and the
store suite against the reference store, lint, types, coverage across threads and child processes, and
the benchmarks (not in the default set).

A missing interpreter is an error, not a silent skip: a green matrix means all four versions ran.
"""

from __future__ import annotations

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
STRATEGIES = ["shm", "ipc", "cs"]

nox.options.sessions = ["tests", "conformance", "store", "lint", "types", "coverage", "package"]
nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Unit and meta tests on each supported Python."""
    session.install("-e", ".[test,bench]")
    session.run("python", "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python="3.11")
@nox.parametrize("strategy", STRATEGIES)
def conformance(session: nox.Session, strategy: str) -> None:
    """The conformance kit against one reference strategy."""
    session.install("-e", ".[test]")
    session.run(
        "python", "-m", "conformance", strategy, "-n", "2", "-p", "no:cacheprovider",
        f"--conformance-report=conformance-report-{strategy}", *session.posargs,
    )  # fmt: skip


@nox.session(python="3.11")
def store(session: nox.Session) -> None:
    """The store suite (section T) against the reference store, through every access path."""
    session.install("-e", ".[test]")
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
    session.install("-e", ".[test,bench]", "mypy>=1.10")
    session.run("mypy")


@nox.session(python="3.11")
def coverage(session: nox.Session) -> None:
    """Line coverage across threads and child processes, combined; at least 90% enforced."""
    session.install("-e", ".[test,bench]")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", *session.posargs)
    session.run("coverage", "combine")
    session.run("coverage", "report", "--fail-under=90")


@nox.session(python="3.11")
def package(session: nox.Session) -> None:
    """Build the wheel and sdist, install each in a fresh venv, and use what they expose."""
    import pathlib
    import tempfile

    session.install("build>=1.2")
    dist = pathlib.Path(tempfile.mkdtemp(prefix="agl-dist-"))
    session.run("python", "-m", "build", "--outdir", str(dist))
    empty = tempfile.mkdtemp(prefix="agl-empty-")  # no conftest, no tests: only the installed plugin
    for artefact in sorted(dist.iterdir()):
        session.install("--force-reinstall", str(artefact))
        with session.chdir(empty):
            session.run(
                "python", "-c",
                "from importlib.metadata import entry_points, version; "
                "assert any(e.value == 'conformance.plugin' for e in entry_points(group='pytest11')); "
                "print(version('agentlightning-execution'))",
            )  # fmt: skip
            session.run("python", "-m", "conformance", "shm", "-k", "L1 or K1", "-p", "no:cacheprovider")
            session.run("python", "-m", "pytest", "--strategy=shm", "-k", "L2", "-p", "no:cacheprovider")


@nox.session(python="3.11", default=False)
def bench(session: nox.Session) -> None:
    """Every benchmark workload; regenerates docs/benchmarks.md and its plots."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "bench", *session.posargs)
