"""The responder's SQL: lock the logs of a batch, write the plan, all in one transaction."""

from __future__ import annotations

import asyncpg

from services.responder.decision import SentAttempt
from services.responder.plan import EarlyReceipt, LogRow, WritePlan
from shared.core.models import ReceiptStatus, Status

# With each log: its previous attempt (for the "primary failed" fallback reason) and a final receipt
# that arrived before the outcome it belongs to (a delivery of any attempt, or a failure of this one).
LOCK_LOGS_SQL = """
SELECT l.id, l.status, l.attempts, l.max_attempts, l.provider, l.tenant, l.campaign_id, l.channel,
       l.recipient, l.created_at, pa.provider AS prev_provider, pa.outcome AS prev_outcome,
       pa.channel AS prev_channel, l.delivery_channel, l.fallback_channels, l.channel_attempts_from,
       l.key_attempt, l.provider_failures, l.deferrals,
       er.attempt AS early_attempt, er.status AS early_status, er.provider AS early_provider,
       er.error_code AS early_error_code, er.provider_status AS early_provider_status,
       er.vendor_ref AS early_vendor_ref
FROM communication_logs l
LEFT JOIN delivery_attempts pa ON pa.log_id = l.id AND pa.attempt = l.attempts - 1
LEFT JOIN LATERAL (
    SELECT r.attempt, r.status, r.provider, r.error_code, r.provider_status, r.vendor_ref
    FROM delivery_receipts r
    WHERE r.log_id = l.id AND l.status = 'PROCESSING'
      AND (r.status = 'DELIVERED' OR (r.status IN ('BOUNCED', 'FAILED') AND r.attempt = l.attempts))
    ORDER BY r.status = 'DELIVERED' DESC, r.id
    LIMIT 1
) er ON true
WHERE l.id = ANY($1::bigint[]) ORDER BY l.id FOR UPDATE OF l
"""

# Who sent each attempt a batch's receipts name (unique index on (log_id, attempt)).
SENT_ATTEMPTS_SQL = """
SELECT a.log_id, a.attempt, a.provider, a.vendor_ref
FROM unnest($1::bigint[], $2::int[]) AS k(log_id, attempt)
JOIN delivery_attempts a ON a.log_id = k.log_id AND a.attempt = k.attempt
"""

UPDATE_LOGS_SQL = """
UPDATE communication_logs AS l SET
    status = u.status,
    next_attempt_at = CASE WHEN u.status = 'PENDING'
                           THEN now() + make_interval(secs => u.delay_s) ELSE l.next_attempt_at END,
    lease_until = NULL,
    provider = COALESCE(u.provider, l.provider),
    vendor_ref = COALESCE(u.vendor_ref, l.vendor_ref),
    last_error_code = u.error_code,
    last_error = u.error_message,
    sent_at = CASE WHEN u.sent THEN coalesce(l.sent_at, u.accepted_at, now()) ELSE l.sent_at END,
    delivered_at = CASE WHEN u.delivered THEN now() ELSE l.delivered_at END,
    attempts = coalesce(u.attempts, l.attempts),
    key_attempt = CASE WHEN u.key_attempt IS NULL THEN l.key_attempt ELSE nullif(u.key_attempt, 0) END,
    provider_failures = coalesce(u.provider_failures, l.provider_failures),
    delivery_channel = coalesce(u.delivery_channel, l.delivery_channel),
    channel_attempts_from = coalesce(u.channel_attempts_from, l.channel_attempts_from),
    deferrals = l.deferrals + u.deferred::int,
    updated_at = now()
FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::bool[], $9::bool[], $10::timestamptz[], $11::int[], $12::int[], $13::int[], $14::text[],
            $15::int[], $16::bool[])
     AS u(id, status, delay_s, provider, vendor_ref, error_code, error_message, sent, delivered, accepted_at,
          attempts, key_attempt, provider_failures, delivery_channel, channel_attempts_from, deferred)
WHERE l.id = u.id
"""

INSERT_ATTEMPTS_SQL = """
INSERT INTO delivery_attempts (log_id, attempt, provider, outcome, error_code, error_message, fallback_reason,
                               latency_ms, cost, vendor_ref, replay, finished_at, details, channel)
SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::float8[], $9::numeric[], $10::text[], $11::bool[], $12::timestamptz[], $13::jsonb[],
                     $14::text[])
ON CONFLICT (log_id, attempt) DO NOTHING
"""

INSERT_RECEIPTS_SQL = """
INSERT INTO delivery_receipts (log_id, attempt, provider, vendor_ref, status, provider_status)
SELECT l, a, p, v, 'ACCEPTED', 'accepted'
FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[]) AS r(l, a, p, v)
ON CONFLICT (log_id, attempt, status) DO NOTHING
"""

INSERT_REPORTS_SQL = """
INSERT INTO delivery_receipts (log_id, attempt, provider, vendor_ref, status, provider_status, error_code,
                               occurred_at)
SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::timestamptz[])
ON CONFLICT (log_id, attempt, status) DO NOTHING
"""

UPDATE_DELIVERED_SQL = """
UPDATE campaigns AS c SET delivered_count = c.delivered_count + d.delivered, updated_at = now()
FROM unnest($1::bigint[], $2::int[]) AS d(id, delivered) WHERE c.id = d.id
"""

UPDATE_CAMPAIGNS_SQL = """
UPDATE campaigns AS c SET
    sent_count = c.sent_count + d.sent, failed_count = c.failed_count + d.failed,
    bounced_count = c.bounced_count + d.bounced, retry_count = c.retry_count + d.retries,
    updated_at = now()
FROM unnest($1::bigint[], $2::int[], $3::int[], $4::int[], $5::int[]) AS d(id, sent, failed, bounced, retries)
WHERE c.id = d.id
"""

# The letter carries the log's payload (what was to be sent), joined here rather than read with every
# outcome's lock: only dead-lettered logs pay for it.
INSERT_OUTBOX_SQL = """
INSERT INTO dead_letter_outbox (log_id, attempt, body)
SELECT d.log_id, d.attempt, d.body || jsonb_build_object('payload', l.payload)
FROM unnest($1::bigint[], $2::int[], $3::jsonb[]) AS d(log_id, attempt, body)
JOIN communication_logs l ON l.id = d.log_id
ON CONFLICT (log_id, attempt) DO NOTHING
"""


async def lock_logs(conn: asyncpg.Connection, ids: list[int]) -> dict[int, LogRow]:
    rows = await conn.fetch(LOCK_LOGS_SQL, sorted(set(ids)))
    return {
        r["id"]: LogRow(
            id=r["id"],
            status=Status(r["status"]),
            attempts=r["attempts"],
            max_attempts=r["max_attempts"],
            provider=r["provider"],
            tenant=r["tenant"],
            campaign_id=r["campaign_id"],
            channel=r["channel"],
            recipient=r["recipient"],
            created_at=r["created_at"],
            prev_provider=r["prev_provider"],
            prev_outcome=r["prev_outcome"],
            early_receipt=_early(r),
            prev_channel=r["prev_channel"],
            delivery_channel=r["delivery_channel"],
            fallback_channels=tuple(r["fallback_channels"] or ()),
            channel_attempts_from=r["channel_attempts_from"],
            key_attempt=r["key_attempt"],
            provider_failures=r["provider_failures"],
            deferrals=r["deferrals"],
        )
        for r in rows
    }


async def sent_attempts(
    conn: asyncpg.Connection, keys: list[tuple[int, int]]
) -> dict[tuple[int, int], SentAttempt]:
    if not keys:
        return {}
    rows = await conn.fetch(SENT_ATTEMPTS_SQL, [k[0] for k in keys], [k[1] for k in keys])
    return {(r["log_id"], r["attempt"]): SentAttempt(r["provider"], r["vendor_ref"]) for r in rows}


def _early(r: asyncpg.Record) -> EarlyReceipt | None:
    if r["early_status"] is None:
        return None
    return EarlyReceipt(
        r["early_attempt"],
        ReceiptStatus(r["early_status"]),
        r["early_provider"],
        r["early_error_code"],
        r["early_provider_status"] or "",
        r["early_vendor_ref"],
    )


async def write_plan(conn: asyncpg.Connection, plan: WritePlan) -> None:
    if plan.updates:
        u = plan.updates
        await conn.execute(
            UPDATE_LOGS_SQL,
            [x.log_id for x in u],
            [x.status.value for x in u],
            [x.delay_s for x in u],
            [x.provider for x in u],
            [x.vendor_ref for x in u],
            [x.error_code for x in u],
            [x.error_message for x in u],
            [x.sent for x in u],
            [x.delivered for x in u],
            [x.accepted_at for x in u],
            [x.attempts for x in u],
            [x.key_attempt for x in u],
            [x.provider_failures for x in u],
            [x.delivery_channel for x in u],
            [x.channel_attempts_from for x in u],
            [x.deferred for x in u],
        )
    if plan.attempts:
        o = [a.outcome for a in plan.attempts]
        await conn.execute(
            INSERT_ATTEMPTS_SQL,
            [x.log_id for x in o],
            [x.attempt for x in o],
            [x.provider for x in o],
            [x.outcome.value for x in o],
            [x.error_code for x in o],
            [x.error_message for x in o],
            [a.fallback_reason for a in plan.attempts],
            [x.latency_ms for x in o],
            [x.cost for x in o],
            [x.vendor_ref for x in o],
            [x.replay for x in o],
            [x.finished_at for x in o],
            [x.details for x in o],
            [x.channel for x in o],
        )
    if plan.receipts:
        r = plan.receipts
        await conn.execute(
            INSERT_RECEIPTS_SQL,
            [x.log_id for x in r],
            [x.attempt for x in r],
            [x.provider for x in r],
            [x.vendor_ref for x in r],
        )
    if plan.reports:
        p = plan.reports
        await conn.execute(
            INSERT_REPORTS_SQL,
            [x.log_id for x in p],
            [x.attempt for x in p],
            [x.provider for x in p],
            [x.vendor_ref for x in p],
            [x.status.value for x in p],
            [x.provider_status for x in p],
            [x.error_code for x in p],
            [x.occurred_at for x in p],
        )
    if plan.delivered_deltas:
        ids = list(plan.delivered_deltas)
        await conn.execute(UPDATE_DELIVERED_SQL, ids, [plan.delivered_deltas[i] for i in ids])
    if plan.campaign_deltas:
        ids = list(plan.campaign_deltas)
        d = [plan.campaign_deltas[i] for i in ids]
        await conn.execute(
            UPDATE_CAMPAIGNS_SQL,
            ids,
            [x[0] for x in d],
            [x[1] for x in d],
            [x[2] for x in d],
            [x[3] for x in d],
        )
    if plan.dead_letters:
        dl = plan.dead_letters
        await conn.execute(
            INSERT_OUTBOX_SQL,
            [x.log_id for x in dl],
            [x.attempt for x in dl],
            [x.model_dump(mode="json") for x in dl],
        )
