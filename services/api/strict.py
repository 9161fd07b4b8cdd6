"""Strictness that the published schema implies: no unknown query parameters, a true Allow header."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.routing import Match

from services.api.errors import ErrorDetail, Unprocessable

METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def query_names(app: FastAPI) -> dict[tuple[str, str], frozenset[str]]:
    """(METHOD, path) -> the query parameter names the OpenAPI document declares (worked out once)."""
    cached: dict[tuple[str, str], frozenset[str]] | None = getattr(app.state, "query_names", None)
    if cached is not None:
        return cached
    names: dict[tuple[str, str], frozenset[str]] = {}
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            declared = [p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"]
            names[(method.upper(), path)] = frozenset(declared)
    app.state.query_names = names
    return names


async def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the operation does not have (a typo must not silently widen a list)."""
    if not request.query_params:
        return
    route: Any = request.scope.get("route")
    path = str(getattr(route, "path_format", ""))
    allowed = query_names(request.app).get((request.method, path), frozenset())
    unknown = sorted({name for name in request.query_params if name not in allowed})
    if unknown:
        details = [ErrorDetail(loc=["query", name], message="unknown query parameter") for name in unknown]
        shown = ", ".join(repr(n) for n in unknown[:5])
        raise Unprocessable(f"unknown query parameter(s): {shown}", code="unknown_parameter", details=details)


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette lists only the first matching route's)."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    return ", ".join(allowed)
