"""Data types: validation with clear errors, and round trips through JSON and plain data."""

from __future__ import annotations

import pickle

import pytest
from pydantic import ValidationError

from agentlightning.types import (
    Attempt,
    AttemptedRollout,
    ResourcesUpdate,
    Rollout,
    RolloutConfig,
    Span,
)


def _attempted() -> AttemptedRollout:
    return AttemptedRollout(
        rollout_id="ro-1",
        input={"question": "1+1", "nested": [1, 2]},
        start_time=1.0,
        config=RolloutConfig(max_attempts=3, retry_condition=["failed", "timeout"]),
        attempt=Attempt(rollout_id="ro-1", attempt_id="at-1", sequence_id=1, start_time=1.5),
    )


def test_round_trip_json_python_and_pickle() -> None:
    original = _attempted()
    assert AttemptedRollout.model_validate_json(original.model_dump_json()) == original
    assert AttemptedRollout.model_validate(original.model_dump(mode="json")) == original
    assert pickle.loads(pickle.dumps(original)) == original
    assert original.attempt.attempt_id == "at-1" and original.rollout_id == "ro-1"


def test_defaults() -> None:
    rollout = Rollout(rollout_id="ro-1", input=None, start_time=0)
    assert rollout.status == "queuing" and rollout.config == RolloutConfig() and rollout.metadata == {}
    assert RolloutConfig().max_attempts == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout_seconds": -1}, "timeout_seconds"),
        ({"unresponsive_seconds": 0}, "unresponsive_seconds"),
        ({"retry_condition": ["succeeded"]}, "retry_condition"),
        ({"retry_condition": ["exploded"]}, "retry_condition"),
        ({"max_atempts": 2}, "max_atempts"),
    ],
)
def test_rollout_config_rejects_bad_values_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        RolloutConfig(**kwargs)  # type: ignore[arg-type]


def test_status_must_be_known() -> None:
    with pytest.raises(ValidationError, match="status"):
        Rollout(rollout_id="ro-1", input=1, start_time=0, status="finished")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="status"):
        Attempt(rollout_id="r", attempt_id="a", sequence_id=1, start_time=0, status="done")  # type: ignore[arg-type]


def test_attempt_sequence_starts_at_one_and_ids_are_not_empty() -> None:
    with pytest.raises(ValidationError, match="sequence_id"):
        Attempt(rollout_id="r", attempt_id="a", sequence_id=0, start_time=0)
    with pytest.raises(ValidationError, match="rollout_id"):
        Rollout(rollout_id="", input=1, start_time=0)


def test_attempt_must_belong_to_its_rollout() -> None:
    with pytest.raises(ValidationError, match="belongs to rollout 'ro-2'"):
        AttemptedRollout(
            rollout_id="ro-1",
            input=1,
            start_time=0,
            attempt=Attempt(rollout_id="ro-2", attempt_id="at-1", sequence_id=1, start_time=0),
        )


def test_span_and_resources() -> None:
    span = Span(rollout_id="ro-1", attempt_id="at-1", span_id="sp-1", attributes={"reward": 1.0})
    assert span.sequence_id == 0 and span.status == "unset"
    assert Span.model_validate_json(span.model_dump_json()) == span
    with pytest.raises(ValidationError, match="span_id"):
        Span(rollout_id="ro-1", attempt_id="at-1", span_id="")
    update = ResourcesUpdate(resources_id="rs-1", resources={"llm": {"endpoint": "x"}}, create_time=0)
    assert ResourcesUpdate.model_validate(update.model_dump()) == update
