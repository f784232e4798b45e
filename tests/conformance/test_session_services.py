"""Session services (``conformance.session_services``): a strategy's shared service is started once per
kit session, its environment reaches every xdist worker, and it is stopped at the end."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from conformance.session_services import SessionServiceError, service_of


def _log(kit_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = kit_project.path / "service.log"
    monkeypatch.setenv("PLUGIN_SERVICE_LOG", str(log))
    monkeypatch.delenv("PLUGIN_SERVICE_PID", raising=False)
    return log


def _journal(log: Path) -> tuple[int, int, list[tuple[int, str]]]:
    """(service pid, the pid that started it, [(pid, service pid seen) for each strategy built])."""
    lines = log.read_text(encoding="utf-8").splitlines()
    started = [line.split() for line in lines if line.startswith("started ")]
    assert len(started) == 1, lines  # one service for the whole session
    service, owner = int(started[0][1]), int(started[0][3])
    assert lines[-1] == f"stopped {service}", lines  # stopped at the end, after every build
    built = [(int(line.split()[2]), line.split()[4]) for line in lines if line.startswith("built ")]
    assert not psutil.pid_exists(service) or psutil.Process(service).status() == psutil.STATUS_ZOMBIE
    return service, owner, built


def test_one_service_per_session_shared_by_xdist_workers_and_stopped_at_the_end(
    kit_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _log(kit_project, monkeypatch)
    result = kit_project.runpytest_subprocess(
        "--strategy=plugin_strategies.WithService", "-n", "2", "-k", "G1 or G2"
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["conformance: session service plugin_strategies:service ready in * s; exports PLUGIN_SERVICE_PID"]
    )
    service, owner, built = _journal(log)
    # G1 and G2 build the strategy in the workers: each saw the service the controller started.
    in_workers = [seen for pid, seen in built if pid != owner]
    assert in_workers and set(in_workers) == {str(service)}, built


def test_without_xdist_the_only_process_owns_the_service(
    kit_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _log(kit_project, monkeypatch)
    result = kit_project.runpytest_subprocess("--strategy=plugin_strategies.WithService", "-k", "G1")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    service, owner, built = _journal(log)
    assert (owner, str(service)) in built, built  # G1 built it in the process that owns the service


@pytest.mark.parametrize(
    ("strategy", "fragments"),
    [
        (
            "WithFailingService",
            ("plugin_strategies:failing_service", "failed to start", "no cluster for you"),
        ),
        ("WithMalformedService", ("'module:callable'", "'plugin_strategies.service'")),
    ],
)
def test_a_service_that_cannot_start_is_a_usage_error_naming_it(
    kit_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, strategy: str, fragments: tuple[str, ...]
) -> None:
    _log(kit_project, monkeypatch)
    result = kit_project.runpytest_subprocess(f"--strategy=plugin_strategies.{strategy}", "-k", "G2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert all(fragment in err for fragment in fragments), err


def test_a_malformed_declaration_is_refused_naming_it() -> None:
    class Bad:
        conformance_session_service = "no_colon_here"

    with pytest.raises(SessionServiceError, match=r"'module:callable'.*'no_colon_here'"):
        service_of(Bad)
    assert service_of(object) is None


def test_the_environment_is_restored_after_the_session(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from conformance.session_services import SessionService, started

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("PLUGIN_SERVICE_LOG", str(tmp_path / "log"))
    monkeypatch.delenv("PLUGIN_SERVICE_PID", raising=False)
    with started(SessionService("plugin_strategies:service")) as service:
        assert os.environ["PLUGIN_SERVICE_PID"] == service.environment["PLUGIN_SERVICE_PID"]
    assert "PLUGIN_SERVICE_PID" not in os.environ
