"""communication_logs as the API sees them: insert in one statement, read, list, cancel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.api.schemas.messages import MessageFilters

# The insert in pieces: the single send's keyed statement (store/idempotency.py) is built from them too.
INSERT_INTO = """
INSERT INTO communication_logs (tenant, channel, recipient, payload, priority, max_attempts, next_attempt_at,
                                campaign_id, idempotency_key, ordering_key, fallback_channels)
"""
INSERT_ROWS = """
SELECT $1, ch, r, p, pr, m, COALESCE(n, now()), c, k, o, string_to_array(f, ',')
FROM unnest($2::text[], $3::text[], $4::jsonb[], $5::smallint[], $6::int[], $7::timestamptz[], $8::bigint[],
            $9::text[], $10::text[], $11::text[]) WITH ORDINALITY AS x(ch, r, p, pr, m, n, c, k, o, f, ord)
"""
INSERT_ON_CONFLICT = "ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
INSERT_RETURNING = "RETURNING id, created_at, next_attempt_at"
INSERT_SQL = f"{INSERT_INTO}{INSERT_ROWS}ORDER BY ord\n{INSERT_ON_CONFLICT}\n{INSERT_RETURNING}\n"

_COLUMNS = """
l.id, l.campaign_id, l.channel, l.recipient, l.payload, l.priority, l.ordering_key, l.status, l.attempts,
l.max_attempts,
COALESCE(p.next_attempt_at, l.next_attempt_at) AS next_attempt_at, p.log_id IS NOT NULL AS paused,
l.provider, l.vendor_ref, l.last_error_code, l.last_error, l.created_at, l.updated_at, l.sent_at,
l.delivered_at, l.fallback_channels,
CASE WHEN l.status IN ('SENT', 'DELIVERED') THEN coalesce(l.delivery_channel, l.channel) END
    AS delivered_channel
"""

GET_SQL = f"""
SELECT {_COLUMNS} FROM communication_logs l LEFT JOIN paused_logs p ON p.log_id = l.id
WHERE l.tenant = $1 AND l.id = $2
"""

ATTEMPTS_SQL = """
SELECT a.attempt, coalesce(a.channel, l.channel) AS channel, a.provider, a.outcome, a.error_code,
       a.error_message, a.fallback_reason, a.vendor_ref, a.replay, a.details, a.latency_ms,
       a.cost::float8 AS cost, a.finished_at
FROM delivery_attempts a JOIN communication_logs l ON l.id = a.log_id
WHERE a.log_id = $1 ORDER BY a.attempt
"""

RECEIPTS_SQL = """
SELECT attempt, provider, status, provider_status, received_at
FROM delivery_receipts WHERE log_id = $1 ORDER BY received_at, id
"""

# A single UPDATE guarded by status = 'PENDING': a row being claimed (locked, turning PROCESSING) is
# not touched. A paused log gets its real due time back.
CANCEL_SQL = """
WITH cancelled AS (
    UPDATE communication_logs l
    SET status = 'CANCELLED', updated_at = now(),
        next_attempt_at = COALESCE((SELECT p.next_attempt_at FROM paused_logs p WHERE p.log_id = l.id),
                                   l.next_attempt_at)
    WHERE l.tenant = $1 AND l.id = $2 AND l.status = 'PENDING'
    RETURNING l.id
), unpaused AS (
    DELETE FROM paused_logs WHERE log_id IN (SELECT id FROM cancelled)
)
SELECT id FROM cancelled
"""

STATUS_SQL = "SELECT status FROM communication_logs WHERE tenant = $1 AND id = $2"


@dataclass(frozen=True, slots=True)
class NewLog:
    channel: str
    recipient: str
    payload: dict[str, Any]
    priority: int
    max_attempts: int
    send_at: datetime | None = None
    campaign_id: int | None = None
    idempotency_key: str | None = None
    ordering_key: str | None = None
    fallback_channels: tuple[str, ...] = ()


def insert_arguments(tenant: str, logs: Sequence[NewLog]) -> list[Any]:
    """$1..$11 of :data:`INSERT_SQL` (and of every statement built from its pieces)."""
    return [
        tenant,
        [x.channel for x in logs],
        [x.recipient for x in logs],
        [x.payload for x in logs],
        [x.priority for x in logs],
        [x.max_attempts for x in logs],
        [x.send_at for x in logs],
        [x.campaign_id for x in logs],
        [x.idempotency_key for x in logs],
        [x.ordering_key for x in logs],
        [",".join(x.fallback_channels) for x in logs],  # text[][] must be rectangular: joined here
    ]


async def insert_logs(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, logs: Sequence[NewLog]
) -> list[asyncpg.Record]:
    """Insert ``logs`` in one statement; returns (id, created_at, next_attempt_at) in request order.

    Logs whose idempotency key already exists for the tenant are skipped (campaign re-runs).
    """
    rows = await conn.fetch(INSERT_SQL, *insert_arguments(tenant, logs))
    # Identity values grow within the statement, which inserts in ORDER BY ord: sorting restores it.
    return sorted(rows, key=lambda r: r["id"])


def list_query(tenant: str, filters: MessageFilters, after_id: int | None) -> tuple[str, list[Any]]:
    """The list statement for the given filters (only the present ones become conditions)."""
    args: list[Any] = [tenant]
    clauses = ["l.tenant = $1"]

    def add(condition: str, value: Any) -> None:
        args.append(value)
        clauses.append(condition.format(f"${len(args)}"))

    if after_id is not None:
        add("l.id < {}", after_id)
    if filters.status is not None:
        add("l.status = {}", filters.status.value)
    if filters.channel is not None:
        add("l.channel = {}", filters.channel.value)
    if filters.campaign_id is not None:
        add("l.campaign_id = {}", filters.campaign_id)
    if filters.recipient is not None:
        add("l.recipient = {}", filters.recipient)
    if filters.created_from is not None:
        add("l.created_at >= {}", filters.created_from)
    if filters.created_to is not None:
        add("l.created_at < {}", filters.created_to)
    args.append(filters.limit + 1)
    sql = (
        f"SELECT {_COLUMNS} FROM communication_logs l LEFT JOIN paused_logs p ON p.log_id = l.id "
        f"WHERE {' AND '.join(clauses)} ORDER BY l.id DESC LIMIT ${len(args)}"
    )
    return sql, args


async def get_log(conn: asyncpg.Connection, tenant: str, log_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(GET_SQL, tenant, log_id)
    return row


async def attempts_of(conn: asyncpg.Connection, log_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(ATTEMPTS_SQL, log_id))


async def receipts_of(conn: asyncpg.Connection, log_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(RECEIPTS_SQL, log_id))


async def list_logs(
    conn: asyncpg.Connection, tenant: str, filters: MessageFilters, after_id: int | None
) -> list[asyncpg.Record]:
    sql, args = list_query(tenant, filters, after_id)
    return list(await conn.fetch(sql, *args))


async def cancel_log(conn: asyncpg.Connection, tenant: str, log_id: int) -> tuple[bool, str | None]:
    """(True, CANCELLED) when cancelled now, else (False, the status in the way; ``None``: no such log)."""
    if await conn.fetchval(CANCEL_SQL, tenant, log_id) is not None:
        return True, "CANCELLED"
    status: str | None = await conn.fetchval(STATUS_SQL, tenant, log_id)
    return False, status
