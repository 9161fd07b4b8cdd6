"""Exception handlers: every failure leaves as an :class:`ErrorBody` with the right status."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from services.api.errors import ApiError, BadRequest, Conflict, ErrorDetail, Unprocessable
from services.api.strict import allowed_methods
from shared.runtime.logs import get_logger

log = get_logger("api.errors")


def _respond(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


def validation_error(exc: RequestValidationError) -> ApiError:
    """422 with one detail per problem; a body that is not JSON at all is a 400."""
    errors: list[dict[str, Any]] = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return BadRequest("the request body is not valid JSON", code="malformed_json")
    details = [
        ErrorDetail(
            loc=[p if isinstance(p, int) else str(p) for p in e.get("loc", ())], message=str(e.get("msg"))
        )
        for e in errors
    ]
    summary = "; ".join(f"{'.'.join(str(p) for p in d.loc)}: {d.message}" for d in details[:5])
    return Unprocessable(f"invalid request: {summary}", details=details)


_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def http_error(exc: HTTPException) -> ApiError:
    code = _CODES.get(exc.status_code) or HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    error = ApiError(str(exc.detail), code=code, headers=dict(exc.headers or {}))
    error.status_code = exc.status_code
    return error


def install(app: FastAPI) -> None:
    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _respond(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _respond(validation_error(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        error = http_error(exc)
        if exc.status_code == 405:
            error.headers["Allow"] = allowed_methods(request)
        return _respond(error)

    # Safety nets: input that slipped past validation is still the client's, never a 500.
    async def on_data_error(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database_rejected_input", path=request.url.path, error=repr(exc)[:300])
        return _respond(Unprocessable(f"invalid value: {exc}", code="invalid_data"))

    async def on_unique(request: Request, exc: Exception) -> JSONResponse:
        log.warning("unique_violation", path=request.url.path, error=repr(exc)[:300])
        return _respond(Conflict("conflicts with an existing resource"))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", path=request.url.path, error=repr(exc)[:500], exc_info=exc)
        return _respond(ApiError("internal error"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(asyncpg.DataError, on_data_error)
    app.add_exception_handler(asyncpg.UniqueViolationError, on_unique)
    # A check or foreign key the validation did not foresee (or a row deleted meanwhile): still a 4xx.
    app.add_exception_handler(asyncpg.IntegrityConstraintViolationError, on_data_error)
    app.add_exception_handler(Exception, on_unexpected)
