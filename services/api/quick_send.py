"""A quick path through ``POST /v1/messages`` for the well-formed request of an urgent send.

FastAPI's dependency solving costs a well-formed single send about a third of its CPU (py-spy,
docs/benchmark.md). The route keeps its FastAPI declaration (OpenAPI, validation, errors), and its
handler first tries the plain way: no query string, a JSON body that the same model validates, at
most one well-formed Idempotency-Key. Anything else goes through the full FastAPI handler, which
answers exactly as before (the request body is read once and kept on the request, so the full
handler sees the same bytes). The caller is authenticated the same way in both (the same
:meth:`ApiContext.authenticate` with the same source, so failures count toward the same throttle,
before any side effect), and the send itself is one function for both.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from services.api.context import ApiContext, Principal
from services.api.deps import caller_source
from services.api.schemas.messages import SendMessage

IDEMPOTENCY_HEADER = "idempotency-key"
API_KEY_HEADER = "x-api-key"
# The Idempotency-Key header's declared constraints (routers/messages.py): 1-255 printable ASCII.
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")

Send = Callable[[ApiContext, Principal, SendMessage, str | None], Awaitable[Response]]


def is_json(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"


async def plain_send(request: Request) -> tuple[SendMessage, str | None] | None:
    """The message and its Idempotency-Key when the request is the plain, well-formed kind; else None."""
    if request.scope.get("query_string") or not is_json(request.headers.get("content-type")):
        return None
    keys = request.headers.getlist(IDEMPOTENCY_HEADER)
    if len(keys) > 1 or (keys and not IDEMPOTENCY_KEY.fullmatch(keys[0])):
        return None
    if not await request.body():
        return None
    try:
        body = SendMessage.model_validate(await request.json())
    except (ValueError, ValidationError):  # json.JSONDecodeError is a ValueError
        return None
    return body, keys[0] if keys else None


def quick_route(send: Send) -> type[APIRoute]:
    """An APIRoute class whose handler runs ``send`` directly for a plain request (see the module)."""

    class QuickSendRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            full = super().get_route_handler()

            async def handler(request: Request) -> Response:
                plain = await plain_send(request)
                if plain is None:
                    return await full(request)
                context: ApiContext = request.app.state.context
                key = request.headers.get(API_KEY_HEADER) or None
                principal = await context.authenticate(key, caller_source(request))
                body, idempotency_key = plain
                return await send(context, principal, body, idempotency_key)

            return handler

    return QuickSendRoute
