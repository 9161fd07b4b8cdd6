"""The routing configuration senders and responders read (migration 0003's tables).

``providers``, ``channel_routes`` and ``channel_policies`` are global (operators'); ``tenant_routes``
rows are always read and written for one tenant. Every write bumps ``routing_version`` through the
tables' triggers, so running senders and responders reload within ``SWITCHBOARD_ROUTING_REFRESH_S``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from services.api.schemas.routing import ChannelRouteIn, OverrideIn, PolicyIn, ProviderIn

_PROVIDER_COLUMNS = """p.name, p.kind, p.active, p.rate_per_s, p.burst, p.reserved_share, p.pacing,
p.pacing_gap_ms, p.settings, p.idempotency_keys, p.in_doubt, p.receipt_timeout_s, p.updated_at,
coalesce(array(SELECT cr.channel FROM channel_routes cr WHERE cr.provider = p.name ORDER BY cr.channel),
         '{}') AS channels"""
_ROUTE_COLUMNS = """r.channel, r.provider, p.kind, r.priority, r.weight, r.cost::float8 AS cost, r.active,
r.destinations, p.active AS provider_active, r.updated_at"""
_POLICY_COLUMNS = """channel, strategy, retry_mode, retry_initial_s, retry_max_s, retry_max_attempts,
retry_delays_s, max_cost::float8 AS max_cost, min_success_rate, failover_after, retry_after_tolerance_s,
updated_at"""
_OVERRIDE_COLUMNS = """t.channel, t.provider, t.priority, t.active,
EXISTS (SELECT 1 FROM channel_routes r WHERE r.channel = t.channel AND r.provider = t.provider) AS routed"""


def _money(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(round(value, 6)))


# ---- providers -----------------------------------------------------------------------------------------


async def list_providers(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch(f"SELECT {_PROVIDER_COLUMNS} FROM providers p ORDER BY p.name LIMIT 1000"))


async def get_provider(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_PROVIDER_COLUMNS} FROM providers p WHERE p.name = $1", name
    )
    return row


async def routed_channels(conn: asyncpg.Connection, name: str) -> list[str] | None:
    """The channels routing to ``name`` (its row locked for the transaction); None: no such provider."""
    if await conn.fetchval("SELECT 1 FROM providers WHERE name = $1 FOR UPDATE", name) is None:
        return None
    rows = await conn.fetch("SELECT channel FROM channel_routes WHERE provider = $1 ORDER BY channel", name)
    return [r["channel"] for r in rows]


async def upsert_provider(conn: asyncpg.Connection, name: str, body: ProviderIn) -> bool:
    """Create or replace provider ``name``; True when it was created."""
    created: bool = await conn.fetchval(
        "INSERT INTO providers (name, kind, active, rate_per_s, burst, reserved_share, pacing, pacing_gap_ms,"
        " settings, idempotency_keys, in_doubt, receipt_timeout_s)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        " ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, active = EXCLUDED.active,"
        " rate_per_s = EXCLUDED.rate_per_s, burst = EXCLUDED.burst, reserved_share = EXCLUDED.reserved_share,"
        " pacing = EXCLUDED.pacing, pacing_gap_ms = EXCLUDED.pacing_gap_ms, settings = EXCLUDED.settings,"
        " idempotency_keys = EXCLUDED.idempotency_keys, in_doubt = EXCLUDED.in_doubt,"
        " receipt_timeout_s = EXCLUDED.receipt_timeout_s, updated_at = now()"
        " RETURNING xmax = 0",
        name,
        body.kind.value,
        body.active,
        body.rate_per_s,
        body.burst,
        body.reserved_share,
        body.pacing.value,
        body.pacing_gap_ms,
        dict(body.settings),
        body.idempotency_keys,
        body.in_doubt,
        body.receipt_timeout_s,
    )
    return created


async def delete_provider(conn: asyncpg.Connection, name: str) -> None:
    """Delete provider ``name`` (its tenant overrides go with it); the caller checked it is unrouted."""
    await conn.execute("DELETE FROM providers WHERE name = $1", name)


# ---- channels: routes and policies ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a channel view needs, read in one repeatable-read transaction."""

    providers: list[asyncpg.Record]  # name, kind, active
    routes: list[asyncpg.Record]
    policies: list[asyncpg.Record]
    overrides: list[asyncpg.Record]  # the tenant's


async def snapshot(conn: asyncpg.Connection, tenant: str, channel: str | None) -> Snapshot:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        providers = await conn.fetch("SELECT name, kind, active FROM providers")
        routes = await conn.fetch(
            f"SELECT {_ROUTE_COLUMNS} FROM channel_routes r JOIN providers p ON p.name = r.provider"
            " WHERE $1::text IS NULL OR r.channel = $1 ORDER BY r.channel, r.priority, r.provider",
            channel,
        )
        policies = await conn.fetch(
            f"SELECT {_POLICY_COLUMNS} FROM channel_policies WHERE $1::text IS NULL OR channel = $1", channel
        )
        overrides = await conn.fetch(
            "SELECT channel, provider, priority, active FROM tenant_routes"
            " WHERE tenant = $1 AND ($2::text IS NULL OR channel = $2)",
            tenant,
            channel,
        )
    return Snapshot(list(providers), list(routes), list(policies), list(overrides))


async def upsert_policy(conn: asyncpg.Connection, channel: str, body: PolicyIn) -> None:
    await conn.execute(
        "INSERT INTO channel_policies (channel, strategy, retry_mode, retry_initial_s, retry_max_s,"
        " retry_max_attempts, retry_delays_s, max_cost, min_success_rate, failover_after,"
        " retry_after_tolerance_s) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT (channel) DO UPDATE SET strategy = EXCLUDED.strategy, retry_mode = EXCLUDED.retry_mode,"
        " retry_initial_s = EXCLUDED.retry_initial_s, retry_max_s = EXCLUDED.retry_max_s,"
        " retry_max_attempts = EXCLUDED.retry_max_attempts, retry_delays_s = EXCLUDED.retry_delays_s,"
        " max_cost = EXCLUDED.max_cost, min_success_rate = EXCLUDED.min_success_rate,"
        " failover_after = EXCLUDED.failover_after,"
        " retry_after_tolerance_s = EXCLUDED.retry_after_tolerance_s, updated_at = now()",
        channel,
        body.strategy.value,
        body.retry_mode.value if body.retry_mode else None,
        body.retry_initial_s,
        body.retry_max_s,
        body.retry_max_attempts,
        body.retry_delays_s,
        _money(body.max_cost),
        body.min_success_rate,
        body.failover_after,
        body.retry_after_tolerance_s,
    )


async def get_policy(conn: asyncpg.Connection, channel: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_POLICY_COLUMNS} FROM channel_policies WHERE channel = $1", channel
    )
    return row


async def provider_kind(conn: asyncpg.Connection, name: str) -> str | None:
    """The kind of provider ``name``, its row share-locked (no kind change or delete meanwhile)."""
    kind: str | None = await conn.fetchval("SELECT kind FROM providers WHERE name = $1 FOR SHARE", name)
    return kind


async def upsert_route(conn: asyncpg.Connection, channel: str, provider: str, body: ChannelRouteIn) -> bool:
    """Create or replace the route of ``channel`` to ``provider``; True when it was created."""
    created: bool = await conn.fetchval(
        "INSERT INTO channel_routes (channel, provider, priority, weight, cost, active, destinations)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (channel, provider) DO UPDATE SET priority = EXCLUDED.priority,"
        " weight = EXCLUDED.weight, cost = EXCLUDED.cost, active = EXCLUDED.active,"
        " destinations = EXCLUDED.destinations, updated_at = now()"
        " RETURNING xmax = 0",
        channel,
        provider,
        body.priority,
        body.weight,
        _money(body.cost),
        body.active,
        body.destinations,
    )
    return created


async def get_route(conn: asyncpg.Connection, channel: str, provider: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_ROUTE_COLUMNS} FROM channel_routes r JOIN providers p ON p.name = r.provider"
        " WHERE r.channel = $1 AND r.provider = $2",
        channel,
        provider,
    )
    return row


async def delete_route(conn: asyncpg.Connection, channel: str, provider: str) -> bool:
    status = await conn.execute(
        "DELETE FROM channel_routes WHERE channel = $1 AND provider = $2", channel, provider
    )
    return bool(status == "DELETE 1")


# ---- tenant overrides ----------------------------------------------------------------------------------


async def list_overrides(conn: asyncpg.Connection, tenant: str, channel: str | None) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"SELECT {_OVERRIDE_COLUMNS} FROM tenant_routes t"
            " WHERE t.tenant = $1 AND ($2::text IS NULL OR t.channel = $2)"
            " ORDER BY t.channel, t.priority, t.provider LIMIT 1000",
            tenant,
            channel,
        )
    )


async def get_override(
    conn: asyncpg.Connection, tenant: str, channel: str, provider: str
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_OVERRIDE_COLUMNS} FROM tenant_routes t"
        " WHERE t.tenant = $1 AND t.channel = $2 AND t.provider = $3",
        tenant,
        channel,
        provider,
    )
    return row


async def route_priority(conn: asyncpg.Connection, channel: str, provider: str) -> int | None:
    """The priority of the channel's route to ``provider`` (row share-locked), or None if not routed."""
    priority: int | None = await conn.fetchval(
        "SELECT priority FROM channel_routes WHERE channel = $1 AND provider = $2 FOR SHARE",
        channel,
        provider,
    )
    return priority


async def upsert_override(
    conn: asyncpg.Connection, tenant: str, channel: str, provider: str, body: OverrideIn, priority: int
) -> bool:
    """Create or replace the tenant's override; True when it was created."""
    created: bool = await conn.fetchval(
        "INSERT INTO tenant_routes (tenant, channel, provider, priority, active) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (tenant, channel, provider) DO UPDATE SET priority = EXCLUDED.priority,"
        " active = EXCLUDED.active RETURNING xmax = 0",
        tenant,
        channel,
        provider,
        priority,
        body.active,
    )
    return created


async def delete_override(conn: asyncpg.Connection, tenant: str, channel: str, provider: str) -> bool:
    status = await conn.execute(
        "DELETE FROM tenant_routes WHERE tenant = $1 AND channel = $2 AND provider = $3",
        tenant,
        channel,
        provider,
    )
    return bool(status == "DELETE 1")


# ---- tenant channel fallbacks --------------------------------------------------------------------------

_FALLBACK_COLUMNS = "channel, fallback_channels, updated_at"


async def list_channel_fallbacks(conn: asyncpg.Connection, tenant: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"SELECT {_FALLBACK_COLUMNS} FROM tenant_channel_fallbacks WHERE tenant = $1 ORDER BY channel",
            tenant,
        )
    )


async def upsert_channel_fallback(
    conn: asyncpg.Connection, tenant: str, channel: str, fallbacks: list[str]
) -> tuple[bool, asyncpg.Record]:
    """Create or replace the tenant's fallback for ``channel``; (created, the row)."""
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO tenant_channel_fallbacks (tenant, channel, fallback_channels) VALUES ($1, $2, $3)"
        " ON CONFLICT (tenant, channel) DO UPDATE SET fallback_channels = EXCLUDED.fallback_channels,"
        f" updated_at = now() RETURNING xmax = 0 AS created, {_FALLBACK_COLUMNS}",
        tenant,
        channel,
        fallbacks,
    )
    return bool(row["created"]), row


async def delete_channel_fallback(conn: asyncpg.Connection, tenant: str, channel: str) -> bool:
    status = await conn.execute(
        "DELETE FROM tenant_channel_fallbacks WHERE tenant = $1 AND channel = $2", tenant, channel
    )
    return bool(status == "DELETE 1")
