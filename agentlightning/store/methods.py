"""The store's methods declared once: the table every remote access path is built from.

``METHODS`` holds one ``StoreMethod`` per ``LightningStore`` method. What an entry says:

- its parameters, read from the method's signature in ``base.LightningStore`` (the one place they are
  written): names, annotations, defaults, which are keyword-only;
- its result, as one ``TypeAdapter`` that encodes and decodes it as JSON on every wire;
- which arguments are pydantic models (``models``): they travel as their JSON fields and are rebuilt on the
  server; a method whose only argument is a model sends that model as the whole HTTP body;
- whether it is ``idempotent``: a retry is harmless as it is (reads and waits). The HTTP client sends
  every other call with one request id across its retries, so the server applies it once;
- whether it ``waits``: a long poll the server holds (at most its ``max_wait_seconds`` over HTTP); ``done``
  says whether a result is final, so a client that waits in chunks knows when to stop.

Its ``request`` model is what a server validates the arguments with, over HTTP and ipc alike: a required
``str`` must not be empty, a keyword whose default is ``UNSET`` and whose type has no ``None`` may be
omitted but not null, and the few bounds the signature cannot say are in the entry (``bounds``).

Built from it: the HTTP server's routes, request bodies and hot path (``http/server.py``), the ipc
server's dispatch (``ipc.py``), and the 16 methods of ``remote.RemoteLightningStore`` that both clients
share. Adding a store method is its abstract signature in ``base``, its entry here, and its
implementation in the stores.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Final, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model, model_validator
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import NotRequired, Required, TypedDict

from agentlightning.store.base import UNSET, LightningStore, Unset
from agentlightning.store.values import ValueLimits, check_json

__all__ = ["METHODS", "MethodRequest", "RequestBody", "StoreMethod"]


class RequestBody(BaseModel):
    """Base of every request body a server validates: no unknown field, no ``NaN`` or ``Infinity``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class MethodRequest(RequestBody):
    """Base of every method's request model (``StoreMethod.request``)."""

    not_null: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _given_fields_are_not_null(self) -> MethodRequest:
        for name in self.not_null & self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} may be omitted but not null")
        return self

    def given(self) -> dict[str, Any]:
        """The keywords the caller sent (omitted ones keep the store's defaults)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


def _members(annotation: Any) -> tuple[Any, ...]:
    """The members of a union annotation (the annotation itself when it is none)."""
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _wire_type(annotation: Any) -> Any:
    """The annotation as a request field: ``Unset`` dropped, ``Sequence[X]`` a list, ``"latest"`` in str."""
    members = [m for m in _members(annotation) if m is not Unset]
    wire = []
    for member in members:
        if get_origin(member) is Literal and str in members:
            continue
        wire.append(list[get_args(member)] if get_origin(member) is Sequence else member)  # type: ignore[misc]
    return wire[0] if len(wire) == 1 else Union[tuple(wire)]  # noqa: UP007 - built at run time


class StoreMethod:
    """One ``LightningStore`` method, as every remote access path needs to know it (module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        idempotent: bool,
        waits: bool = False,
        done: Callable[[Mapping[str, Any], Any], bool] | None = None,
        bounds: Mapping[str, Any] | None = None,
    ) -> None:
        abstract = getattr(LightningStore, name)
        hints = typing.get_type_hints(abstract)
        self.name = name
        self.idempotent = idempotent
        self.waits = waits
        self.done = done
        self.doc = abstract.__doc__
        self.signature = inspect.signature(abstract)
        parameters = [p for p in self.signature.parameters.values() if p.name != "self"]
        self.parameters: tuple[inspect.Parameter, ...] = tuple(
            p.replace(annotation=hints[p.name]) for p in parameters
        )
        self.names: frozenset[str] = frozenset(p.name for p in parameters)
        self.positional: tuple[str, ...] = tuple(
            p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        self.required: tuple[str, ...] = tuple(
            p.name for p in parameters if p.default is inspect.Parameter.empty
        )
        self.models: dict[str, type[BaseModel]] = {
            p.name: model for p in self.parameters if (model := _model_of(p.annotation)) is not None
        }
        self.lists: frozenset[str] = frozenset(
            p.name for p in self.parameters if any(get_origin(m) is Sequence for m in _members(p.annotation))
        )
        self.body_model: type[BaseModel] | None = (
            self.models[parameters[0].name] if len(parameters) == 1 and self.models else None
        )
        """The model that is the whole HTTP body (``add_span``), or ``None`` for a body of keywords."""
        self.returns: Any = hints["return"]
        self.result: TypeAdapter[Any] = TypeAdapter(self.returns)
        # The adapters' core validators, called directly on the hot paths: a TypeAdapter method is a
        # Python frame (keywords, checks) around the same call.
        self._validate_result: Callable[[bytes], Any] = self.result.validator.validate_json
        self._validate_keywords: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self._bounds = dict(bounds or {})
        self._request: type[MethodRequest] | None = None
        self._validator: TypeAdapter[dict[str, Any]] | None = None
        returned = [m for m in _members(self.returns) if m is not type(None)]
        listed = get_origin(returned[0]) is list
        self._model: type[BaseModel] = get_args(returned[0])[0] if listed else returned[0]
        self._listed = listed
        self._nullable = type(None) in _members(self.returns)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments of a call by name (``TypeError`` as Python words it for a call that cannot bind)."""
        positional = self.positional
        if len(args) > len(positional):
            raise TypeError(
                f"{self.name}() takes {len(positional)} positional arguments but {len(args)} were given"
            )
        arguments = dict(zip(positional, args, strict=False)) if args else {}
        if kwargs:
            for name in kwargs:
                if name not in self.names or name in arguments:
                    why = (
                        "multiple values for argument"
                        if name in arguments
                        else "an unexpected keyword argument"
                    )
                    raise TypeError(f"{self.name}() got {why} {name!r}")
            arguments.update(kwargs)
        for name in self.required:
            if name not in arguments:
                raise TypeError(f"{self.name}() missing required argument: {name!r}")
        return arguments

    def _fields(self) -> list[tuple[str, Any, bool, bool]]:
        """Per parameter: its name, its wire type with its bounds, whether it is required, whether it may
        be omitted but not null (a default of ``UNSET`` on a type without ``None``)."""
        fields = []
        for parameter in self.parameters:
            wire = _wire_type(parameter.annotation)
            required = parameter.default is inspect.Parameter.empty
            bound = self._bounds.get(parameter.name)
            if bound is None and required and wire is str:
                bound = Field(min_length=1)
            not_null = parameter.default is UNSET and type(None) not in _members(wire) and wire is not Any
            fields.append(
                (parameter.name, wire if bound is None else Annotated[wire, bound], required, not_null)
            )
        return fields

    @property
    def request(self) -> type[MethodRequest]:
        """The pydantic model a server validates this method's keywords with (built on first use).

        The HTTP application validates (and documents) request bodies with it; the hot paths use
        ``validator``, the same fields as a ``TypedDict``, which pydantic validates several times faster.
        """
        if self._request is None:
            self._request = self._build_request()
        return self._request

    def _build_request(self) -> type[MethodRequest]:
        fields: dict[str, Any] = {}
        for name, wire, required, not_null in self._fields():
            if required:
                fields[name] = (wire, ...)
            else:
                default = self.signature.parameters[name].default
                omitted = wire if not not_null else Union[wire, SkipJsonSchema[None]]  # type: ignore[misc]  # noqa: UP007
                fields[name] = (omitted, None if default is UNSET else default)
        title = "".join(part.capitalize() for part in self.name.split("_")) + "Request"
        model: type[MethodRequest] = create_model(
            title, __base__=MethodRequest, __doc__=f"Keywords of ``{self.name}``.", **fields
        )
        model.not_null = frozenset(name for name, _, _, not_null in self._fields() if not_null)
        return model

    @property
    def validator(self) -> TypeAdapter[dict[str, Any]]:
        """The keywords' validator: the request's fields as a ``TypedDict`` (built on first use)."""
        if self._validator is None:
            keys = {
                name: Required[wire] if required else NotRequired[wire]
                for name, wire, required, _ in self._fields()
            }
            typed_dict: Any = TypedDict  # a class made at run time: not one a type checker can follow
            shape = typed_dict(f"{self.name}_keywords", keys, total=False)
            shape.__pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False)
            self._validator = TypeAdapter(shape)
            self._validate_keywords = self._validator.validator.validate_python
        return self._validator

    def arguments(self, fields: dict[str, Any], limits: ValueLimits) -> dict[str, Any]:
        """The keywords to call the served store with, from the decoded ``fields`` of a request.

        Every value passes the value rule first (``InvalidValueError`` naming its path; a model's fields
        are named ``span.attributes...``), then ``request`` validates them (a pydantic
        ``ValidationError``, also a ``ValueError``, naming the field) and builds the models. What the
        servers of every wire do before the store sees anything.
        """
        checked = {}
        for name, value in fields.items():
            if type(value) is dict and name in self.models:
                checked[name] = {
                    key: check_json(f"{name}.{key}", item, limits) for key, item in value.items()
                }
            else:
                checked[name] = check_json(name, value, limits)
        validate = self._validate_keywords
        if validate is None:
            validate = self.validator.validator.validate_python
        return validate(checked)

    def encode(self, result: Any) -> bytes:
        """The result as JSON; a result that is not of the method's type raises (it would not decode).

        Each model writes itself (its own serializer, in Rust): several times cheaper than the
        ``TypeAdapter`` checking the union on every call, and what the hot paths do most.
        """
        model = self._model
        if self._listed:
            if type(result) is list and all(isinstance(item, model) for item in result):
                return b"[" + b",".join(item.__pydantic_serializer__.to_json(item) for item in result) + b"]"
        elif isinstance(result, model):
            return result.__pydantic_serializer__.to_json(result)
        elif result is None and self._nullable:
            return b"null"
        raise TypeError(f"{self.name} returned {type(result).__name__} {result!r:.200}, not {self.returns}")

    def decode(self, raw: bytes | None) -> Any:
        """The result from its JSON (``None`` stands for JSON ``null``: the ipc wire's nil)."""
        return None if raw is None else self._validate_result(raw)

    def __repr__(self) -> str:
        return f"StoreMethod({self.name!r})"


def _all_terminal(arguments: Mapping[str, Any], result: Any) -> bool:
    return len(result) >= len(set(arguments["rollout_ids"]))


_TABLE: Final = (
    StoreMethod("start_rollout", idempotent=False),
    StoreMethod("enqueue_rollout", idempotent=False),
    StoreMethod("dequeue_rollout", idempotent=False),
    StoreMethod("start_attempt", idempotent=False),
    StoreMethod("update_rollout", idempotent=False),
    StoreMethod("query_rollouts", idempotent=True),
    StoreMethod("get_rollout_by_id", idempotent=True),
    StoreMethod(
        "wait_for_rollouts",
        idempotent=True,
        waits=True,
        done=_all_terminal,
        bounds={"timeout": Field(ge=0)},
    ),
    StoreMethod("query_attempts", idempotent=True),
    StoreMethod("get_latest_attempt", idempotent=True),
    StoreMethod("update_attempt", idempotent=False),
    StoreMethod("add_span", idempotent=False),
    StoreMethod("query_spans", idempotent=True),
    StoreMethod("add_resources", idempotent=False),
    StoreMethod("get_latest_resources", idempotent=True),
    StoreMethod("get_resources_by_id", idempotent=True),
)

METHODS: Final[Mapping[str, StoreMethod]] = types.MappingProxyType({method.name: method for method in _TABLE})
"""Every ``LightningStore`` method by name, in the order the interface declares them."""
