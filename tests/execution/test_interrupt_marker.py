"""Where Ctrl+C may land is declared per module, never inferred from where a file lives."""

from __future__ import annotations

import ast
import asyncio
import pkgutil
import types
from pathlib import Path

import pytest

import agentlightning.execution as execution_package
from agentlightning.execution import threads


def _declares_protection(source: str) -> bool:
    return any(
        isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and node.value.value is True
        and any(isinstance(t, ast.Name) and t.id == "_KEYBOARD_INTERRUPT_PROTECTED" for t in node.targets)
        for node in ast.parse(source).body
    )


def test_every_execution_module_declares_itself_protected() -> None:
    # Read, not imported: a module behind an optional extra (ray) must declare it too.
    missing = []
    for info in pkgutil.iter_modules(execution_package.__path__):
        if info.name == "__init__":
            continue
        source = (Path(execution_package.__path__[0]) / f"{info.name}.py").read_text(encoding="utf-8")
        if not _declares_protection(source):
            missing.append(info.name)
    assert missing == []


def _verdict_in_loop_callback(*, marked: bool, filename: str) -> bool:
    """Whether a SIGINT arriving in a loop callback defined in a module of that kind would be raised there."""
    module = types.ModuleType("callback_module")
    if marked:
        module.__dict__["_KEYBOARD_INTERRUPT_PROTECTED"] = True
    source = "import sys\ndef callback(decide, out):\n    out.append(decide(sys._getframe()))\n"
    exec(compile(source, filename, "exec"), module.__dict__)
    out: list[bool] = []
    loop = asyncio.new_event_loop()
    try:
        loop.call_soon(module.callback, threads._interrupts_bundle_code, out)
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    return out[0]


@pytest.mark.parametrize("filename", ["/elsewhere/user_code.py", threads.__file__])
def test_an_unmarked_module_is_bundle_code_wherever_its_file_lives(filename: str) -> None:
    assert _verdict_in_loop_callback(marked=False, filename=filename) is True


@pytest.mark.parametrize("filename", ["/elsewhere/user_code.py", threads.__file__])
def test_a_marked_module_is_protected_wherever_its_file_lives(filename: str) -> None:
    assert _verdict_in_loop_callback(marked=True, filename=filename) is False
