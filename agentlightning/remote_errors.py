"""Exceptions that cross a process boundary with their type, message and traceback (E1, E2, E6).

Shared mechanics of the package: the execution strategies carry workers' failures with it, and the store's
``ipc`` channel its served store's errors, so it belongs to neither.

A worker process calls ``dump_exception(exc)``; the parent calls ``load_exception(data, origin=...)``
and gets the original type back, with the worker's frames in its ``__traceback__`` (pickled by
``tblib``), a note naming where it was raised, and its ``__cause__``/``__context__`` chain.
``KeyboardInterrupt`` and ``SystemExit`` travel as themselves.

An exception that cannot be pickled in the worker, or unpickled in the parent (a lambda attribute, a
class the parent cannot import, an ``__init__`` that its own ``args`` do not satisfy), degrades to
``RemoteError``: a clear error carrying the original type's name, message and formatted traceback.
``tblib`` is wired in through a private pickler, so no process-wide ``copyreg`` state is touched.
"""

from __future__ import annotations

import io
import pickle
import sys
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

from tblib import pickling_support

__all__ = ["RemoteError", "dump_exception", "load_exception"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True


class RemoteError(RuntimeError):
    """Stands in for a remote exception that could not cross the boundary as itself.

    ``type_name`` is the original exception's qualified type name, ``message`` its ``str()``,
    ``remote_traceback`` its formatted traceback in the process that raised it.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "", reason: str = "") -> None:
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        self.reason = reason
        text = f"{type_name}: {message}" if message else type_name
        if reason:
            text += f" (it could not be transported as itself: {reason})"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.message, self.remote_traceback, self.reason))

    def __str__(self) -> str:
        text = str(self.args[0]) if self.args else self.type_name
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text


@dataclass(frozen=True)
class _Envelope:
    """What crosses the boundary: the pickled exception (or ``None``) plus a plain-text fallback."""

    pickled: bytes | None
    type_name: str
    message: str
    remote_traceback: str
    reason: str


class _TracebackPickler(pickle.Pickler):
    """Pickles exceptions with their tracebacks via tblib, without registering anything globally."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, TracebackType):
            return pickling_support.pickle_traceback(obj)
        if isinstance(obj, BaseException):
            if type(obj).__module__ == "builtins":
                # Built-in types reduce themselves faithfully (tblib's generic path drops e.g.
                # SystemExit.code); only the chain and the traceback need adding.
                func, args, *state = cast(tuple[Any, ...], obj.__reduce__())
                chain = (obj.__cause__, obj.__traceback__, obj.__context__, obj.__suppress_context__)
                notes = getattr(obj, "__notes__", None)
                return (pickling_support.unpickle_exception, (func, args, *chain, notes), *state)
            return pickling_support.pickle_exception(obj)
        return NotImplemented


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as err:  # a broken __str__ must not hide the original error
        return f"<str() failed: {type(err).__name__}: {err}>"


def _format(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception as err:
        return f"<traceback could not be formatted: {type(err).__name__}: {err}>"


def dump_exception(exc: BaseException) -> bytes:
    """Serialise ``exc`` (traceback and chain included) for ``load_exception``; never raises."""
    buffer = io.BytesIO()
    reason = ""
    pickled: bytes | None
    try:
        _TracebackPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(exc)
        pickled = buffer.getvalue()
    except Exception as err:
        pickled, reason = None, f"pickling failed: {type(err).__name__}: {_safe_str(err)}"
    envelope = _Envelope(pickled, _type_name(exc), _safe_str(exc), _format(exc), reason)
    return pickle.dumps(envelope, protocol=pickle.HIGHEST_PROTOCOL)


def load_exception(data: bytes, origin: str | None = None) -> BaseException:
    """Rebuild the exception ``dump_exception`` serialised, ready to ``raise`` in this process.

    ``origin`` (e.g. ``"worker 'runner-1' (pid 4242)"``) is added as a note (Python 3.11+ prints
    notes; on 3.10 it is kept in ``__notes__``). Returns ``RemoteError`` when the original cannot be
    rebuilt here.
    """
    envelope = pickle.loads(data)
    if not isinstance(envelope, _Envelope):
        raise TypeError(f"not a serialised exception: {type(envelope).__name__}")
    exc: BaseException | None = None
    reason = envelope.reason
    if envelope.pickled is not None:
        try:
            loaded = pickle.loads(envelope.pickled)
        except Exception as err:
            reason = f"unpickling failed: {type(err).__name__}: {_safe_str(err)}"
        else:
            if isinstance(loaded, BaseException):
                exc = loaded
            else:
                reason = f"unpickling gave a {type(loaded).__name__}, not an exception"
    if exc is None:
        exc = RemoteError(envelope.type_name, envelope.message, envelope.remote_traceback, reason)
    if origin:
        _add_note(exc, f"raised in {origin}")
    return exc


def _add_note(exc: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        exc.add_note(note)
        return
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        notes.append(note)
    else:
        exc.__notes__ = [note]  # type: ignore[attr-defined]
