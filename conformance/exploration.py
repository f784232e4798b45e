"""Seeded, budgeted hypothesis search shared by the kit's property checks (P1 schedules, T9 store workloads).

Everything random comes from the kit's seed: hypothesis runs derandomised with ``@seed``, no example
database, no deadline, and its home directory is a private temporary one (nothing is written into the
user's project). ``search`` runs a property over drawn examples until one fails, stops generating when
the budget is spent, shrinks the failure within its own bounds (runs and seconds), and returns the
smallest failing example with what running it produced. Replay values (``--conformance-replay``) are
JSON, ``b64:<base64 of it>`` or a path to a file holding it: ``replay_text`` reads all three.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import shutil
import tempfile
import time
import unittest
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from hypothesis import HealthCheck, Phase, Verbosity, given, reject, seed, settings
from hypothesis import strategies as st

__all__ = [
    "CI_PROFILE",
    "THOROUGH_PROFILE",
    "Search",
    "b64_form",
    "describe_reproduction",
    "private_hypothesis_home",
    "replay_text",
    "search",
]

CI_PROFILE = "conformance-ci"
THOROUGH_PROFILE = "conformance-thorough"

settings.register_profile(
    CI_PROFILE,
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
    print_blob=False,
    verbosity=Verbosity.quiet,
)
settings.register_profile(THOROUGH_PROFILE, parent=settings.get_profile(CI_PROFILE), max_examples=500)

_X = TypeVar("_X")
_R = TypeVar("_R")


class _Failed(AssertionError):
    """Raised inside the hypothesis property so that hypothesis shrinks the example."""


class _BudgetSpent(unittest.SkipTest):
    """Raised inside the hypothesis property once the budget is spent: hypothesis re-raises a skip at
    once (no shrinking, no replay), so it stops drawing. Returning instead kept it drawing examples that
    run nothing up to ``max_examples``, with ``admit`` rejecting most: seconds of generation (28 s at
    load 12 for P1 on ``cs``) after the budget."""


@dataclass
class Search(Generic[_X, _R]):
    """What one search did: examples run while generating, shrink runs, wall time, the smallest failure."""

    profile: str
    examples: int = 0
    shrink_runs: int = 0
    shrink_hangs: int = 0  # shrink runs whose example hung
    seconds: float = 0.0
    budget_hit: bool = False
    failing: tuple[_X, _R] | None = None
    seconds_to_find: float | None = None  # from the start of the search to its first failing example


@contextlib.contextmanager
def private_hypothesis_home() -> Iterator[None]:
    """Point hypothesis' storage at a private temporary directory while a search runs.

    ``database=None`` keeps examples out of the user's project, but hypothesis also caches the constants
    of local modules under its home directory (``.hypothesis/constants`` in the current directory);
    the kit must write nothing into a user's project, so that home is ours for the duration.
    """
    try:
        from hypothesis import configuration
    except ImportError:  # pragma: no cover - hypothesis without a configurable home
        yield
        return
    setter = getattr(configuration, "set_hypothesis_home_dir", None)
    if setter is None:  # pragma: no cover
        yield
        return
    previous = configuration.storage_directory(intent_to_write=False).home_directory
    home = tempfile.mkdtemp(prefix="conformance-hypothesis-")
    setter(home)
    try:
        yield
    finally:
        setter(previous)
        shutil.rmtree(home, ignore_errors=True)


def search(
    strategy: st.SearchStrategy[_X],
    run: Callable[[_X], _R],
    failed: Callable[[_R], bool],
    key: Callable[[_X], str],
    *,
    seed_value: int,
    profile: str = CI_PROFILE,
    max_examples: int = 150,
    budget: float | None = None,
    shrink_runs: int = 150,
    shrink_budget: float = 45.0,
    on_example: Callable[[_X, _R], None] | None = None,
    confirm_shrinks: bool = False,
    hung: Callable[[_R], bool] | None = None,
    shrink_hangs: int | None = None,
    admit: Callable[[_X, int], bool] | None = None,
) -> Search[_X, _R]:
    """Run ``run`` on examples drawn from ``strategy`` until ``failed`` says one failed; shrink it.

    ``budget`` (seconds) stops generating new examples once spent; ``None`` runs ``max_examples``.
    Examples with the same ``key`` run once (hypothesis re-draws some while shrinking). Shrinking stops
    after ``shrink_runs`` runs or ``shrink_budget`` seconds, keeping the smallest failure found so far.
    ``confirm_shrinks``: a smaller example counts as failing only when a second run fails too, so that a
    timing-dependent failure does not shrink to an example that failed once by luck (and rarely again).
    ``hung`` says which outcomes are hangs: a hang costs its example's whole hang bound, so a shrink run
    that hung is not run again to confirm it, and shrinking stops once ``shrink_hangs`` shrink runs have
    hung (``None``: no such limit), keeping the smallest failure found so far (a hang it ran into).
    ``admit(example, examples run so far)``: while generating, an example it refuses is not run and
    hypothesis draws another (e.g. to take kinds of examples in turn, which hypothesis' own choices do
    not spread evenly); shrinking is not constrained by it.
    """
    if shrink_hangs is not None and shrink_hangs < 0:
        raise ValueError(f"shrink_hangs must be >= 0 or None, got {shrink_hangs!r}")
    config = settings(settings.get_profile(profile), max_examples=max_examples)
    found: Search[_X, _R] = Search(profile=profile)
    cache: dict[str, _R] = {}
    failing: list[tuple[_X, _R]] = []
    started = time.monotonic()
    shrink_started: list[float] = []

    def body(example: _X) -> None:
        if not failing and budget is not None and time.monotonic() - started > budget:
            raise _BudgetSpent("budget spent")  # nothing more is drawn or run
        if not failing and admit is not None and not admit(example, found.examples):
            reject()  # not this example's turn: hypothesis draws another (nothing runs, no key made)
        name = key(example)
        if name not in cache:
            if not failing:
                found.examples += 1
            else:
                if not shrink_started:
                    shrink_started.append(time.monotonic())
                if (
                    found.shrink_runs >= shrink_runs
                    or time.monotonic() - shrink_started[0] > shrink_budget
                    or (shrink_hangs is not None and found.shrink_hangs >= shrink_hangs)
                ):
                    return  # shrinking budget spent: keep the smallest failure found so far
                found.shrink_runs += 1
            cache[name] = run(example)
            hang = hung is not None and hung(cache[name])
            if failing and hang:
                found.shrink_hangs += 1
            if (
                failing
                and confirm_shrinks
                and not hang
                and failed(cache[name])
                and found.shrink_runs < shrink_runs
            ):
                found.shrink_runs += 1
                again = run(example)
                if not failed(again):
                    cache[name] = again
            if on_example is not None:
                on_example(example, cache[name])
        outcome = cache[name]
        if failed(outcome):
            if not failing:
                found.seconds_to_find = time.monotonic() - started
            failing.append((example, outcome))
            raise _Failed(name)

    prop = settings(config)(seed(seed_value)(given(strategy)(body)))
    try:
        with private_hypothesis_home():
            prop()
    except _BudgetSpent:
        found.budget_hit = True
    except Exception:
        # The property failed (possibly reported by hypothesis as flaky, when the minimal example did not
        # fail again on its final replay): the smallest failure recorded is the finding either way.
        if not failing:
            raise
    found.seconds = time.monotonic() - started
    if failing:
        found.failing = failing[-1]
    return found


def describe_reproduction(reproduced: int, reruns: int, what: str = "scenario") -> str:
    """How often a minimal failing example failed again; one that never did is called timing-dependent."""
    rate = f"{reproduced}/{reruns}"
    if reruns > 0 and reproduced == 0:
        return (
            f"reproduced {rate} re-runs: TIMING-DEPENDENT (the {what} failed once and did not fail again; "
            "the failure is real, the interleaving that triggers it is rare)"
        )
    return f"reproduced {rate} re-runs of the minimal {what}"


def replay_text(text: str, option: str = "--conformance-replay") -> str:
    """The JSON text a replay value stands for: itself, the decoded ``b64:`` form, or a file's content.

    Raises ``ValueError`` naming the option when the ``b64:`` form is not valid base64.
    """
    raw = text.strip()
    if raw.startswith("b64:"):
        try:
            return base64.b64decode(raw[4:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as error:
            raise ValueError(f"{option}: b64: value is not valid base64: {error}") from None
    if not raw.startswith(("{", "[")) and os.path.isfile(raw):
        with open(raw, encoding="utf-8") as handle:
            return handle.read()
    return raw


def b64_form(text: str) -> str:
    """``b64:<base64 of text>``: a replay value that survives any shell quoting."""
    return "b64:" + base64.b64encode(text.encode()).decode()
