"""The one shape of every error the store server answers: ``{"error": code, "detail": message, ...}``.

``error`` is a short, stable word a program can branch on; ``detail`` is for people. Some answers add
fields naming what they are about (``rollout_id``, ``attempt_id``, ``field``, ``request_id``). An
unexpected failure (500) carries a ``request_id`` that the server logs with the traceback, never the
failure's own text. The OpenAPI document describes every error answer with ``ErrorBody``.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["ERROR_RESPONSES", "ApiError", "ErrorBody", "error_json", "internal_error"]


class ErrorBody(BaseModel):
    """An error answer of the store server."""

    model_config = ConfigDict(extra="allow")

    error: str
    """Stable code: ``invalid_json``, ``invalid_request``, ``invalid_value``, ``not_found``, ``conflict``,
    ``unauthorized``, ``bad_request``, ``payload_too_large``, ``too_many_elements``, ``busy``,
    ``internal_error``, ..."""
    detail: str
    """What was wrong, for people."""
    rollout_id: str | None = None
    rollout_ids: list[str] | None = None
    attempt_id: str | None = None
    field: str | None = None
    """The path of the refused value (``input.items.3``) when a value was refused."""
    request_id: str | None = None
    """The id under which the server logged an unexpected failure."""


def error_json(code: str, detail: str, **extra: Any) -> bytes:
    """The JSON body of an error answer."""
    return json.dumps({"error": code, "detail": detail, **extra}).encode()


class ApiError(Exception):
    """An error answer raised from anywhere in the server; turned into its JSON body by the server."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra

    def body(self) -> bytes:
        return error_json(self.code, self.detail, **self.extra)


def internal_error(logger: logging.Logger, what: str, exc: BaseException) -> ApiError:
    """A 500 for an unexpected failure: logged here with its traceback under a fresh request id, which
    is all the answer tells (internal text stays in the server's log)."""
    request_id = secrets.token_hex(8)
    logger.error("request %s: %s failed unexpectedly", request_id, what, exc_info=exc)
    return ApiError(
        500,
        "internal_error",
        f"the store server failed unexpectedly; its log has the details under request id {request_id}",
        request_id=request_id,
    )


_ERROR_STATUSES = {
    400: "Malformed JSON or request",
    401: "Missing or wrong token",
    404: "Unknown rollout, attempt or route",
    409: "The store refused the change (illegal transition)",
    413: "Body too large, or more JSON elements than allowed",
    422: "Wrong, missing or refused fields (named)",
    500: "Unexpected server failure (see request_id in the server log)",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in _ERROR_STATUSES.items()
}
"""FastAPI ``responses=`` for every route: each error status, described by ``ErrorBody``."""
