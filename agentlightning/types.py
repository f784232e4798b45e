"""Data types shared by the store, the strategies and every process boundary.

All types are pydantic models: validated on construction, and serialisable to JSON (HTTP) and to plain
Python data (IPC) with ``model_dump`` / ``model_validate``. Field names follow the original framework's
store interface so that code written against it ports unchanged.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ACTIVE_ATTEMPT_STATUSES",
    "ATTEMPT_STATUSES",
    "DEFAULT_UNRESPONSIVE_SECONDS",
    "RETRYABLE_ATTEMPT_STATUSES",
    "ROLLOUT_STATUSES",
    "TERMINAL_ATTEMPT_STATUSES",
    "TERMINAL_ROLLOUT_STATUSES",
    "Attempt",
    "AttemptStatus",
    "AttemptedRollout",
    "NamedResources",
    "ResourcesUpdate",
    "Rollout",
    "RolloutConfig",
    "RolloutMode",
    "RolloutStatus",
    "Span",
    "TaskInput",
]

RolloutStatus = Literal["queuing", "preparing", "running", "succeeded", "failed", "cancelled", "requeuing"]
"""Lifecycle of a rollout: queuing -> preparing -> running -> succeeded | failed | cancelled.

``requeuing`` is a queued state too: the rollout waits for its next attempt after a retryable failure.
"""

AttemptStatus = Literal["preparing", "running", "succeeded", "failed", "timeout", "unresponsive"]
"""Lifecycle of one attempt: preparing -> running -> succeeded | failed | timeout | unresponsive."""

RolloutMode = Literal["train", "val", "test"]

TaskInput = Any
"""Whatever the algorithm hands to a runner; it must be JSON-serialisable to cross HTTP."""

NamedResources = dict[str, Any]
"""Named resources (model endpoints, prompt templates, ...) published by the algorithm."""

ROLLOUT_STATUSES: frozenset[str] = frozenset(get_args(RolloutStatus))
ATTEMPT_STATUSES: frozenset[str] = frozenset(get_args(AttemptStatus))
TERMINAL_ROLLOUT_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
TERMINAL_ATTEMPT_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "timeout", "unresponsive"})
ACTIVE_ATTEMPT_STATUSES: frozenset[str] = frozenset({"preparing", "running"})
RETRYABLE_ATTEMPT_STATUSES: frozenset[str] = frozenset({"failed", "timeout", "unresponsive"})

_MODEL_CONFIG = ConfigDict(extra="forbid", validate_assignment=False)

DEFAULT_UNRESPONSIVE_SECONDS = 600.0
"""The silence after which an attempt is presumed lost unless its ``RolloutConfig`` says otherwise.

The backstop for a runner that vanished without its strategy noticing (a remote host lost, a link cut):
long enough that a runner whose loop is busy for minutes is not given up on (the reference strategies'
runner-side stores send heartbeats every third of it, so only a runner whose event loop is gone or stuck
that long goes silent), short enough that lost work comes back the same hour.
"""


class RolloutConfig(BaseModel):
    """Retry policy and liveness bounds of a rollout.

    An attempt that ends in a status listed in ``retry_condition`` requeues the rollout while fewer than
    ``max_attempts`` attempts have been made; otherwise the rollout fails. ``timeout_seconds`` bounds an
    attempt's total time (``None``: unbounded), ``unresponsive_seconds`` the silence between its
    heartbeats (spans and status reports count as heartbeats), so work held by a dead runner is retried
    or failed instead of left claimed forever. ``unresponsive_seconds`` defaults to
    ``DEFAULT_UNRESPONSIVE_SECONDS`` (600 s); ``None`` opts the rollout out (an attempt then stays claimed
    until its runner reports, its strategy gives it up, or ``timeout_seconds`` passes).

    A config is a frozen value (hashable; ``retry_condition`` is a tuple, and a list given for it becomes
    one): assigning a field raises, so a store may hand the same instance to every reader of a rollout
    without copying it. Derive a changed policy with ``config.model_copy(update={...})`` and give it to
    ``update_rollout(config=...)``.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False, frozen=True)

    timeout_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    unresponsive_seconds: float | None = Field(
        default=DEFAULT_UNRESPONSIVE_SECONDS, gt=0, allow_inf_nan=False
    )
    max_attempts: int = Field(default=1, ge=1)
    retry_condition: tuple[AttemptStatus, ...] = ()

    @field_validator("retry_condition")
    @classmethod
    def _retry_condition_is_terminal(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        wrong = [status for status in value if status not in RETRYABLE_ATTEMPT_STATUSES]
        if wrong:
            raise ValueError(
                f"retry_condition may only name {sorted(RETRYABLE_ATTEMPT_STATUSES)}; got {wrong}"
            )
        return value


class Rollout(BaseModel):
    """One unit of work: an input the algorithm wants a runner to process."""

    model_config = _MODEL_CONFIG

    rollout_id: str = Field(min_length=1)
    input: TaskInput
    start_time: float
    end_time: float | None = None
    mode: RolloutMode | None = None
    resources_id: str | None = None
    status: RolloutStatus = "queuing"
    config: RolloutConfig = Field(default_factory=RolloutConfig)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Attempt(BaseModel):
    """One try at a rollout, made by one runner; ``sequence_id`` counts 1, 2, ... per rollout."""

    model_config = _MODEL_CONFIG

    rollout_id: str = Field(min_length=1)
    attempt_id: str = Field(min_length=1)
    sequence_id: int = Field(ge=1)
    start_time: float
    end_time: float | None = None
    status: AttemptStatus = "preparing"
    worker_id: str | None = None
    last_heartbeat_time: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class AttemptedRollout(Rollout):
    """A rollout together with the attempt a runner is working on (what ``dequeue_rollout`` returns)."""

    attempt: Attempt

    @model_validator(mode="after")
    def _attempt_belongs_to_rollout(self) -> AttemptedRollout:
        if self.attempt.rollout_id != self.rollout_id:
            raise ValueError(
                f"attempt {self.attempt.attempt_id!r} belongs to rollout {self.attempt.rollout_id!r}, "
                f"not {self.rollout_id!r}"
            )
        return self


class Span(BaseModel):
    """A tracing span recorded by a runner while it works on an attempt.

    ``sequence_id`` orders the spans of one attempt; the store assigns it when it is left at 0.
    """

    model_config = _MODEL_CONFIG

    rollout_id: str = Field(min_length=1)
    attempt_id: str = Field(min_length=1)
    sequence_id: int = Field(default=0, ge=0)
    trace_id: str = ""
    span_id: str = Field(min_length=1)
    parent_id: str | None = None
    name: str = ""
    status: Literal["unset", "ok", "error"] = "unset"
    attributes: dict[str, Any] = Field(default_factory=dict)
    start_time: float | None = Field(default=None, allow_inf_nan=False)
    end_time: float | None = Field(default=None, allow_inf_nan=False)


class ResourcesUpdate(BaseModel):
    """A versioned snapshot of named resources; the latest one is what runners should use."""

    model_config = _MODEL_CONFIG

    resources_id: str = Field(min_length=1)
    resources: NamedResources
    create_time: float
