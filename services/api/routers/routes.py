"""/v1/routes: the caller's provider routing per channel (create, read, list, replace, delete)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Path, Response

from services.api.deps import Caller, Context
from services.api.errors import Conflict, NotFound
from services.api.schemas.common import MAX_BIGINT
from services.api.schemas.routes import RouteIn, RouteList, RouteOut
from services.api.store import routes as store
from shared.logs import get_logger
from shared.models import Channel

log = get_logger("api.routes")
router = APIRouter(prefix="/v1/routes", tags=["routing"])
RouteId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]


def _duplicate(route: RouteIn) -> Conflict:
    return Conflict(f"{route.channel.value} is already routed to {route.provider!r}", code="duplicate_route")


@router.post("", status_code=201, response_model=RouteOut, summary="Add a provider to a channel's routing")
async def create_route(body: RouteIn, context: Context, principal: Caller) -> RouteOut:
    async with context.db.transaction() as conn:
        row = await store.insert_route(conn, principal.tenant, body)
    if row is None:
        raise _duplicate(body)
    log.info("route_created", tenant=principal.tenant, route_id=row["id"], channel=body.channel.value)
    return RouteOut(**dict(row))


@router.get("", response_model=RouteList, summary="List the routing, by channel and position")
async def list_routes(context: Context, principal: Caller, channel: Channel | None = None) -> RouteList:
    async with context.db.connection() as conn:
        rows = await store.list_routes(conn, principal.tenant, channel.value if channel else None)
    return RouteList(items=[RouteOut(**dict(r)) for r in rows])


@router.get("/{route_id:int}", response_model=RouteOut, summary="A route")
async def get_route(route_id: RouteId, context: Context, principal: Caller) -> RouteOut:
    async with context.db.connection() as conn:
        row = await store.get_route(conn, principal.tenant, route_id)
    if row is None:
        raise NotFound(f"no route {route_id}")
    return RouteOut(**dict(row))


@router.put("/{route_id:int}", response_model=RouteOut, summary="Replace a route")
async def replace_route(route_id: RouteId, body: RouteIn, context: Context, principal: Caller) -> RouteOut:
    try:
        async with context.db.transaction() as conn:
            row = await store.update_route(conn, principal.tenant, route_id, body)
    except asyncpg.UniqueViolationError as exc:
        raise _duplicate(body) from exc
    if row is None:
        raise NotFound(f"no route {route_id}")
    log.info("route_updated", tenant=principal.tenant, route_id=route_id)
    return RouteOut(**dict(row))


@router.delete("/{route_id:int}", status_code=204, response_class=Response, summary="Delete a route")
async def delete_route(route_id: RouteId, context: Context, principal: Caller) -> Response:
    async with context.db.transaction() as conn:
        deleted = await store.delete_route(conn, principal.tenant, route_id)
    if not deleted:
        raise NotFound(f"no route {route_id}")
    log.info("route_deleted", tenant=principal.tenant, route_id=route_id)
    return Response(status_code=204)
