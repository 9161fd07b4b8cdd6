"""The dlq admin's SQL: lock and reset logs for a requeue; read a log's whole story for ``show``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from services.dlq.requeue import LogState, Verdict, plan_requeue
from shared.core.models import Status

LOCK_SQL = """
SELECT id, status, attempts, max_attempts, campaign_id FROM communication_logs
WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE
"""
READ_SQL = """
SELECT id, status, attempts, max_attempts, campaign_id FROM communication_logs WHERE id = ANY($1::bigint[])
"""
# Guarded again in SQL: only a FAILED/BOUNCED/IN_DOUBT log still at the letter's attempt is reset.
RESET_SQL = """
UPDATE communication_logs AS l SET
    status = 'PENDING', next_attempt_at = now(), lease_until = NULL,
    max_attempts = l.attempts + $3, updated_at = now()
FROM unnest($1::bigint[], $2::int[]) AS r(id, attempt)
WHERE l.id = r.id AND l.attempts = r.attempt AND l.status IN ('FAILED', 'BOUNCED', 'IN_DOUBT')
"""
# The campaign no longer counts a requeued log as failed (IN_DOUBT counts as failed) or bounced.
CAMPAIGNS_SQL = """
UPDATE campaigns AS c SET
    failed_count = c.failed_count - d.failed, bounced_count = c.bounced_count - d.bounced, updated_at = now()
FROM unnest($1::bigint[], $2::int[], $3::int[]) AS d(id, failed, bounced)
WHERE c.id = d.id
"""


def _states(rows: Sequence[asyncpg.Record]) -> dict[int, LogState]:
    return {
        r["id"]: LogState(r["id"], Status(r["status"]), r["attempts"], r["max_attempts"], r["campaign_id"])
        for r in rows
    }


async def requeue_letters(
    pool: asyncpg.Pool, letters: Sequence[tuple[int, int]], budget: int, *, dry_run: bool = False
) -> list[Verdict]:
    """Decide and (unless ``dry_run``) reset the logs of ``letters`` in one transaction; commit on return."""
    ids = sorted({log_id for log_id, _ in letters})
    async with pool.acquire() as conn:
        if dry_run:
            return plan_requeue(letters, _states(await conn.fetch(READ_SQL, ids)))
        async with conn.transaction():
            states = _states(await conn.fetch(LOCK_SQL, ids))
            verdicts = plan_requeue(letters, states)
            chosen = [letter for letter, v in zip(letters, verdicts, strict=True) if v == Verdict.REQUEUED]
            if chosen:
                status = await conn.execute(RESET_SQL, [i for i, _ in chosen], [a for _, a in chosen], budget)
                if int(status.split()[-1]) != len(chosen):
                    raise RuntimeError(f"reset {status} rows, expected {len(chosen)}: rolled back")
                deltas: dict[int, list[int]] = {}
                for log_id, _ in chosen:
                    state = states[log_id]
                    if state.campaign_id is not None:
                        delta = deltas.setdefault(state.campaign_id, [0, 0])
                        delta[1 if state.status == Status.BOUNCED else 0] += 1
                if deltas:
                    await conn.execute(
                        CAMPAIGNS_SQL,
                        list(deltas),
                        [d[0] for d in deltas.values()],
                        [d[1] for d in deltas.values()],
                    )
            return verdicts


LOG_SQL = """
SELECT id, tenant, campaign_id, channel, recipient, priority, status, attempts, max_attempts,
       next_attempt_at, lease_until, provider, vendor_ref, last_error_code, last_error, idempotency_key,
       created_at, updated_at, sent_at, delivered_at
FROM communication_logs WHERE id = $1
"""
ATTEMPTS_SQL = """
SELECT attempt, provider, outcome, error_code, error_message, fallback_reason, latency_ms, cost, vendor_ref,
       replay, details, finished_at
FROM delivery_attempts WHERE log_id = $1 ORDER BY attempt
"""


async def log_story(pool: asyncpg.Pool, log_id: int) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The log row and its attempt history (``delivery_attempts``), oldest attempt first."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(LOG_SQL, log_id)
        attempts = await conn.fetch(ATTEMPTS_SQL, log_id)
    return (dict(row) if row else None), [dict(a) for a in attempts]
