"""What the dashboard reads from PostgreSQL. Each query is cheap on the indexes of the core schema."""

from __future__ import annotations

from typing import Any

import asyncpg

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
    return {
        "awaiting_retry": int(waiting or 0),
        "attempts_by_outcome": outcomes,
        "retryable_errors": outcomes.get("transient", 0) + outcomes.get("recoverable", 0),
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
