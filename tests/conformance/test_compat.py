"""Values built from the installed types: our Span, an upstream-shaped Span, and what cannot be built."""

from __future__ import annotations

import enum
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from agentlightning.types import Span
from conformance.compat import KitIncompatible, build_model, build_resources, build_span, require_method
from conformance.verdicts import SetupError


class _Code(enum.Enum):
    UNSET = "UNSET"
    OK = "OK"


class _Status(BaseModel):
    status_code: _Code
    description: str | None = None


class _Context(BaseModel):
    trace_id: str
    span_id: str
    is_remote: bool
    trace_state: dict[str, str]


class _Resource(BaseModel):
    attributes: dict[str, Any]
    schema_url: str


class _UpstreamShapedSpan(BaseModel):
    """Required fields of every kind the upstream 0.2.x/0.3.x span model has."""

    model_config = ConfigDict(extra="allow")

    rollout_id: str
    attempt_id: str
    sequence_id: int
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    status: _Status
    attributes: dict[str, Any]
    events: list[Any]
    links: list[Any]
    start_time: float | None
    end_time: float | None
    context: _Context | None
    resource: _Resource
    kind: Literal["internal", "server"]


def test_span_of_the_installed_type_carries_the_fields_the_kit_means() -> None:
    span = build_span("ro-1", "at-1", "sp-1", "conformance", attributes={"k": 1})
    assert isinstance(span, Span)
    ids = (span.rollout_id, span.attempt_id, span.span_id, span.name)
    assert ids == ("ro-1", "at-1", "sp-1", "conformance")
    assert span.attributes == {"k": 1}


def test_every_required_field_of_an_upstream_shaped_model_gets_its_smallest_value() -> None:
    known = {"rollout_id": "ro-1", "attempt_id": "at-1", "span_id": "sp-1", "name": "n", "unknown": 1}
    span = build_model(_UpstreamShapedSpan, known)
    assert span.status.status_code is _Code.UNSET
    assert span.resource == _Resource(attributes={}, schema_url="")
    assert (span.parent_id, span.context, span.events, span.kind) == (None, None, [], "internal")
    assert not hasattr(span, "unknown"), "a field the type does not declare is not passed"


class _Strict(BaseModel):
    rollout_id: str = Field(min_length=5)
    handle: Any = Field(default=None)
    lock: type[int]


def test_a_field_the_kit_cannot_build_is_a_setup_error_naming_it() -> None:
    with pytest.raises(KitIncompatible, match=r"_Strict\.lock") as raised:
        build_model(_Strict, {"rollout_id": "abcdef"})
    assert isinstance(raised.value, SetupError)


def test_a_value_the_type_refuses_is_a_setup_error_naming_the_type() -> None:
    class _Short(BaseModel):
        rollout_id: str = Field(min_length=5)

    with pytest.raises(KitIncompatible, match=r"cannot build .*_Short.*rollout_id"):
        build_model(_Short, {"rollout_id": "ab"})


def test_a_missing_store_method_is_named() -> None:
    class _Store:
        async def add_span(self, span: Any) -> None:
            return None

    store = _Store()
    assert require_method(store, "add_span") == store.add_span
    with pytest.raises(KitIncompatible, match=r"_Store has no method 'dequeue_rollout'"):
        require_method(store, "dequeue_rollout")


def test_g1_names_a_build_component_of_another_signature() -> None:
    from conformance.contracts.configuration import _signature_mismatch

    def ours(spec: Any, *, expected_type: type, registry: Any, optional_kwargs: Any, name: str) -> Any:
        return spec

    def upstream(
        spec: Any, *, expected_type: type, spec_name: str, default_factory: Any, registry: Any
    ) -> Any:
        return spec

    assert _signature_mismatch(ours) == ""
    assert _signature_mismatch(upstream) == (
        "no parameter name, optional_kwargs; requires default_factory, spec_name"
    )


def test_resources_for_free_named_resources_carry_the_kit_value() -> None:
    assert build_resources("by", "algorithm") == {"by": "algorithm"}


def test_resources_for_typed_named_resources_are_the_smallest_valid_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import agentlightning.types as installed

    class _Prompt(BaseModel):
        resource_type: Literal["prompt"] = "prompt"
        template: str

    monkeypatch.setattr(installed, "NamedResources", dict[str, _Prompt])
    assert build_resources("by", "algorithm") == {"by": _Prompt(template="")}
    monkeypatch.setattr(installed, "NamedResources", list[str])
    with pytest.raises(KitIncompatible, match="NamedResources is list"):
        build_resources("by", "algorithm")


def test_the_kits_status_vocabulary_is_our_runtimes() -> None:
    import agentlightning.types as ours
    from conformance import history

    for name in (
        "ROLLOUT_STATUSES",
        "ATTEMPT_STATUSES",
        "TERMINAL_ROLLOUT_STATUSES",
        "TERMINAL_ATTEMPT_STATUSES",
        "ACTIVE_ATTEMPT_STATUSES",
    ):
        assert getattr(history, name) == getattr(ours, name), name
