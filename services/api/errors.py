"""The API's errors and the one error body every failure is answered with.

ApiError (4xx/5xx with a code and a clear message)
 ├── BadRequest (400)
 ├── Unauthorized (401)
 ├── Forbidden (403)
 ├── NotFound (404)
 ├── Conflict (409)
 ├── PayloadTooLarge (413)
 ├── Unprocessable (422)
 ├── RateLimitExceeded (429, Retry-After)
 └── ServiceUnavailable (503, Retry-After)
      └── DatabaseUnavailable
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(default_factory=list, description="Where in the request the problem is.")
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(description="A stable, machine-readable error code.")
    message: str = Field(description="What went wrong, for a human.")
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """Every non-2xx answer of the API has this shape."""

    error: ErrorInfo


class ApiError(Exception):
    """An answer other than success, carried out by the exception handler."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: list[ErrorDetail] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or type(self).code
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        info = ErrorInfo(code=self.code, message=self.message, details=self.details)
        return ErrorBody(error=info).model_dump(mode="json")


class BadRequest(ApiError):
    """The request cannot be understood (malformed JSON, a bad cursor)."""

    status_code = 400
    code = "bad_request"


class Unauthorized(ApiError):
    """No API key, or one that is unknown or revoked."""

    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})


class Forbidden(ApiError):
    """A valid key that may not do this (a tenant key changing the global routing configuration)."""

    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    """Nothing of that id for the caller's tenant."""

    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    """The request contradicts the current state (a reused key, a finished message, a duplicate name)."""

    status_code = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    """The request body is larger than the configured limit."""

    status_code = 413
    code = "payload_too_large"


class Unprocessable(ApiError):
    """Well-formed but invalid input."""

    status_code = 422
    code = "validation_error"


class RateLimitExceeded(ApiError):
    """The key used up its request budget; retry after the given number of seconds."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, retry_after_s: float) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(f"rate limit exceeded; retry in {seconds} s", headers={"Retry-After": str(seconds)})


class ServiceUnavailable(ApiError):
    """A dependency is down; the API recovers by itself."""

    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class DatabaseUnavailable(ServiceUnavailable):
    """PostgreSQL cannot be reached right now."""

    code = "database_unavailable"


def _doc(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": ErrorBody, "description": description}
    if headers:
        entry["headers"] = headers
    return entry


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
}

# Documented on the operations that only operator (admin) keys may call.
FORBIDDEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: _doc("The key is not an operator (admin) key."),
}

# Documented on every operation, so clients (and schemathesis) know every answer the API may give.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _doc("Malformed request."),
    401: _doc("Missing, unknown or revoked API key."),
    404: _doc("No such resource for this tenant."),
    405: _doc("Method not allowed."),
    409: _doc("Conflicts with the current state."),
    413: _doc("Request body too large."),
    415: _doc("Unsupported content type."),
    422: _doc("Invalid input."),
    429: _doc("Rate limit exceeded.", _RETRY_AFTER),
    503: _doc("A dependency (PostgreSQL) is unavailable; retry later.", _RETRY_AFTER),
}
