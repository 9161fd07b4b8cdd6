"""campaigns, campaign_specs, campaign_runs and paused_logs rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

CAMPAIGN_COLUMNS = """
c.id, c.tenant, c.name, c.status, c.total_count, c.sent_count, c.delivered_count, c.failed_count,
c.bounced_count, c.retry_count, c.created_at, c.updated_at,
s.template_id, s.contact_list_id, s.channel, s.priority, s.max_attempts, s.start_at, s.cron, s.timezone,
s.end_at, s.next_run_at, COALESCE(s.runs, 0) AS runs, COALESCE(s.pacing, 'none') AS pacing
"""
_FROM = "FROM campaigns c LEFT JOIN campaign_specs s ON s.campaign_id = c.id"

PROGRESS_SQL = """
SELECT campaign_id, status, count(*) AS n FROM communication_logs
WHERE campaign_id = ANY($1::bigint[]) GROUP BY campaign_id, status
"""

# Pause: PENDING logs keep their status; next_attempt_at goes to 'infinity' (never due for the
# poller) and the real value is kept in paused_logs. Locked in id order, as the responder does.
PAUSE_LOGS_SQL = """
WITH moved AS (
    UPDATE communication_logs l SET next_attempt_at = 'infinity', updated_at = now()
    FROM (SELECT id, next_attempt_at FROM communication_logs
          WHERE campaign_id = $1 AND status = 'PENDING' AND next_attempt_at <> 'infinity'
          ORDER BY id FOR UPDATE) AS old
    WHERE l.id = old.id AND l.status = 'PENDING'
    RETURNING l.id, old.next_attempt_at
), kept AS (
    INSERT INTO paused_logs (log_id, campaign_id, next_attempt_at)
    SELECT id, $1, next_attempt_at FROM moved
    ON CONFLICT (log_id) DO UPDATE SET next_attempt_at = EXCLUDED.next_attempt_at
)
SELECT count(*) FROM moved
"""

RESUME_LOGS_SQL = """
WITH restored AS (
    DELETE FROM paused_logs WHERE campaign_id = $1 RETURNING log_id, next_attempt_at
), updated AS (
    UPDATE communication_logs l SET next_attempt_at = r.next_attempt_at, updated_at = now()
    FROM restored r
    WHERE l.id = r.log_id AND l.status = 'PENDING' AND l.next_attempt_at = 'infinity'
    RETURNING l.id
)
SELECT count(*) FROM updated
"""

CANCEL_LOGS_SQL = """
WITH cancelled AS (
    UPDATE communication_logs l
    SET status = 'CANCELLED', updated_at = now(),
        next_attempt_at = COALESCE((SELECT p.next_attempt_at FROM paused_logs p WHERE p.log_id = l.id),
                                   l.next_attempt_at)
    WHERE l.campaign_id = $1 AND l.status = 'PENDING'
    RETURNING l.id
), cleared AS (
    DELETE FROM paused_logs WHERE campaign_id = $1
)
SELECT count(*) FROM cancelled
"""

DUE_CRON_SQL = f"""
SELECT {CAMPAIGN_COLUMNS} FROM campaign_specs s JOIN campaigns c ON c.id = s.campaign_id
WHERE s.next_run_at <= now() AND c.status IN ('SCHEDULED', 'RUNNING')
ORDER BY s.next_run_at LIMIT 1
FOR UPDATE OF c, s SKIP LOCKED
"""

START_DUE_SQL = """
UPDATE campaigns c SET status = 'RUNNING', updated_at = now()
FROM campaign_specs s
WHERE s.campaign_id = c.id AND c.status = 'SCHEDULED' AND s.cron IS NULL AND s.start_at <= now()
RETURNING c.id
"""

COMPLETE_SQL = """
UPDATE campaigns c SET status = 'COMPLETED', updated_at = now()
FROM campaign_specs s
WHERE s.campaign_id = c.id AND c.status = 'RUNNING' AND s.next_run_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM communication_logs l
                  WHERE l.campaign_id = c.id AND l.status IN ('PENDING', 'PROCESSING'))
RETURNING c.id
"""

REPAUSE_SQL = "SELECT id FROM campaigns WHERE status = 'PAUSED'"

# When the last open message of each campaign is due (a paused one: when it was due).
ETA_SQL = """
SELECT l.campaign_id, max(COALESCE(p.next_attempt_at, l.next_attempt_at)) AS eta
FROM communication_logs l LEFT JOIN paused_logs p ON p.log_id = l.id
WHERE l.campaign_id = ANY($1::bigint[]) AND l.status IN ('PENDING', 'PROCESSING')
GROUP BY l.campaign_id
"""

# A resumed paced campaign: its pending logs due again one gap apart from the new start.
RESCHEDULE_SQL = """
UPDATE communication_logs l SET next_attempt_at = d.due, updated_at = now()
FROM unnest($1::bigint[], $2::timestamptz[]) AS d(id, due)
WHERE l.id = d.id AND l.status = 'PENDING'
"""
PENDING_IDS_SQL = """
SELECT id FROM communication_logs WHERE campaign_id = $1 AND status = 'PENDING'
ORDER BY next_attempt_at, id
"""


async def insert_campaign(conn: asyncpg.Connection, tenant: str, name: str, status: str) -> int:
    campaign_id: int = await conn.fetchval(
        "INSERT INTO campaigns (tenant, name, status) VALUES ($1, $2, $3) RETURNING id", tenant, name, status
    )
    return campaign_id


async def insert_spec(conn: asyncpg.Connection, campaign_id: int, spec: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO campaign_specs (campaign_id, template_id, contact_list_id, channel, priority,"
        " max_attempts, start_at, cron, timezone, end_at, next_run_at, pacing)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        campaign_id,
        spec["template_id"],
        spec["contact_list_id"],
        spec["channel"],
        spec["priority"],
        spec["max_attempts"],
        spec["start_at"],
        spec["cron"],
        spec["timezone"],
        spec["end_at"],
        spec["next_run_at"],
        spec["pacing"],
    )


async def get_campaign(
    conn: asyncpg.Connection, tenant: str, campaign_id: int, lock: bool = False
) -> asyncpg.Record | None:
    suffix = " FOR UPDATE OF c" if lock else ""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {CAMPAIGN_COLUMNS} {_FROM} WHERE c.tenant = $1 AND c.id = $2{suffix}", tenant, campaign_id
    )
    return row


async def list_campaigns(
    conn: asyncpg.Connection, tenant: str, after_id: int | None, limit: int, status: str | None
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"SELECT {CAMPAIGN_COLUMNS} {_FROM} WHERE c.tenant = $1 AND ($2::bigint IS NULL OR c.id < $2)"
            " AND ($3::text IS NULL OR c.status = $3) ORDER BY c.id DESC LIMIT $4",
            tenant,
            after_id,
            status,
            limit,
        )
    )


async def progress_of(conn: asyncpg.Connection, ids: list[int]) -> dict[int, dict[str, int]]:
    result: dict[int, dict[str, int]] = {i: {} for i in ids}
    for row in await conn.fetch(PROGRESS_SQL, ids):
        result[row["campaign_id"]][row["status"]] = row["n"]
    return result


async def set_status(conn: asyncpg.Connection, campaign_id: int, status: str) -> None:
    await conn.execute(
        "UPDATE campaigns SET status = $2, updated_at = now() WHERE id = $1", campaign_id, status
    )


async def set_next_run(conn: asyncpg.Connection, campaign_id: int, next_run_at: datetime | None) -> None:
    await conn.execute(
        "UPDATE campaign_specs SET next_run_at = $2 WHERE campaign_id = $1", campaign_id, next_run_at
    )


async def pause_logs(conn: asyncpg.Connection, campaign_id: int) -> int:
    moved: int = await conn.fetchval(PAUSE_LOGS_SQL, campaign_id)
    return moved


async def resume_logs(conn: asyncpg.Connection, campaign_id: int) -> int:
    restored: int = await conn.fetchval(RESUME_LOGS_SQL, campaign_id)
    return restored


async def cancel_logs(conn: asyncpg.Connection, campaign_id: int) -> int:
    cancelled: int = await conn.fetchval(CANCEL_LOGS_SQL, campaign_id)
    return cancelled


async def record_run(conn: asyncpg.Connection, campaign_id: int, run_at: datetime) -> bool:
    """Claim the run (campaign, time): False when it was materialised already."""
    inserted = await conn.fetchval(
        "INSERT INTO campaign_runs (campaign_id, run_at) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING RETURNING true",
        campaign_id,
        run_at,
    )
    return bool(inserted)


async def finish_run(conn: asyncpg.Connection, campaign_id: int, run_at: datetime, count: int) -> None:
    await conn.execute(
        "UPDATE campaign_runs SET log_count = $3 WHERE campaign_id = $1 AND run_at = $2",
        campaign_id,
        run_at,
        count,
    )
    await conn.execute(
        "UPDATE campaigns SET total_count = total_count + $2, updated_at = now() WHERE id = $1",
        campaign_id,
        count,
    )
    await conn.execute("UPDATE campaign_specs SET runs = runs + 1 WHERE campaign_id = $1", campaign_id)


async def due_cron_campaign(conn: asyncpg.Connection) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(DUE_CRON_SQL)
    return row


async def start_due(conn: asyncpg.Connection) -> list[int]:
    return [r["id"] for r in await conn.fetch(START_DUE_SQL)]


async def complete_finished(conn: asyncpg.Connection) -> list[int]:
    return [r["id"] for r in await conn.fetch(COMPLETE_SQL)]


async def paused_campaigns(conn: asyncpg.Connection) -> list[int]:
    return [r["id"] for r in await conn.fetch(REPAUSE_SQL)]


async def eta_of(conn: asyncpg.Connection, ids: list[int]) -> dict[int, datetime]:
    return {r["campaign_id"]: r["eta"] for r in await conn.fetch(ETA_SQL, ids)}


async def pacing_slot(conn: asyncpg.Connection, tenant: str, identity: str, now: datetime) -> datetime:
    """The identity's next free slot (never before ``now``), its row locked until the transaction ends."""
    await conn.execute(
        "INSERT INTO campaign_pacing (tenant, identity, next_slot) VALUES ($1, $2, $3)"
        " ON CONFLICT (tenant, identity) DO NOTHING",
        tenant,
        identity,
        now,
    )
    slot: datetime = await conn.fetchval(
        "SELECT next_slot FROM campaign_pacing WHERE tenant = $1 AND identity = $2 FOR UPDATE",
        tenant,
        identity,
    )
    return max(slot, now)


async def set_pacing_slot(conn: asyncpg.Connection, tenant: str, identity: str, next_slot: datetime) -> None:
    await conn.execute(
        "UPDATE campaign_pacing SET next_slot = $3 WHERE tenant = $1 AND identity = $2",
        tenant,
        identity,
        next_slot,
    )


async def pending_ids(conn: asyncpg.Connection, campaign_id: int) -> list[int]:
    return [r["id"] for r in await conn.fetch(PENDING_IDS_SQL, campaign_id)]


async def reschedule(conn: asyncpg.Connection, ids: list[int], due: list[datetime]) -> None:
    await conn.execute(RESCHEDULE_SQL, ids, due)


async def set_contact_list(conn: asyncpg.Connection, campaign_id: int, list_id: int) -> None:
    await conn.execute(
        "UPDATE campaign_specs SET contact_list_id = $2 WHERE campaign_id = $1", campaign_id, list_id
    )


async def set_start(conn: asyncpg.Connection, campaign_id: int, start_at: datetime | None) -> None:
    await conn.execute(
        "UPDATE campaign_specs SET start_at = $2 WHERE campaign_id = $1", campaign_id, start_at
    )
