"""Run profiles: how much of the plan a run checks and how hard, as named settings registered in one place.

Like hypothesis's ``settings.register_profile``, a profile is a frozen settings object under a name,
chosen with ``--conformance-profile NAME`` (``ci`` by default). It decides which situations of each
contract run (every one, or the first runnable one for an edit loop), how P1 explores (a fixed number of
scenarios, or a time budget), how many times each item runs (``--conformance-repeat`` overrides it) and
whether a flaky item fails the gate. A profile never changes a bound or what a check demands: it only
decides how much is checked, and whether section D also exercises the strategy at its default options
(where it declares ``host_test_options``; ``conformance.host_options``); the header of every run says
which profile it was and which options section D ran with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "DEFAULT_PROFILE",
    "PERTURB_MODES",
    "PROFILES",
    "SECTION_D_MODES",
    "Profile",
    "get_profile",
    "perturb_text",
    "register_profile",
]

SECTION_D_MODES = ("test-options", "defaults")
"""What section D builds the strategy with: its declared ``host_test_options``, or its defaults."""

PERTURB_MODES = ("off", "p1", "all")
"""Where the scheduling perturbation applies: nowhere, P1's drawn scenarios, or P1 and the fixed catalogue."""


def perturb_text(mode: str) -> str:
    """What a perturbation mode does, for the header of a run."""
    from conformance.perturbation import CATALOGUE_RATE

    if mode == "off":
        return "off (the OS alone interleaves threads and processes)"
    p1 = "P1 draws a seeded perturbation with each scenario (shrunk and replayed with it)"
    if mode == "p1":
        return f"{p1}; the fixed catalogue runs unperturbed"
    return f"{p1}; the fixed catalogue runs under a low-rate one ({CATALOGUE_RATE:.0%} of racing points)"


@dataclass(frozen=True)
class Profile:
    """One named set of run settings.

    ``situations``: ``"all"`` runs every situation of every contract, ``"first"`` one situation per
    contract (the first one planned to run; the others are listed as left out by the profile).
    ``p1_examples``: P1 runs exactly that many scenarios (no time budget); ``None`` explores for
    ``p1_budget`` seconds, at most ``p1_max_examples`` scenarios. ``repeat``: runs of each item.
    ``flaky_fails``: an item that both passed and failed across its runs fails the gate.
    ``perturb``: the seeded scheduling perturbation (``conformance.perturbation``): ``"p1"`` P1 draws one
    with each scenario, ``"all"`` the fixed catalogue's scenarios also run under a low-rate one,
    ``"off"`` none (``--conformance-perturb`` overrides it).
    ``section_d``: ``"test-options"`` builds section D's sides with the strategy's declared
    ``host_test_options`` (short detection bounds), ``"defaults"`` without them, so the default bounds
    are what is checked (each under the user's ``--strategy-option`` values).
    """

    name: str
    description: str
    situations: Literal["all", "first"] = "all"
    p1_examples: int | None = None
    p1_budget: float = 45.0
    p1_max_examples: int = 150
    repeat: int = 1
    flaky_fails: bool = False
    perturb: Literal["off", "p1", "all"] = "p1"
    section_d: Literal["test-options", "defaults"] = "test-options"

    def __post_init__(self) -> None:
        if self.situations not in ("all", "first"):
            raise ValueError(f"profile {self.name!r}: situations {self.situations!r} is not 'all' or 'first'")
        if self.p1_examples is not None and self.p1_examples < 1:
            raise ValueError(f"profile {self.name!r}: p1_examples {self.p1_examples!r} must be >= 1")
        if not self.p1_budget > 0:
            raise ValueError(f"profile {self.name!r}: p1_budget {self.p1_budget!r} must be > 0")
        if self.repeat < 1:
            raise ValueError(f"profile {self.name!r}: repeat {self.repeat!r} must be >= 1")
        if self.perturb not in PERTURB_MODES:
            raise ValueError(
                f"profile {self.name!r}: perturb {self.perturb!r} is not one of {', '.join(PERTURB_MODES)}"
            )
        if self.section_d not in SECTION_D_MODES:
            raise ValueError(
                f"profile {self.name!r}: section_d {self.section_d!r} is not one of "
                f"{', '.join(SECTION_D_MODES)}"
            )

    def p1_options(self) -> dict[str, Any]:
        """P1's kit options under this profile (``examples``, or ``budget`` and ``max_examples``)."""
        if self.p1_examples is not None:
            return {"examples": self.p1_examples}
        return {"budget": self.p1_budget, "max_examples": self.p1_max_examples}

    def p1_text(self, examples: int | None = None) -> str:
        """How P1 explores under this profile (``examples`` overrides it, as ``--conformance-examples``)."""
        examples = examples if examples is not None else self.p1_examples
        if examples is not None:
            return f"{examples} scenarios"
        return f"up to {self.p1_max_examples} scenarios within {self.p1_budget:g} s"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "situations": self.situations,
            "p1_examples": self.p1_examples,
            "p1_budget": self.p1_budget,
            "p1_max_examples": self.p1_max_examples,
            "repeat": self.repeat,
            "flaky_fails": self.flaky_fails,
            "perturb": self.perturb,
            "section_d": self.section_d,
        }


PROFILES: dict[str, Profile] = {}
DEFAULT_PROFILE = "ci"


def register_profile(profile: Profile) -> Profile:
    """Register ``profile`` under its name (a later registration of the same name replaces it)."""
    PROFILES[profile.name] = profile
    return profile


def get_profile(name: str) -> Profile:
    """The profile called ``name``; an unknown name is an error that lists the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown conformance profile {name!r}; known profiles: {', '.join(PROFILES)}"
        ) from None


register_profile(
    Profile(
        "quick",
        "an edit loop: one situation per contract, P1 with a handful of scenarios",
        situations="first",
        p1_examples=5,
    )
)
register_profile(
    Profile(
        "ci",
        "every situation once, P1 explores within a time budget",
        p1_budget=20.0,
        p1_max_examples=100,
    )
)
register_profile(
    Profile(
        "thorough",
        "every situation once, P1 runs a fixed, large number of scenarios; the fixed catalogue perturbed",
        p1_examples=500,
        perturb="all",
    )
)
register_profile(
    Profile(
        "certify",
        "every situation, P1 thorough, each item three times; a flaky item fails the gate; the fixed "
        "catalogue perturbed; section D at the strategy's default options",
        p1_examples=500,
        repeat=3,
        flaky_fails=True,
        perturb="all",
        # A certificate speaks for the strategy as users build it: its default detection bounds.
        section_d="defaults",
    )
)
