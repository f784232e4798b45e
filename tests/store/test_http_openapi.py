"""The store server against its own OpenAPI document, fuzzed by schemathesis on a live server (127.0.0.1).

Every operation the document lists gets generated requests, valid and invalid; every answer must be
documented (status code and content type), match its documented schema (error answers included: the
``{"error", "detail", ...}`` shape), and none may be a server error. Bounded: a few dozen examples per
operation, no shrinking phase beyond hypothesis's default, well under a minute in all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agentlightning.execution.events import ThreadingEvent
from agentlightning.execution.remote_stop import RunnerSides, stop_event_routes
from agentlightning.store.http import LightningStoreServer
from agentlightning.store.memory import InMemoryLightningStore

TOKEN = "schema-fuzzing-token-0123"
AUTH = {"authorization": f"Bearer {TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def server() -> Iterator[LightningStoreServer]:
    store = InMemoryLightningStore()
    # A few rollouts, so that generated ids sometimes miss and the store's own answers are exercised too.
    routes = stop_event_routes(ThreadingEvent(), RunnerSides())  # mounted routes are documented too
    with LightningStoreServer(store, token=TOKEN, routes=routes, max_wait_seconds=0.05) as serving:
        yield serving


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_answer_is_documented_and_no_input_is_a_server_error(
    server: LightningStoreServer, mode: str
) -> None:
    """Each operation: generated requests (schema-valid ones, then schema-violating ones) answered as
    documented. A failure names the operation and the request (hypothesis prints the case)."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    statuses: Counter[int] = Counter()
    for operation in operations:
        if mode == "negative" and len(operation.body) == 0:
            continue  # no body, no parameters: nothing to get wrong

        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def answers_as_documented(case: Any) -> None:
            response = case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=30)
            statuses[response.status_code] += 1

        answers_as_documented()
    # The fuzzer reached the store, and was refused too: both kinds of answer were checked.
    if mode == "positive":
        assert statuses[200] > 100 and sum(n for code, n in statuses.items() if code >= 400) > 0, statuses
    else:
        assert statuses[422] > 50, statuses
