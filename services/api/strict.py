"""Strictness that the published schema implies: no unknown query parameters, a true Allow header."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.routing import Match

from services.api.errors import ErrorDetail, Unprocessable

METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


QueryNames = dict[tuple[str, str], tuple[frozenset[str], frozenset[str]]]


def query_names(app: FastAPI) -> QueryNames:
    """(METHOD, path) -> (the query parameter names the OpenAPI document declares, those of them that
    are arrays and so may repeat), worked out once."""
    cached: QueryNames | None = getattr(app.state, "query_names", None)
    if cached is not None:
        return cached
    names: QueryNames = {}
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            query = [p for p in operation.get("parameters", []) if p.get("in") == "query"]
            arrays = [p["name"] for p in query if _is_array(p.get("schema", {}))]
            names[(method.upper(), path)] = (frozenset(p["name"] for p in query), frozenset(arrays))
    app.state.query_names = names
    return names


def _is_array(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "array":
        return True
    return any(_is_array(option) for option in schema.get("anyOf", []))


async def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the operation does not have (a typo must not silently widen a list)."""
    if not request.query_params:
        return
    route: Any = request.scope.get("route")
    path = str(getattr(route, "path_format", ""))
    allowed, arrays = query_names(request.app).get((request.method, path), (frozenset(), frozenset()))
    unknown = sorted({name for name in request.query_params if name not in allowed})
    if unknown:
        details = [ErrorDetail(loc=["query", name], message="unknown query parameter") for name in unknown]
        shown = ", ".join(repr(n) for n in unknown[:5])
        raise Unprocessable(f"unknown query parameter(s): {shown}", code="unknown_parameter", details=details)
    # A scalar given twice would silently use one of the values: refuse it like a typo.
    repeated = sorted(
        {
            name
            for name in request.query_params
            if name not in arrays and len(request.query_params.getlist(name)) > 1
        }
    )
    if repeated:
        details = [ErrorDetail(loc=["query", name], message="given more than once") for name in repeated]
        shown = ", ".join(repr(n) for n in repeated[:5])
        raise Unprocessable(
            f"query parameter(s) given more than once: {shown}", code="repeated_parameter", details=details
        )


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette lists only the first matching route's)."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    return ", ".join(allowed)
