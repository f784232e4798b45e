"""The store's value rule (``agentlightning.store.values``) and the reference store applying it (T5).

Finding 1 of the store-hardening work: poison values (a lone surrogate, NaN, bytes, 300-deep nesting) were
accepted and stored, after which every read that included them failed. Each is refused here with an error
naming the field, and the store is left exactly as it was.
"""

from __future__ import annotations

import asyncio
import math
import pickle
from typing import Any

import pytest

from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.values import (
    DEFAULT_LIMITS,
    InvalidValueError,
    ValueLimits,
    check_json,
    check_span,
    check_text,
)
from agentlightning.types import Span


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


POISON: list[tuple[str, Any, str]] = [
    ("lone-surrogate", {"text": "half \ud83d of an emoji"}, "['text']"),
    ("nan", {"score": math.nan}, "['score']"),
    ("infinity", {"score": -math.inf}, "['score']"),
    ("bytes", {"blob": b"\xff\xfe"}, "['blob']"),
    ("deep", {"tree": _nested(300)}, "['tree']"),
    ("int-key", {1: "one"}, "[1]"),
    ("surrogate-key", {"\udc80": 1}, "['\\udc80']"),
    ("huge-int", {"n": 2**64}, "['n']"),
    ("set", {"tags": {"a"}}, "['tags']"),
]


class TestRule:
    @pytest.mark.parametrize(("name", "value", "path"), POISON, ids=[p[0] for p in POISON])
    def test_T5_poison_is_refused_naming_the_field_path(self, name: str, value: Any, path: str) -> None:
        with pytest.raises(InvalidValueError) as caught:
            check_json("metadata", value)
        assert caught.value.field.startswith("metadata" + path)
        assert str(caught.value).startswith(caught.value.field + ": ")
        # The message itself is safe to carry anywhere: encodable, no raw surrogate.
        str(caught.value).encode("utf-8")

    def test_T5_accepted_values_are_fresh_copies_and_tuples_become_lists(self) -> None:
        value = {"a": [1, 2.5, None, True, ("x", "y")], "b": {"c": "é"}}
        checked = check_json("input", value)
        assert checked == {"a": [1, 2.5, None, True, ["x", "y"]], "b": {"c": "é"}}
        checked["b"]["c"] = "changed"
        checked["a"].append(3)
        assert value == {"a": [1, 2.5, None, True, ("x", "y")], "b": {"c": "é"}}

    def test_atoms_pass_through(self) -> None:
        for atom in (None, True, 0, -(2**63), 2**63 - 1, 1.5, "", "plain", "ünïcödé 🎉"):
            assert check_json("input", atom) == atom

    def test_depth_limit_counts_containers(self) -> None:
        limits = ValueLimits(max_depth=3)
        assert check_json("input", _nested(3), limits) == _nested(3)
        with pytest.raises(InvalidValueError, match=r"^input\[0\]\[0\]\[0\]: nested deeper than 3"):
            check_json("input", _nested(4), limits)

    def test_items_limit_counts_containers_and_atoms(self) -> None:
        limits = ValueLimits(max_items=4)
        assert check_json("input", [1, 2, 3], limits) == [1, 2, 3]  # the list and three atoms
        with pytest.raises(InvalidValueError, match=r"more than 4 values \(ValueLimits.max_items\)"):
            check_json("input", [1, [2], 3], limits)

    def test_an_amplifying_value_is_refused_before_it_is_copied(self) -> None:
        with pytest.raises(InvalidValueError, match="max_items"):
            check_json("input", [{}] * (DEFAULT_LIMITS.max_items + 1))

    def test_text_limit_counts_utf8_bytes_of_strings_and_keys(self) -> None:
        limits = ValueLimits(max_text_bytes=4)
        assert check_json("input", {"ab": "cd"}, limits) == {"ab": "cd"}
        assert check_json("input", {"ab": "é"}, limits) == {"ab": "é"}  # 2 + 2 UTF-8 bytes
        with pytest.raises(InvalidValueError, match="max_text_bytes"):
            check_json("input", {"ab": "éa"}, limits)
        with pytest.raises(InvalidValueError, match="max_text_bytes"):
            check_json("input", "éééé", limits)

    @pytest.mark.parametrize(
        ("name", "value"),
        [("max_depth", 0), ("max_depth", 10_000), ("max_items", -1), ("max_text_bytes", True)],
    )
    def test_limits_are_validated_naming_the_parameter(self, name: str, value: Any) -> None:
        with pytest.raises(ValueError, match=rf"ValueLimits\.{name} must be"):
            ValueLimits(**{name: value})

    def test_check_text(self) -> None:
        assert check_text("worker_id", "w-1") == "w-1"
        with pytest.raises(InvalidValueError, match=r"^worker_id: string holds a lone surrogate"):
            check_text("worker_id", "w\ud800")

    def test_check_span_checks_names_times_and_attributes(self) -> None:
        span = Span(rollout_id="ro", attempt_id="at", span_id="s", attributes={"k": [1, (2, 3)]})
        assert check_span(span)["attributes"] == {"k": [1, [2, 3]]}
        with pytest.raises(InvalidValueError, match=r"^span\.name: "):
            check_span(Span(rollout_id="ro", attempt_id="at", span_id="s", name="\udfff"))
        with pytest.raises(InvalidValueError, match=r"^span\.attributes\['k'\]: "):
            check_span(Span(rollout_id="ro", attempt_id="at", span_id="s", attributes={"k": math.nan}))
        constructed = Span.model_construct(
            rollout_id="ro", attempt_id="at", span_id="s", start_time=math.inf, attributes={}
        )
        with pytest.raises(InvalidValueError, match=r"^span\.start_time: "):
            check_span(constructed)

    def test_the_error_survives_pickling(self) -> None:
        error = InvalidValueError("metadata['a']", "nan is not JSON-representable")
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), copy.field, copy.reason, str(copy)) == (
            InvalidValueError,
            error.field,
            error.reason,
            str(error),
        )


async def _snapshot(store: InMemoryLightningStore) -> list[Any]:
    rollouts = await store.query_rollouts()
    return [
        [r.model_dump() for r in rollouts],
        [[a.model_dump() for a in await store.query_attempts(r.rollout_id)] for r in rollouts],
        [[s.model_dump() for s in await store.query_spans(r.rollout_id)] for r in rollouts],
        None if (latest := await store.get_latest_resources()) is None else latest.model_dump(),
    ]


class TestReferenceStore:
    """Every way a value enters the reference store refuses poison, names the field and changes nothing."""

    @pytest.mark.parametrize(("name", "value", "path"), POISON, ids=[p[0] for p in POISON])
    def test_T5_poison_is_refused_at_every_entry_and_changes_nothing(
        self, name: str, value: Any, path: str
    ) -> None:
        async def scenario() -> None:
            store = InMemoryLightningStore()
            await store.enqueue_rollout("ok", metadata={"fine": 1})
            claimed = await store.dequeue_rollout()
            assert claimed is not None
            rid, aid = claimed.rollout_id, claimed.attempt.attempt_id
            await store.add_resources({"model": "m"})
            before = await _snapshot(store)
            writes = {
                "enqueue_rollout.input": store.enqueue_rollout(value),
                "enqueue_rollout.metadata": store.enqueue_rollout("x", metadata=value),
                "start_rollout.input": store.start_rollout(value),
                "update_rollout.input": store.update_rollout(rid, input=value),
                "update_rollout.metadata": store.update_rollout(rid, metadata=value),
                "update_attempt.metadata": store.update_attempt(rid, aid, metadata=value),
                # Built without the model's checks, as a foreign caller's span may be.
                "add_span.attributes": store.add_span(
                    Span.model_construct(rollout_id=rid, attempt_id=aid, span_id="s", attributes=value)
                ),
                "add_resources": store.add_resources(value),
            }
            for where, write in writes.items():
                with pytest.raises(InvalidValueError) as caught:
                    await write
                field = caught.value.field
                expected = {
                    "input": "input",
                    "metadata": "metadata",
                    "attributes": "span.attributes",
                    "add_resources": "resources",
                }[where.rsplit(".", 1)[-1]]
                assert field.startswith(expected + path), (where, field)
                assert await _snapshot(store) == before, f"{where} changed the store"
            # Every read still works, and the claimed rollout can still be finished.
            await store.update_attempt(rid, aid, status="succeeded")
            assert [r.status for r in await store.wait_for_rollouts(rollout_ids=[rid], timeout=0)] == [
                "succeeded"
            ]

        asyncio.run(scenario())

    def test_T5_a_surrogate_in_a_string_field_is_refused(self) -> None:
        async def scenario() -> None:
            store = InMemoryLightningStore()
            claimed = await store.start_rollout("x")
            with pytest.raises(InvalidValueError, match=r"^worker_id: "):
                await store.update_attempt(claimed.rollout_id, "latest", worker_id="w\ud800")
            with pytest.raises(InvalidValueError, match=r"^resources_id: "):
                await store.enqueue_rollout("x", resources_id="\ud800")
            span = Span.model_construct(
                rollout_id=claimed.rollout_id, attempt_id="latest", span_id="\udc00", attributes={}
            )
            with pytest.raises(InvalidValueError, match=r"^span\.span_id: "):
                await store.add_span(span)
            assert (await store.get_latest_attempt(claimed.rollout_id)).worker_id is None  # type: ignore[union-attr]
            assert len(await store.query_rollouts()) == 1

        asyncio.run(scenario())

    def test_limits_are_the_stores_own(self) -> None:
        async def scenario() -> None:
            store = InMemoryLightningStore(limits=ValueLimits(max_depth=2))
            await store.enqueue_rollout([[1]])
            with pytest.raises(InvalidValueError, match=r"^input\[0\]\[0\]: nested deeper than 2"):
                await store.enqueue_rollout([[[1]]])

        asyncio.run(scenario())

    def test_limits_must_be_value_limits(self) -> None:
        with pytest.raises(TypeError, match="limits must be a ValueLimits"):
            InMemoryLightningStore(limits={"max_depth": 3})  # type: ignore[arg-type]

    def test_T5_values_read_back_equal_and_tuples_as_lists(self) -> None:
        async def scenario() -> None:
            store = InMemoryLightningStore()
            value = {"t": (1, "two", {"three": 3.0}), "u": "ünï 🎉", "n": None}
            rollout = await store.enqueue_rollout(value, metadata=value)
            expected = {"t": [1, "two", {"three": 3.0}], "u": "ünï 🎉", "n": None}
            got = await store.get_rollout_by_id(rollout.rollout_id)
            assert got is not None and got.input == expected and got.metadata == expected

        asyncio.run(scenario())
