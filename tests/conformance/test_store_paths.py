"""The store suite's access paths and concurrent clients, run in the sandbox as the T checks run them."""

from __future__ import annotations

import os
import sys

import pytest

from conformance.catalogue import ACCESS_PATHS
from conformance.sandbox import JOURNAL, SANDBOX_DIR, run_call
from conformance.scenarios import Target
from conformance.store_paths import PATH_MODULES

sys.path.insert(0, os.path.dirname(__file__))  # store_probes must import in the sandbox too

from store_probes import probe_path

_TARGET = Target("", store_factory="agentlightning.store.memory:InMemoryLightningStore")


def _probe(path: str, thread_safe: bool = True) -> dict:
    result = run_call(
        probe_path,
        (path, SANDBOX_DIR, JOURNAL, thread_safe),
        target=_TARGET,
        hang_bound=60.0,
        preload=PATH_MODULES[path],
    )
    assert result.outcome == "returned", (result.exception, result.stderr[-2000:])
    assert not result.survivors, result.survivors
    return result.value


@pytest.mark.parametrize("path", ACCESS_PATHS)
def test_clients_reach_one_store_through_each_path(path: str) -> None:
    seen = _probe(path)
    outcomes = seen["outcomes"]
    assert all(error is None for *_, error in outcomes), outcomes
    # Every client wrote into the one store the path serves.
    assert sorted(value["rollout_id"] for *_, value, _ in outcomes) == sorted(seen["stored"])
    threads = [o for o in outcomes if o[0] == "thread"]
    assert len({thread for _, _, thread, _, _ in threads}) == 2
    assert all(pid == seen["sandbox_pid"] for _, pid, *_ in threads)
    processes = [o for o in outcomes if o[0] == "process"]
    if path in ("http", "ipc"):
        assert len(processes) == 2
        assert len({pid for _, pid, *_ in processes} | {seen["sandbox_pid"]}) == 3
        assert {value["handle"] for *_, value, _ in processes} == (
            {"HttpLightningStore"} if path == "http" else {"IpcLightningStore"}
        )
    else:
        assert processes == []
        assert seen["refused_process"] == f"the {path} path cannot be reached from another process"


def test_a_failing_client_is_an_outcome_with_its_error_and_traceback() -> None:
    where, kind, message, traceback = _probe("ipc")["failed"]
    assert (where, kind, message) == ("thread", "ValueError", "refused by the client program")
    assert "in refuse" in traceback


def test_thread_clients_of_a_store_that_is_not_thread_safe_run_on_the_callers_loop() -> None:
    seen = _probe("in-process", thread_safe=False)
    assert {where for where, *_ in seen["outcomes"]} == {"task"}
    assert {thread for _, _, thread, _, _ in seen["outcomes"]} == {"MainThread"}
    assert len(seen["stored"]) == 2


@pytest.mark.parametrize("path", ["threaded", "http"])
def test_other_paths_serve_a_store_that_is_not_thread_safe_through_the_wrapper(path: str) -> None:
    seen = _probe(path, thread_safe=False)
    assert all(error is None for *_, error in seen["outcomes"])
    assert len(seen["stored"]) == len(seen["outcomes"])
