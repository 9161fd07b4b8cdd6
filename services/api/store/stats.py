"""The statistics queries: message outcomes and attempt figures of a tenant over a time range."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.api.schemas.stats import GroupBy

_LOG_KEYS = {
    GroupBy.OVERALL: "'all'",
    GroupBy.CHANNEL: "l.channel",
    GroupBy.PROVIDER: "COALESCE(l.provider, 'none')",
    GroupBy.CAMPAIGN: "COALESCE(l.campaign_id::text, 'none')",
}
_ATTEMPT_KEYS = {**_LOG_KEYS, GroupBy.PROVIDER: "COALESCE(a.provider, 'none')"}


def outcomes_sql(group_by: GroupBy) -> str:
    return f"""
SELECT {_LOG_KEYS[group_by]} AS key, count(*) AS total,
       count(*) FILTER (WHERE l.status IN ('PENDING', 'PROCESSING')) AS pending,
       count(*) FILTER (WHERE l.status IN ('SENT', 'DELIVERED')) AS sent,
       count(*) FILTER (WHERE l.status = 'DELIVERED') AS delivered,
       count(*) FILTER (WHERE l.status = 'FAILED') AS failed,
       count(*) FILTER (WHERE l.status = 'BOUNCED') AS bounced,
       count(*) FILTER (WHERE l.status = 'CANCELLED') AS cancelled,
       count(*) FILTER (WHERE l.status = 'IN_DOUBT') AS in_doubt,
       count(*) FILTER (
           WHERE l.status = 'SENT' AND p.receipt_timeout_s IS NOT NULL
             AND l.sent_at < now() - make_interval(secs => p.receipt_timeout_s)
       ) AS receipts_overdue
FROM communication_logs l
LEFT JOIN providers p ON p.name = l.provider
WHERE l.tenant = $1 AND l.created_at >= $2 AND l.created_at < $3
GROUP BY 1
"""


def attempts_sql(group_by: GroupBy) -> str:
    return f"""
SELECT {_ATTEMPT_KEYS[group_by]} AS key, count(*) AS attempts,
       count(*) FILTER (WHERE a.outcome = 'success') AS attempts_succeeded,
       count(*) FILTER (WHERE a.fallback_reason IS NOT NULL) AS fallbacks,
       count(*) FILTER (WHERE a.attempt > 1) AS retries,
       avg(a.latency_ms) AS latency_avg_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY a.latency_ms) AS latency_p95_ms,
       COALESCE(sum(a.cost), 0)::float8 AS cost
FROM delivery_attempts a JOIN communication_logs l ON l.id = a.log_id
WHERE l.tenant = $1 AND l.created_at >= $2 AND l.created_at < $3
GROUP BY 1
"""


async def outcomes(
    conn: asyncpg.Connection, tenant: str, group_by: GroupBy, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    return list(await conn.fetch(outcomes_sql(group_by), tenant, start, end))


async def attempts(
    conn: asyncpg.Connection, tenant: str, group_by: GroupBy, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    return list(await conn.fetch(attempts_sql(group_by), tenant, start, end))
