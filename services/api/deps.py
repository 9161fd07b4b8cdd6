"""FastAPI dependencies: the shared context, the caller (API key), the rate limit."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from services.api.context import ApiContext, Principal
from services.api.errors import Forbidden

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="A tenant's API key.")


async def get_context(request: Request) -> ApiContext:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop on
    every request (measured: about a tenth of an accepted send's CPU)."""
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]


async def authenticated(
    request: Request, context: Context, key: Annotated[str | None, Security(API_KEY_HEADER)]
) -> Principal:
    """The caller, without charging the rate limit (send endpoints charge it knowing the priority)."""
    return await context.authenticate(key, caller_source(request))


def caller_source(request: Request) -> str:
    """Where a request comes from, as authentication failures are counted and throttled."""
    return request.client.host if request.client is not None else "unknown"


async def limited(context: Context, principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    """The caller, charged one request of its rate limit."""
    context.limit(principal)
    return principal


async def operator(principal: Annotated[Principal, Depends(limited)]) -> Principal:
    """The caller, who must hold an operator (admin) key; 403 otherwise."""
    if not principal.admin:
        raise Forbidden("only an operator (admin) key may change the global routing configuration")
    return principal


Caller = Annotated[Principal, Depends(limited)]
Operator = Annotated[Principal, Depends(operator)]
Sender = Annotated[Principal, Depends(authenticated)]
