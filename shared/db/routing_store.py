"""Routing configuration in PostgreSQL: load it, notice changes, write a whole document (tests, demo)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from shared.core.retry import RetryMode, RetryPolicy
from shared.core.routing import (
    PACING_RANGES_S,
    ChannelPolicy,
    InDoubtPolicy,
    Pacing,
    ProviderSpec,
    Route,
    RoutingConfig,
    Strategy,
    TenantRoute,
    success_rate,
)

VERSION_SQL = "SELECT version FROM routing_version"
PROVIDERS_SQL = """
SELECT name, kind, active, rate_per_s, burst, reserved_share, pacing, pacing_gap_ms, settings,
       idempotency_keys, in_doubt, receipt_timeout_s
FROM providers
"""
ROUTES_SQL = "SELECT channel, provider, priority, weight, cost, active, destinations FROM channel_routes"
POLICIES_SQL = """
SELECT channel, strategy, retry_mode, retry_initial_s, retry_max_s, retry_max_attempts, retry_delays_s,
       max_cost, min_success_rate, failover_after, retry_after_tolerance_s FROM channel_policies
"""
TENANT_ROUTES_SQL = "SELECT tenant, channel, provider, priority, active FROM tenant_routes"
CHANNEL_FALLBACKS_SQL = "SELECT tenant, channel, fallback_channels FROM tenant_channel_fallbacks"

# Rolling success rate: each provider's last N real calls (local refusals such as an open circuit
# are not calls) within a quarter of an hour, newest first through attempts_provider_time_idx.
RELIABILITY_SQL = """
SELECT p.name, s.calls, s.successes
FROM unnest($1::text[]) AS p(name)
CROSS JOIN LATERAL (
    SELECT count(*) AS calls, count(*) FILTER (WHERE x.outcome = 'success') AS successes
    FROM (SELECT a.outcome FROM delivery_attempts a
          WHERE a.provider = p.name AND a.recorded_at > now() - interval '15 minutes'
            AND a.outcome <> 'permanent' AND NOT (coalesce(a.error_code, '') = ANY($3::text[]))
          ORDER BY a.recorded_at DESC LIMIT $2) AS x
) AS s
"""
LOCAL_ERROR_CODES = ("ALL_PROVIDERS_UNAVAILABLE", "RATE_LIMITED_LOCALLY", "NO_PROVIDER")


# Only variables made for provider credentials can be referenced: a reference to any other variable
# (SWITCHBOARD_DATABASE_URL ...) would let whoever configures a provider send it to a URL of their choice.
ENV_REFERENCE_PREFIX = "SWITCHBOARD_PROVIDER_"


def resolve(value: Any) -> Any:
    """``"env:NAME"`` -> the environment variable NAME, for names starting with ``SWITCHBOARD_PROVIDER_``
    (credentials stay out of the table); any other name resolves to nothing."""
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        return os.environ.get(name, "") if name.startswith(ENV_REFERENCE_PREFIX) else ""
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    return value


def _provider(r: Mapping[str, Any]) -> ProviderSpec:
    gap_ms = r["pacing_gap_ms"]
    low, high = (gap_ms / 1000,) * 2 if gap_ms is not None else PACING_RANGES_S[Pacing(r["pacing"])]
    settings = r["settings"] if isinstance(r["settings"], dict) else {}
    return ProviderSpec(
        name=r["name"],
        kind=r["kind"],
        active=r["active"],
        rate_per_s=r["rate_per_s"],
        burst=r["burst"],
        reserved_share=r["reserved_share"],
        pacing_gap_s=low,
        pacing_gap_max_s=high,
        settings=resolve(settings),
        idempotency_keys=r["idempotency_keys"],
        in_doubt=InDoubtPolicy(r["in_doubt"]),
        receipt_timeout_s=r["receipt_timeout_s"],
    )


def _policy(r: Mapping[str, Any]) -> ChannelPolicy:
    retry = None
    if r["retry_mode"] is not None:
        defaults = RetryPolicy()
        retry = RetryPolicy(
            mode=RetryMode(r["retry_mode"]),
            initial_s=r["retry_initial_s"] if r["retry_initial_s"] is not None else defaults.initial_s,
            max_s=r["retry_max_s"] if r["retry_max_s"] is not None else defaults.max_s,
            max_attempts=r["retry_max_attempts"],
            delays=tuple(r["retry_delays_s"] or ()),
        )
    return ChannelPolicy(
        strategy=Strategy(r["strategy"]),
        retry=retry,
        max_cost=float(r["max_cost"]) if r["max_cost"] is not None else None,
        min_success_rate=r["min_success_rate"],
        failover_after=r["failover_after"],
        retry_after_tolerance_s=r["retry_after_tolerance_s"],
    )


async def load_config(conn: asyncpg.Connection) -> RoutingConfig:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        version = await conn.fetchval(VERSION_SQL)
        providers = {r["name"]: _provider(r) for r in await conn.fetch(PROVIDERS_SQL)}
        routes: dict[str, list[Route]] = {}
        for r in await conn.fetch(ROUTES_SQL):
            routes.setdefault(r["channel"], []).append(
                Route(
                    r["provider"],
                    r["priority"],
                    r["weight"],
                    float(r["cost"]),
                    r["active"],
                    tuple(r["destinations"] or ()),
                )
            )
        policies = {r["channel"]: _policy(r) for r in await conn.fetch(POLICIES_SQL)}
        tenants: dict[tuple[str, str], dict[str, TenantRoute]] = {}
        for r in await conn.fetch(TENANT_ROUTES_SQL):
            tenants.setdefault((r["tenant"], r["channel"]), {})[r["provider"]] = TenantRoute(
                r["priority"], r["active"]
            )
        fallbacks = {
            (r["tenant"], r["channel"]): tuple(r["fallback_channels"])
            for r in await conn.fetch(CHANNEL_FALLBACKS_SQL)
        }
    return RoutingConfig(
        version=version or 0,
        providers=providers,
        routes={ch: tuple(rs) for ch, rs in routes.items()},
        policies=policies,
        tenant_routes=tenants,
        channel_fallbacks=fallbacks,
    )


async def load_success_rates(
    conn: asyncpg.Connection | asyncpg.Pool, providers: Sequence[str], last: int = 200
) -> dict[str, float]:
    rows = await conn.fetch(RELIABILITY_SQL, list(providers), last, list(LOCAL_ERROR_CODES))
    return {r["name"]: success_rate(r["successes"], r["calls"]) for r in rows}


class RoutingCache:
    """The current configuration: reloaded when ``routing_version`` moved, checked at most every
    ``refresh_s``. With no providers configured, the settings' chains apply (``fallback``)."""

    def __init__(self, fallback: RoutingConfig, refresh_s: float = 1.0) -> None:
        self.fallback = fallback
        self.refresh_s = refresh_s
        self.config = fallback
        self._version: int | None = None
        self._checked = float("-inf")

    async def get(self, conn: asyncpg.Connection | asyncpg.Pool) -> RoutingConfig:
        if time.monotonic() - self._checked >= self.refresh_s:
            await self.refresh(conn)
        return self.config

    async def refresh(self, conn: asyncpg.Connection | asyncpg.Pool) -> bool:
        """Reload if the version moved; True when the configuration changed."""
        self._checked = time.monotonic()
        version = await conn.fetchval(VERSION_SQL)
        if version == self._version:
            return False
        if isinstance(conn, asyncpg.Pool):
            async with conn.acquire() as c:
                loaded = await load_config(c)
        else:
            loaded = await load_config(conn)
        self._version = loaded.version
        # Without providers in the tables the settings' chains apply, with the tenants' channel fallbacks.
        self.config = (
            loaded if loaded.providers else replace(self.fallback, channel_fallbacks=loaded.channel_fallbacks)
        )
        return True


async def write_config(conn: asyncpg.Connection, document: Mapping[str, Any]) -> None:
    """Replace the whole routing configuration with ``document`` (one transaction, one version bump
    per table). Keys: providers, routes, policies, tenant_routes, channel_fallbacks: lists of rows as in
    the tables."""
    async with conn.transaction():
        await conn.execute(
            "TRUNCATE tenant_routes, channel_routes, channel_policies, providers, tenant_channel_fallbacks"
        )
        for p in document.get("providers", []):
            await conn.execute(
                "INSERT INTO providers (name, kind, active, rate_per_s, burst, reserved_share, pacing,"
                " pacing_gap_ms, settings, idempotency_keys, in_doubt, receipt_timeout_s)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                p["name"],
                p["kind"],
                p.get("active", True),
                p.get("rate_per_s"),
                p.get("burst"),
                p.get("reserved_share", 0.0),
                p.get("pacing", "none"),
                p.get("pacing_gap_ms"),
                p.get("settings", {}),
                p.get("idempotency_keys"),
                p.get("in_doubt", "hold"),
                p.get("receipt_timeout_s"),
            )
        for r in document.get("routes", []):
            await conn.execute(
                "INSERT INTO channel_routes (channel, provider, priority, weight, cost, active, destinations)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                r["channel"],
                r["provider"],
                r.get("priority", 0),
                r.get("weight", 100),
                r.get("cost", 0),
                r.get("active", True),
                list(r.get("destinations", [])),
            )
        for c in document.get("policies", []):
            await conn.execute(
                "INSERT INTO channel_policies (channel, strategy, retry_mode, retry_initial_s, retry_max_s,"
                " retry_max_attempts, retry_delays_s, max_cost, min_success_rate, failover_after,"
                " retry_after_tolerance_s) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                c["channel"],
                c.get("strategy", "fallback"),
                c.get("retry_mode"),
                c.get("retry_initial_s"),
                c.get("retry_max_s"),
                c.get("retry_max_attempts"),
                c.get("retry_delays_s"),
                c.get("max_cost"),
                c.get("min_success_rate"),
                c.get("failover_after"),
                c.get("retry_after_tolerance_s"),
            )
        for f in document.get("channel_fallbacks", []):
            await conn.execute(
                "INSERT INTO tenant_channel_fallbacks (tenant, channel, fallback_channels)"
                " VALUES ($1, $2, $3)",
                f["tenant"],
                f["channel"],
                list(f["fallback_channels"]),
            )
        for t in document.get("tenant_routes", []):
            await conn.execute(
                "INSERT INTO tenant_routes (tenant, channel, provider, priority, active)"
                " VALUES ($1, $2, $3, $4, $5)",
                t["tenant"],
                t["channel"],
                t["provider"],
                t["priority"],
                t.get("active", True),
            )
