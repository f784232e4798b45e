"""Exception transport across processes (E1, E2, E6): original type, message, remote traceback, notes."""

from __future__ import annotations

import pickle
import sys
import traceback
import types

import pytest

from agentlightning.remote_errors import RemoteError, dump_exception, load_exception


class NeedsTwoArgs(Exception):
    """An exception whose ``__init__`` does not accept its own ``args`` (plain pickle cannot rebuild it)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def _raise_in_helper() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        raise ValueError("helper failed") from exc


def _captured(func: object) -> BaseException:
    try:
        func()  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("expected an exception")


def test_E1_original_type_message_traceback_and_cause() -> None:
    original = _captured(_raise_in_helper)
    rebuilt = load_exception(dump_exception(original), origin="worker 'runner-0' (pid 1)")
    assert type(rebuilt) is ValueError
    assert str(rebuilt) == "helper failed"
    frames = [frame.name for frame in traceback.extract_tb(rebuilt.__traceback__)]
    assert "_raise_in_helper" in frames  # the remote frames are attached, not just the message
    assert isinstance(rebuilt.__cause__, KeyError)
    assert getattr(rebuilt, "__notes__", None) == ["raised in worker 'runner-0' (pid 1)"]
    text = "".join(traceback.format_exception(type(rebuilt), rebuilt, rebuilt.__traceback__))
    assert "_raise_in_helper" in text and "KeyError" in text


def test_E1_custom_init_survives() -> None:
    rebuilt = load_exception(dump_exception(_captured(lambda: (_ for _ in ()).throw(NeedsTwoArgs(7, "x")))))
    assert type(rebuilt) is NeedsTwoArgs
    assert (rebuilt.code, rebuilt.detail, str(rebuilt)) == (7, "x", "7: x")


def test_E2_unpicklable_degrades_with_type_and_message() -> None:
    exc = _captured(lambda: (_ for _ in ()).throw(ValueError("carries a lambda", lambda: 0)))
    rebuilt = load_exception(dump_exception(exc), origin="worker 'runner-1' (pid 2)")
    assert isinstance(rebuilt, RemoteError)
    assert rebuilt.type_name == "ValueError"
    assert "carries a lambda" in rebuilt.message
    assert "pickling failed" in rebuilt.reason
    assert "Traceback" in rebuilt.remote_traceback
    assert "ValueError" in str(rebuilt) and "carries a lambda" in str(rebuilt)
    assert pickle.loads(pickle.dumps(rebuilt)).type_name == "ValueError"  # it can travel on


def test_E2_unimportable_in_parent_degrades() -> None:
    module = types.ModuleType("agl_vanishing_module")
    exec("class VanishingError(Exception):\n    pass\n", module.__dict__)
    sys.modules["agl_vanishing_module"] = module
    try:
        data = dump_exception(module.VanishingError("gone"))
    finally:
        del sys.modules["agl_vanishing_module"]
    rebuilt = load_exception(data)
    assert isinstance(rebuilt, RemoteError)
    assert rebuilt.type_name == "agl_vanishing_module.VanishingError"
    assert rebuilt.message == "gone"
    assert "unpickling failed" in rebuilt.reason


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3), GeneratorExit()])
def test_E6_base_exceptions_travel_as_themselves(exc: BaseException) -> None:
    rebuilt = load_exception(dump_exception(exc))
    assert type(rebuilt) is type(exc)
    if isinstance(exc, SystemExit):
        assert rebuilt.code == 3  # type: ignore[attr-defined]


def test_broken_str_does_not_break_transport() -> None:
    class BrokenStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    rebuilt = load_exception(dump_exception(BrokenStr()))  # local class: cannot be pickled by reference
    assert isinstance(rebuilt, RemoteError)
    assert "str() failed" in rebuilt.message


def test_load_rejects_foreign_data() -> None:
    with pytest.raises(TypeError, match="not a serialised exception"):
        load_exception(pickle.dumps({"not": "an envelope"}))
