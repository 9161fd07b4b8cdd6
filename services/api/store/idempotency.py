"""api_idempotency rows: reserve a key inside the request's transaction, then keep its response."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.api.idempotency import StoredResponse

DELETE_EXPIRED_KEY_SQL = "DELETE FROM api_idempotency WHERE tenant = $1 AND key = $2 AND expires_at <= now()"
RESERVE_SQL = """
INSERT INTO api_idempotency (tenant, key, request_hash, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
ON CONFLICT (tenant, key) DO NOTHING
RETURNING true
"""
STORED_SQL = "SELECT request_hash, status_code, response FROM api_idempotency WHERE tenant = $1 AND key = $2"
SAVE_SQL = "UPDATE api_idempotency SET status_code = $3, response = $4 WHERE tenant = $1 AND key = $2"
PURGE_SQL = """
DELETE FROM api_idempotency WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM api_idempotency WHERE expires_at <= now() LIMIT $1))
"""


async def reserve(
    conn: asyncpg.Connection, tenant: str, key: str, request_hash: str, ttl_s: float
) -> StoredResponse | None:
    """Claim ``key`` for this request (``None``), or return what an earlier request stored.

    A concurrent request with the same key waits on the unique index until the first commits.
    """
    await conn.execute(DELETE_EXPIRED_KEY_SQL, tenant, key)
    while True:
        if await conn.fetchval(RESERVE_SQL, tenant, key, request_hash, ttl_s):
            return None
        row = await conn.fetchrow(STORED_SQL, tenant, key)
        if row is not None:  # else it expired and was purged in between: claim it again
            return StoredResponse(row["request_hash"], row["status_code"], row["response"])


async def save(conn: asyncpg.Connection, tenant: str, key: str, status_code: int, body: Any) -> None:
    await conn.execute(SAVE_SQL, tenant, key, status_code, body)


async def purge_expired(conn: asyncpg.Connection, limit: int = 1000) -> int:
    status = await conn.execute(PURGE_SQL, limit)
    return int(status.split()[-1])
