"""api_keys rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class KeyRow:
    key_id: str
    tenant: str
    key_hash: str
    rate_limit_per_s: float | None
    admin: bool = False
    expires_at: datetime | None = None


async def insert_key(
    conn: asyncpg.Connection,
    tenant: str,
    key_id: str,
    key_hash: str,
    name: str,
    rate_limit_per_s: float | None,
    admin: bool = False,
    expires_at: datetime | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO api_keys (tenant, key_id, key_hash, name, rate_limit_per_s, admin, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        tenant,
        key_id,
        key_hash,
        name,
        rate_limit_per_s,
        admin,
        expires_at,
    )


async def find_key(conn: asyncpg.Connection, key_id: str) -> KeyRow | None:
    row = await conn.fetchrow(
        "SELECT key_id, tenant, key_hash, rate_limit_per_s, admin, expires_at FROM api_keys"
        " WHERE key_id = $1 AND revoked_at IS NULL",
        key_id,
    )
    if row is None:
        return None
    return KeyRow(
        row["key_id"],
        row["tenant"],
        row["key_hash"],
        row["rate_limit_per_s"],
        row["admin"],
        row["expires_at"],
    )


async def revoke_key(conn: asyncpg.Connection, key_id: str) -> bool:
    status = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    return bool(status.endswith(" 1"))


async def list_keys(conn: asyncpg.Connection, tenant: str | None) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT key_id, tenant, name, rate_limit_per_s, admin, created_at, revoked_at, expires_at"
            " FROM api_keys"
            " WHERE $1::text IS NULL OR tenant = $1 ORDER BY tenant, created_at",
            tenant,
        )
    )
