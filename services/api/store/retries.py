"""A tenant's FAILED logs back to PENDING (``POST /v1/messages/retry-failed``), in one transaction.

The reset is the dlq tool's (services/dlq/store.py): ``attempts`` is kept and ``max_attempts``
becomes ``attempts + budget``, so the next claim makes an attempt number the provider has never
seen (idempotency key ``<log id>-<attempt>``) and ``delivery_attempts`` keeps every earlier row.
The log's dead letter is settled in the same transaction: a letter still in ``dead_letter_outbox``
is deleted (it will never be published); one already in the DLQ is stale from now on, because its
log moved past the letter's attempt, and ``python -m services.dlq settle`` (or ``requeue``) removes
it without touching the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

# Oldest failure first, through logs_tenant_failed_idx; logs of a paused or cancelled campaign stay.
SELECT_SQL = """
SELECT l.id FROM communication_logs l
WHERE l.tenant = $1 AND l.status = 'FAILED'
  AND ($2::bigint IS NULL OR l.campaign_id = $2)
  AND ($3::text IS NULL OR l.channel = $3)
  AND ($4::text IS NULL OR l.last_error_code = $4)
  AND ($5::timestamptz IS NULL OR l.updated_at >= $5)
  AND ($6::timestamptz IS NULL OR l.updated_at < $6)
  AND NOT EXISTS (SELECT 1 FROM campaigns c
                  WHERE c.id = l.campaign_id AND c.status IN ('PAUSED', 'CANCELLED'))
ORDER BY l.updated_at, l.id
LIMIT $7
"""
LOCK_SQL = "SELECT id FROM communication_logs WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE"
RESET_SQL = """
UPDATE communication_logs SET
    status = 'PENDING', next_attempt_at = now(), lease_until = NULL,
    max_attempts = attempts + $2, updated_at = now()
WHERE id = ANY($1::bigint[]) AND status = 'FAILED'
RETURNING id, campaign_id
"""
SETTLE_OUTBOX_SQL = "DELETE FROM dead_letter_outbox WHERE log_id = ANY($1::bigint[])"
# The campaigns no longer count these logs as failed, and a completed one runs again until they end.
CAMPAIGNS_SQL = """
UPDATE campaigns AS c SET
    failed_count = greatest(c.failed_count - d.n, 0),
    status = CASE WHEN c.status = 'COMPLETED' THEN 'RUNNING' ELSE c.status END,
    updated_at = now()
FROM (SELECT campaign_id, count(*) AS n FROM unnest($1::bigint[]) AS x(campaign_id)
      WHERE campaign_id IS NOT NULL GROUP BY campaign_id) AS d
WHERE c.id = d.campaign_id
"""


@dataclass(frozen=True, slots=True)
class RetryFilter:
    campaign_id: int | None = None
    channel: str | None = None
    error_code: str | None = None
    failed_from: datetime | None = None
    failed_to: datetime | None = None


async def select_failed(conn: asyncpg.Connection, tenant: str, wanted: RetryFilter, limit: int) -> list[int]:
    rows = await conn.fetch(
        SELECT_SQL,
        tenant,
        wanted.campaign_id,
        wanted.channel,
        wanted.error_code,
        wanted.failed_from,
        wanted.failed_to,
        limit,
    )
    return [r["id"] for r in rows]


async def retry_failed(conn: asyncpg.Connection, ids: list[int], budget: int) -> list[int]:
    """Reset the still-FAILED logs among ``ids`` (the caller's transaction); the ids reset, sorted."""
    if not ids:
        return []
    await conn.execute(LOCK_SQL, ids)
    rows = await conn.fetch(RESET_SQL, ids, budget)
    reset = sorted(r["id"] for r in rows)
    if reset:
        await conn.execute(SETTLE_OUTBOX_SQL, reset)
        await conn.execute(CAMPAIGNS_SQL, [r["campaign_id"] for r in rows])
    return reset
