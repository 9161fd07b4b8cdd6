"""api_idempotency rows: reserve a key inside the request's transaction, then keep its response; or,
for a single send, insert the log and keep its key and response in one statement."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.api.idempotency import StoredResponse
from services.api.store.messages import (
    INSERT_INTO,
    INSERT_ON_CONFLICT,
    INSERT_RETURNING,
    INSERT_ROWS,
    NewLog,
    insert_arguments,
)

DELETE_EXPIRED_KEY_SQL = "DELETE FROM api_idempotency WHERE tenant = $1 AND key = $2 AND expires_at <= now()"
RESERVE_SQL = """
INSERT INTO api_idempotency (tenant, key, request_hash, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
ON CONFLICT (tenant, key) DO NOTHING
RETURNING true
"""
STORED_SQL = "SELECT request_hash, status_code, response FROM api_idempotency WHERE tenant = $1 AND key = $2"
STORED_OR_EXPIRED_SQL = """
SELECT request_hash, status_code, response, expires_at <= now() AS expired
FROM api_idempotency WHERE tenant = $1 AND key = $2
"""
PRIMARY_KEY = "api_idempotency_pkey"


def insert_once_sql() -> str:
    """One statement, one round trip, atomic: the log is inserted only when the tenant has no row for
    the key, and the key is kept with its answer (the caller's answer with the new row's id and times)
    by the same statement. Two requests with one key at once: the second waits on the primary key
    until the first commits, then fails with a unique violation and inserts nothing; it is answered
    from the first one's row. An expired key's row is deleted by the caller, who then runs it again.

    The insert's own parameters come first ($1..$n of :data:`INSERT_ROWS`), then key, request hash,
    TTL, status code and answer, numbered after them (so a column added to the insert needs nothing
    here)."""
    n = max(int(number) for number in re.findall(r"\$(\d+)", INSERT_ROWS))
    key, request_hash, ttl, status, answer = (f"${n + i}" for i in range(1, 6))
    return f"""
WITH inserted AS (
{INSERT_INTO}{INSERT_ROWS}WHERE NOT EXISTS (SELECT 1 FROM api_idempotency WHERE tenant = $1 AND key = {key})
ORDER BY ord
{INSERT_ON_CONFLICT}
{INSERT_RETURNING}
), kept AS (
    INSERT INTO api_idempotency (tenant, key, request_hash, expires_at, status_code, response)
    SELECT $1, {key}, {request_hash}, now() + make_interval(secs => {ttl}), {status},
           {answer}::jsonb
           || jsonb_build_object('id', i.id, 'created_at', i.created_at, 'send_at', i.next_attempt_at)
    FROM inserted i
)
SELECT id, created_at, next_attempt_at FROM inserted
"""


INSERT_ONCE_SQL = insert_once_sql()


@dataclass(frozen=True, slots=True)
class InsertedOnce:
    """The new row (``stored`` is None), or what an earlier request with the key stored (no row)."""

    row: asyncpg.Record | None
    stored: StoredResponse | None


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


async def insert_once(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str,
    key: str,
    request_hash: str,
    ttl_s: float,
    log: NewLog,
    status_code: int,
    response: dict[str, Any],
) -> InsertedOnce:
    """Insert ``log`` unless ``key`` was used (one statement); ``response`` is the answer kept for the
    key, completed with the row's ``id``, ``created_at`` and ``send_at`` (its ``next_attempt_at``)."""
    arguments: Sequence[Any] = insert_arguments(tenant, [log])
    while True:
        try:
            row = await conn.fetchrow(
                INSERT_ONCE_SQL, *arguments, key, request_hash, ttl_s, status_code, response
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != PRIMARY_KEY:
                raise
            row = None  # a request with the same key committed first
        if row is not None:
            return InsertedOnce(row, None)
        stored = await conn.fetchrow(STORED_OR_EXPIRED_SQL, tenant, key)
        if stored is None:
            continue  # purged in between: try again
        if stored["expired"]:
            await conn.execute(DELETE_EXPIRED_KEY_SQL, tenant, key)
            continue
        return InsertedOnce(
            None, StoredResponse(stored["request_hash"], stored["status_code"], stored["response"])
        )


async def save(conn: asyncpg.Connection, tenant: str, key: str, status_code: int, body: Any) -> None:
    await conn.execute(SAVE_SQL, tenant, key, status_code, body)


async def purge_expired(conn: asyncpg.Connection, limit: int = 1000) -> int:
    status = await conn.execute(PURGE_SQL, limit)
    return int(status.split()[-1])
