"""Scripted bundles: picklable under every start method, journaling, store faults, gates, cancellation."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import threading

import pytest

from conformance.bundles import ScriptedAlgorithm, ScriptedError, ScriptedRunner, resolve_exception_type
from conformance.faults import open_gate
from conformance.journal import read_journal
from conformance.scenarios import Script, Step, StoreFault


@pytest.fixture(autouse=True)
def _no_stack_dump_in_pytest(request, monkeypatch):
    """Bundles called in this process must not register a SIGUSR1 dump (an fd) in pytest itself."""
    if "in_a_child" not in request.node.name:
        monkeypatch.setattr("conformance.bundles.register_stack_dump", lambda directory: None)


class _Event:
    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout=None) -> bool:
        return self._event.wait(timeout)


class _Store:
    """Just enough store for the ops used here."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_latest_resources(self):
        self.calls += 1


def _kinds(path, bundle):
    return [record.kind for record in read_journal(path) if record.bundle == bundle]


def _run_runner_in_child(runner, worker_id, flag):
    asyncio.run(runner(None, worker_id, flag))


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_runner_works_in_a_child_under_every_start_method(tmp_path, method):
    journal = str(tmp_path / "journal.jsonl")
    ctx = multiprocessing.get_context(method)
    flag = ctx.Event()
    flag.set()
    runner = ScriptedRunner((Script((Step("poll", 5.0),)),), journal)
    child = ctx.Process(target=_run_runner_in_child, args=(runner, 1, flag))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    records = [record for record in read_journal(journal) if record.bundle == "runner 1"]
    assert [record.kind for record in records] == ["start", "step", "saw-stop", "finally-ran", "end"]
    assert {record.pid for record in records} == {child.pid}
    assert records[0].data["worker_id"] == 1
    assert os.path.exists(tmp_path / f"stacks-{child.pid}.txt")  # SIGUSR1 dump registered in the child


def test_bundles_pickle_with_their_plan(tmp_path):
    fault = StoreFault("algorithm", "get_latest_resources", call=2, raises="ScriptedError")
    algorithm = ScriptedAlgorithm(Script((Step("return"),)), str(tmp_path / "j"), store_faults=(fault,))
    clone = pickle.loads(pickle.dumps(algorithm))
    assert clone.script == algorithm.script and clone.store_faults == (fault,)


def test_store_fault_raises_on_the_planned_call_only(tmp_path):
    journal = str(tmp_path / "journal.jsonl")
    step = Step("store", args={"op": "get_latest_resources"})
    fault = StoreFault("algorithm", "get_latest_resources", call=2, raises="ScriptedError", delay=0.01)
    algorithm = ScriptedAlgorithm(Script((step, step, step)), journal, store_faults=(fault,))
    store = _Store()
    with pytest.raises(ScriptedError, match=r"store\.get_latest_resources call 2"):
        asyncio.run(algorithm(store, _Event()))
    assert store.calls == 1
    kinds = _kinds(journal, "algorithm")
    assert "store-delay" in kinds and "store-fault" in kinds
    assert kinds[-3:] == ["exception", "finally-ran", "end"]


def test_ignored_event_is_cancelled_with_finally(tmp_path):
    journal = str(tmp_path / "journal.jsonl")
    algorithm = ScriptedAlgorithm(Script((Step("ignore_event", 30.0),)), journal)

    async def main() -> None:
        task = asyncio.ensure_future(algorithm(None, _Event()))
        while "step" not in _kinds(journal, "algorithm") and not task.done():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert _kinds(journal, "algorithm")[-3:] == ["cancelled", "finally-ran", "end"]


def test_ignore_cancel_swallows_then_gives_up(tmp_path):
    journal = str(tmp_path / "journal.jsonl")
    algorithm = ScriptedAlgorithm(Script((Step("ignore_cancel", 0.3),)), journal)

    async def main() -> None:
        task = asyncio.ensure_future(algorithm(None, _Event()))
        while "step" not in _kinds(journal, "algorithm") and not task.done():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    kinds = _kinds(journal, "algorithm")
    assert "cancel-ignored" in kinds and kinds[-3:] == ["cancelled", "finally-ran", "end"]


def test_gate_waits_for_the_kit(tmp_path):
    journal = str(tmp_path / "journal.jsonl")
    script = Script((Step("gate", args={"name": "go", "ignore_event": True}), Step("set_event")))
    algorithm = ScriptedAlgorithm(script, journal)
    event = _Event()

    async def main() -> None:
        task = asyncio.ensure_future(algorithm(None, event))
        while "gate" not in _kinds(journal, "algorithm") and not task.done():
            await asyncio.sleep(0.005)
        assert not task.done() and not event.is_set()
        open_gate(str(tmp_path), "go")
        await task

    asyncio.run(main())
    assert event.is_set()
    assert _kinds(journal, "algorithm")[2:5] == ["gate", "gate-open", "step"]


def test_wait_event_step_wakes_from_a_kit_thread(tmp_path):
    journal = str(tmp_path / "journal.jsonl")
    event = _Event()
    runner = ScriptedRunner((Script((Step("wait_event", 10.0),)),), journal)
    algorithm = ScriptedAlgorithm(Script((Step("sleep", 0.02), Step("set_event"))), journal)

    async def main() -> None:
        await asyncio.gather(runner(None, 0, event), algorithm(None, event))

    asyncio.run(main())
    assert "saw-stop" in _kinds(journal, "runner 0")


def test_unknown_exception_type_is_named():
    assert resolve_exception_type("ValueError") is ValueError
    assert resolve_exception_type("ScriptedError") is ScriptedError
    assert resolve_exception_type("conformance.bundles:ScriptedError") is ScriptedError
    with pytest.raises(ValueError, match="'NoSuchError'"):
        resolve_exception_type("NoSuchError")
