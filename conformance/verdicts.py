"""Verdicts a contract check can reach, raised as exceptions so a check reads top to bottom.

A check returns normally for ``pass``; it raises ``ContractFailed`` (with expected vs observed, the figure
against its bound and the journal timeline), ``NotApplicable`` (naming the capability that excludes the
contract) or ``DeclaredLimitation`` (a limitation the strategy declared, which is reported, not passed). A
``SetupError`` (the kit could not drive the target: a missing store method, a value the installed types
refuse, a target the sandbox cannot build) is the verdict ``error``, naming the cause: never a contract
failure.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "VERDICTS",
    "ContractFailed",
    "DeclaredLimitation",
    "NotApplicable",
    "SetupError",
    "Verdict",
]

VERDICTS = ("pass", "fail", "n/a", "limitation", "waived", "error")


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


class SetupError(RuntimeError):
    """The kit could not drive the target (its own incompatibility or the sandbox's): no contract verdict."""
