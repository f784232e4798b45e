"""Verdicts a contract check can reach, raised as exceptions so a check reads top to bottom.

A check returns normally for ``pass``; it raises ``ContractFailed`` (with expected vs observed, the figure
against its bound and the journal timeline), ``NotApplicable`` (naming the capability that excludes the
contract) or ``DeclaredLimitation`` (a limitation the strategy declared, which is reported, not passed).
``CheckOutcome`` is what one run of a check concluded, as plain data: it can be written down (a
prerequisite's outcome is shared between the processes of a run) and raised again where it is reported.
A ``SetupError`` (the kit could not drive the target: a missing store method, a value the installed types
refuse, a target the sandbox cannot build) is the verdict ``error``, naming the cause: never a contract
failure.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "VERDICTS",
    "Blocked",
    "CheckOutcome",
    "ContractFailed",
    "DeclaredLimitation",
    "NotApplicable",
    "SetupError",
    "Verdict",
]

VERDICTS = ("pass", "fail", "blocked", "flaky", "n/a", "limitation", "waived", "error")
"""``blocked``: not run, a prerequisite contract failed; ``flaky``: passed and failed across repeats;
``error``: the kit could not drive the target (set-up), no contract verdict."""


@dataclass(frozen=True)
class Verdict:
    """What one contract check concluded in one situation."""

    contract_id: str
    situation: str
    outcome: str  # one of VERDICTS
    reason: str = ""
    duration: float = 0.0


class ContractFailed(AssertionError):
    """The strategy broke a contract. The message starts with the contract ID and name."""

    def __init__(
        self,
        contract_id: str,
        name: str,
        *,
        expected: str,
        observed: str,
        figure: str = "",
        timeline: str = "",
        details: str = "",
    ) -> None:
        self.contract_id = contract_id
        self.name = name
        self.expected = expected
        self.observed = observed
        self.figure = figure
        self.timeline = timeline
        self.details = details
        super().__init__(self.render())

    def render(self) -> str:
        lines = [
            f"{self.contract_id} {self.name}",
            f"  expected: {self.expected}",
            f"  observed: {self.observed}",
        ]
        if self.figure:
            lines.append(f"  measured: {self.figure}")
        if self.details:
            lines.append(self.details.rstrip())
        if self.timeline:
            lines.append("  timeline:")
            lines.extend(f"    {line}" for line in self.timeline.rstrip().splitlines())
        return "\n".join(lines)


class NotApplicable(Exception):
    """The contract does not apply to this strategy; ``capability`` names what excludes it."""

    def __init__(self, capability: str, reason: str) -> None:
        self.capability = capability
        self.reason = reason
        super().__init__(f"n/a ({capability}): {reason}")


class DeclaredLimitation(Exception):
    """The strategy declared it cannot meet this contract; reported as ``limitation (declared)``."""

    def __init__(self, capability: str, reason: str) -> None:
        self.capability = capability
        self.reason = reason
        super().__init__(f"limitation (declared: {capability}): {reason}")


class Blocked(BaseException):
    """A scenario stands on a prerequisite that failed in the same way it would wait on: not run.

    A ``BaseException``, like ``GeneratorExit``: it is control flow, not a failure, so nothing between the
    check and the plugin (P1's hypothesis search above all, which shrinks on any ``Exception``) takes it
    for one. ``CheckOutcome.of`` turns it into the verdict ``blocked`` with its reason.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class SetupError(RuntimeError):
    """The kit could not drive the target (its own incompatibility or the sandbox's): no contract verdict."""


@dataclass(frozen=True)
class CheckOutcome:
    """What one run of a check concluded: ``pass``, ``fail``, ``n/a``, ``limitation``, ``error`` (the
    check itself broke, reported as a failed item with ``error``, its traceback) or ``setup-error`` (the
    kit could not drive the target: reported as the verdict ``error``, naming the cause) or ``blocked``
    (a scenario stood on a prerequisite that failed: not run, see ``conformance.prerequisites``).
    ``hung``: one of the check's scenarios reached its hang bound (what a scenario prerequisite blocks on).

    ``failure`` holds a ``ContractFailed``'s fields; ``reraise`` raises the same verdict again, so an
    outcome settled in another process is reported exactly as if the check had run here.
    """

    verdict: str
    capability: str = ""
    reason: str = ""
    failure: dict[str, str] = field(default_factory=dict)
    error: str = ""
    timeline: str = ""  # the last scenario's journal, when the caller asked for it (repeats)
    figure: str = ""  # what was measured (a failure's figure, else the slowest scenario's execute() time)
    bound: str = ""  # what it was held to
    phases: dict[str, float] = field(default_factory=dict)  # where the time went (see the plugin)
    hung: bool = False

    @classmethod
    def of(cls, check: Callable[[], None]) -> CheckOutcome:
        """Run ``check`` and capture its verdict (never raises, except ``BaseException``s like Ctrl+C)."""
        try:
            check()
        except ContractFailed as failed:
            fields = ("contract_id", "name", "expected", "observed", "figure", "timeline", "details")
            return cls("fail", failure={key: str(getattr(failed, key)) for key in fields})
        except NotApplicable as excluded:
            return cls("n/a", excluded.capability, excluded.reason)
        except DeclaredLimitation as limited:
            return cls("limitation", limited.capability, limited.reason)
        except Blocked as blocked:
            return cls("blocked", reason=blocked.reason)
        except SetupError as error:
            return cls("setup-error", reason=" ".join(str(error).split()), error=traceback.format_exc())
        except Exception as error:
            return cls("error", reason=f"{type(error).__name__}: {error}", error=traceback.format_exc())
        return cls("pass")

    @property
    def failed(self) -> bool:
        return self.verdict in ("fail", "error", "setup-error")

    @property
    def summary(self) -> str:
        """One line: what was observed against what was expected, or why it did not run."""
        if self.verdict == "fail":
            observed = " ".join(self.failure.get("observed", "").split())
            figure = f"; measured {self.failure['figure']}" if self.failure.get("figure") else ""
            return f"observed {observed}; expected {self.failure.get('expected', '')}{figure}"
        if self.verdict == "error":
            return f"check error: {self.reason}"
        if self.verdict == "setup-error":
            return f"set-up: {self.reason}"
        return f"{self.capability}: {self.reason}" if self.capability else self.reason

    def contract_failed(self) -> ContractFailed:
        """The ``ContractFailed`` this outcome records (only for ``fail``)."""
        fields = dict(self.failure)
        return ContractFailed(fields.pop("contract_id"), fields.pop("name"), **fields)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckOutcome:
        return cls(
            str(data["verdict"]),
            str(data.get("capability", "")),
            str(data.get("reason", "")),
            {str(k): str(v) for k, v in dict(data.get("failure", {})).items()},
            str(data.get("error", "")),
            str(data.get("timeline", "")),
            str(data.get("figure", "")),
            str(data.get("bound", "")),
            {str(k): float(v) for k, v in dict(data.get("phases", {})).items()},
            bool(data.get("hung", False)),
        )
