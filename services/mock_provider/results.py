"""What a submission to the mock provider came to, and the JSON answers every emulated API shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from services.mock_provider.behaviour import Answer, Verdict


@dataclass(frozen=True, slots=True)
class Accepted:
    response: dict[str, Any]  # {"id", "status", "cost", "replay"}


@dataclass(frozen=True, slots=True)
class Refused:
    answer: Answer


OUTAGE = Answer(Verdict.OUTAGE, 503, "PROVIDER_UNAVAILABLE", "provider is unavailable", 5.0)
# What a provider answers during an outage (POST /admin/outage {"answer": ...}): 503 by default, or
# a provider that is up but fails every request with a 500.
OUTAGE_ANSWERS = {
    "unavailable": OUTAGE,
    "server_error": Answer(Verdict.OUTAGE, 500, "SERVER_ERROR", "internal server error"),
}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(error_body(code, message), status, headers)


def batch_error(status: int, code: str, message: str, retry_after_s: float | None = None) -> dict[str, Any]:
    """One refused message of a bulk answer: the single API's error body, its status and Retry-After."""
    result: dict[str, Any] = {"http_status": status, **error_body(code, message)}
    if retry_after_s is not None:
        result["retry_after"] = retry_after_s
    return result


def retry_after_header(answer: Answer) -> dict[str, str] | None:
    return {"Retry-After": f"{answer.retry_after_s:g}"} if answer.retry_after_s is not None else None
