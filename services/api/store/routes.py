"""provider_routes rows of one tenant (the defaults, tenant NULL, are the operators')."""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from services.api.schemas.routes import RouteIn

_COLUMNS = """id, channel, provider, position, active, weight, cost_per_message::float8 AS cost_per_message,
rate_limit_per_s, burst, created_at, updated_at"""


def _cost(route: RouteIn) -> Decimal:
    return Decimal(str(round(route.cost_per_message, 6)))


async def insert_route(conn: asyncpg.Connection, tenant: str, route: RouteIn) -> asyncpg.Record | None:
    """The new row, or ``None`` if the tenant already routes that channel to that provider."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "INSERT INTO provider_routes (tenant, channel, provider, position, active, weight, cost_per_message,"
        " rate_limit_per_s, burst) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        f" ON CONFLICT (tenant, channel, provider) DO NOTHING RETURNING {_COLUMNS}",
        tenant,
        route.channel.value,
        route.provider,
        route.position,
        route.active,
        route.weight,
        _cost(route),
        route.rate_limit_per_s,
        route.burst,
    )
    return row


async def update_route(
    conn: asyncpg.Connection, tenant: str, route_id: int, route: RouteIn
) -> asyncpg.Record | None:
    """The updated row, or ``None`` if there is no such route. Raises UniqueViolationError on a clash."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE provider_routes SET channel = $3, provider = $4, position = $5, active = $6, weight = $7,"
        " cost_per_message = $8, rate_limit_per_s = $9, burst = $10, updated_at = now()"
        f" WHERE tenant = $1 AND id = $2 RETURNING {_COLUMNS}",
        tenant,
        route_id,
        route.channel.value,
        route.provider,
        route.position,
        route.active,
        route.weight,
        _cost(route),
        route.rate_limit_per_s,
        route.burst,
    )
    return row


async def get_route(conn: asyncpg.Connection, tenant: str, route_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM provider_routes WHERE tenant = $1 AND id = $2", tenant, route_id
    )
    return row


async def list_routes(conn: asyncpg.Connection, tenant: str, channel: str | None) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"SELECT {_COLUMNS} FROM provider_routes WHERE tenant = $1 AND ($2::text IS NULL OR channel = $2)"
            " ORDER BY channel, position, provider LIMIT 1000",
            tenant,
            channel,
        )
    )


async def delete_route(conn: asyncpg.Connection, tenant: str, route_id: int) -> bool:
    status = await conn.execute("DELETE FROM provider_routes WHERE tenant = $1 AND id = $2", tenant, route_id)
    return bool(status == "DELETE 1")
