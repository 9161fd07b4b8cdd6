"""What the dashboard reads from PostgreSQL. Each query is cheap on the indexes of the core schema."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.db.overdue import OVERDUE_SQL, OVERDUE_WINDOW_S

COUNTS = "SELECT channel, status, count(*) AS n FROM communication_logs GROUP BY channel, status"

# Finished logs per bucket of the window; bucket 0 is the newest. Served by (status, updated_at).
THROUGHPUT = """
SELECT floor(extract(epoch FROM now() - updated_at) / $2)::int AS bucket, status, count(*) AS n
FROM communication_logs
WHERE status IN ('SENT', 'DELIVERED', 'FAILED', 'BOUNCED')
  AND updated_at > now() - make_interval(secs => $1)
GROUP BY 1, 2
"""

# From creation to SENT, for logs sent within the window.
LATENCY = """
SELECT percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - created_at))
FROM communication_logs
WHERE status IN ('SENT', 'DELIVERED') AND updated_at > now() - make_interval(secs => $1)
  AND sent_at IS NOT NULL
"""

# Logs waiting for a retry (served by the claim index, which covers PENDING rows only).
AWAITING_RETRY = "SELECT count(*) FROM communication_logs WHERE status = 'PENDING' AND attempts > 0"

ATTEMPTS = """
SELECT outcome, count(*) AS n FROM delivery_attempts
WHERE recorded_at > now() - make_interval(secs => $1) GROUP BY outcome
"""

RECENT_FAILURES = """
SELECT id, channel, recipient, status, attempts, provider, last_error_code, last_error, updated_at
FROM communication_logs
WHERE status IN ('FAILED', 'BOUNCED')
ORDER BY updated_at DESC
LIMIT $1
"""

CIRCUITS_TABLE = "provider_circuits"


async def counts(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch(COUNTS))


async def throughput(conn: asyncpg.Connection, window_s: int, bucket_s: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(THROUGHPUT, float(window_s), float(bucket_s)))


async def latency(conn: asyncpg.Connection, window_s: int) -> dict[str, float | None]:
    values = await conn.fetchval(LATENCY, float(window_s))
    p50, p95 = values if values else (None, None)
    return {"p50_s": _round(p50), "p95_s": _round(p95)}


async def retries(conn: asyncpg.Connection, window_s: int) -> dict[str, Any]:
    waiting = await conn.fetchval(AWAITING_RETRY)
    outcomes = {r["outcome"]: int(r["n"]) for r in await conn.fetch(ATTEMPTS, float(window_s))}
    overdue = {r["provider"]: int(r["n"]) for r in await conn.fetch(OVERDUE_SQL, OVERDUE_WINDOW_S)}
    return {
        "awaiting_retry": int(waiting or 0),
        "attempts_by_outcome": outcomes,
        "retryable_errors": outcomes.get("transient", 0) + outcomes.get("recoverable", 0),
        "receipts_overdue": sum(overdue.values()),
        "receipts_overdue_by_provider": overdue,
    }


async def recent_failures(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(RECENT_FAILURES, limit))


async def circuit_rows(conn: asyncpg.Connection) -> list[dict[str, Any]] | None:
    """The rows of ``provider_circuits``, or ``None`` while no such table exists."""
    if await conn.fetchval("SELECT to_regclass($1)", CIRCUITS_TABLE) is None:
        return None
    return [dict(r) for r in await conn.fetch(f"SELECT * FROM {CIRCUITS_TABLE} LIMIT 200")]


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


# Per provider over the window: calls, failed calls and latency (served by attempts_recorded_idx, 0012).
PROVIDERS = """
SELECT provider, count(*) AS calls, count(*) FILTER (WHERE outcome <> 'success') AS errors,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_ms
FROM delivery_attempts
WHERE recorded_at > now() - make_interval(secs => $1) AND provider IS NOT NULL
GROUP BY provider
"""

# Campaigns that are under way, or finished within the last hour (campaigns is small: a seq scan).
CAMPAIGNS = """
SELECT id, tenant, name, status, total_count, sent_count, failed_count, bounced_count, updated_at
FROM campaigns
WHERE status IN ('SCHEDULED', 'RUNNING', 'PAUSED') OR updated_at > now() - interval '1 hour'
ORDER BY (status IN ('SCHEDULED', 'RUNNING', 'PAUSED')) DESC, updated_at DESC
LIMIT $1
"""

# Logs of those campaigns finished in the last minute (logs_status_updated_idx).
CAMPAIGN_RATES = """
SELECT campaign_id, count(*) AS n FROM communication_logs
WHERE status IN ('SENT', 'DELIVERED', 'FAILED', 'BOUNCED') AND updated_at > now() - interval '1 minute'
  AND campaign_id = ANY($1::bigint[])
GROUP BY campaign_id
"""

# This database's sessions by application_name (shared/runtime/identity.py names them after their process).
# application_name is visible for every role's sessions; backend_start only with pg_read_all_stats.
SESSIONS = """
SELECT application_name AS name, count(*) AS connections, min(backend_start) AS since
FROM pg_stat_activity
WHERE datname = current_database() AND application_name <> ''
GROUP BY application_name
"""

LOG_COLUMNS = (
    "id, tenant, campaign_id, channel, recipient, priority, status, attempts, max_attempts, provider,"
    " last_error_code, last_error, created_at, updated_at"
)
LOG_BY_ID = f"SELECT {LOG_COLUMNS} FROM communication_logs WHERE id = $1"
# Newest first, any status (logs_recipient_key_idx, 0012).
LOGS_BY_RECIPIENT = (
    f"SELECT {LOG_COLUMNS} FROM communication_logs"
    " WHERE recipient_key = ANY($1::text[]) ORDER BY id DESC LIMIT $2"
)
ATTEMPTS_OF = """
SELECT log_id, attempt, provider, outcome, error_code, latency_ms, fallback_reason, finished_at
FROM delivery_attempts WHERE log_id = ANY($1::bigint[]) ORDER BY log_id, attempt
"""
RECEIPTS_OF = """
SELECT log_id, attempt, provider, status, received_at
FROM delivery_receipts WHERE log_id = ANY($1::bigint[]) ORDER BY log_id, received_at
"""


async def providers(conn: asyncpg.Connection, window_s: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(PROVIDERS, float(window_s)))


async def campaigns(conn: asyncpg.Connection, limit: int) -> tuple[list[asyncpg.Record], dict[int, int]]:
    rows = list(await conn.fetch(CAMPAIGNS, limit))
    ids = [int(r["id"]) for r in rows]
    rates = {int(r["campaign_id"]): int(r["n"]) for r in await conn.fetch(CAMPAIGN_RATES, ids)} if ids else {}
    return rows, rates


async def sessions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch(SESSIONS))


async def find_logs(
    conn: asyncpg.Connection, log_id: int | None, keys: list[str], limit: int
) -> tuple[list[asyncpg.Record], list[asyncpg.Record], list[asyncpg.Record]]:
    """(logs, their attempts, their receipts) for one id or the given recipient keys."""
    if log_id is not None:
        row = await conn.fetchrow(LOG_BY_ID, log_id)
        logs = [row] if row is not None else []
    else:
        logs = list(await conn.fetch(LOGS_BY_RECIPIENT, keys, limit))
    ids = [int(r["id"]) for r in logs]
    if not ids:
        return [], [], []
    return logs, list(await conn.fetch(ATTEMPTS_OF, ids)), list(await conn.fetch(RECEIPTS_OF, ids))
