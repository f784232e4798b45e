"""The signal state a program started from a terminal has, restored in the kit's own child processes.

A process inherits ignored signals and its signal mask from whoever started it, across ``exec``: a kit
started as a background job of a non-interactive shell (``cmd &``) has SIGINT and SIGQUIT ignored, and
Python then installs no ``KeyboardInterrupt`` handler in it nor in anything it starts. The checks that
deliver a Ctrl+C (K3-K5, D1) would then test an interpreter that ignores it. The sandbox's scenario
processes and section D's host sides call ``restore_default_signals()`` first, so every Ctrl+C the kit
delivers lands as it would in a program started from a terminal, however the kit itself was started.
``inherited_signal_state()`` says what the kit itself inherited, for the header of a run.
"""

from __future__ import annotations

import signal

__all__ = ["inherited_signal_state", "restore_default_signals"]

_DEFAULT_ACTIONS = ("SIGTERM", "SIGCHLD", "SIGHUP", "SIGQUIT", "SIGUSR2", "SIGALRM")


def restore_default_signals() -> None:
    """SIGINT raises ``KeyboardInterrupt`` (Python's own handler), the other signals a program may
    inherit a handling of are at their default action, and no signal is blocked (main thread only)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in _DEFAULT_ACTIONS:
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def inherited_signal_state() -> str | None:
    """What this process was started with that a terminal would not give it: SIGINT or SIGQUIT ignored,
    signals blocked (main thread); ``None`` when nothing. Read it before anything changes the handlers."""
    ignored = [
        name
        for name in ("SIGINT", "SIGQUIT")
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) == signal.SIG_IGN
    ]
    blocked = sorted(signal.Signals(signum).name for signum in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    parts = [f"{' and '.join(ignored)} ignored"] if ignored else []
    if blocked:
        parts.append(f"{', '.join(blocked)} blocked")
    return ", ".join(parts) or None
