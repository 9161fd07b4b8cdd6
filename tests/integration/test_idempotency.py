"""Applying outcomes twice, or stale ones, changes nothing (responder idempotency)."""

from __future__ import annotations

import pytest

from shared.bus import wire
from shared.bus.topology import RESPONSES, Lane, lane_exchange
from shared.core.models import OutcomeClass, OutcomeMessage
from tests.helpers import insert_logs, publish_envelopes, wait_until
from tools.stack import Stack

RESPONSES_EXCHANGE = lane_exchange(RESPONSES, Lane.BULK)

SNAPSHOT_SQL = {
    "logs": "SELECT id, status, attempts, max_attempts, next_attempt_at, provider, vendor_ref,"
    " last_error_code, updated_at, sent_at FROM communication_logs ORDER BY id",
    "attempts": "SELECT log_id, attempt, provider, outcome, error_code, recorded_at FROM delivery_attempts"
    " ORDER BY log_id, attempt",
    "receipts": "SELECT log_id, attempt, status FROM delivery_receipts ORDER BY log_id, attempt",
    "outbox": "SELECT log_id, attempt FROM dead_letter_outbox ORDER BY log_id",
    "campaigns": "SELECT id, sent_count, failed_count, bounced_count, retry_count FROM campaigns ORDER BY id",
}


async def snapshot(pool) -> dict[str, list[tuple]]:
    return {name: [tuple(r) for r in await pool.fetch(sql)] for name, sql in SNAPSHOT_SQL.items()}


def outcome_for(log_id: int, recipient: str, kind: OutcomeClass, attempt: int = 1) -> OutcomeMessage:
    return OutcomeMessage(
        log_id=log_id,
        attempt=attempt,
        recipient=recipient,
        channel="sms",
        provider="mocksms",
        outcome=kind,
        error_code=None if kind == OutcomeClass.SUCCESS else "SERVER_ERROR",
        vendor_ref=f"v-{log_id}",
    )


async def publish(amqp_url: str, outcomes: list[OutcomeMessage]) -> None:
    await publish_envelopes(amqp_url, RESPONSES_EXCHANGE, [wire.outcome(o) for o in outcomes])


@pytest.mark.e2e
async def test_every_outcome_delivered_twice_leaves_the_database_identical(stack: Stack, pool) -> None:
    # Given 60 logs claimed for attempt 1 (PROCESSING), in a campaign, and a running responder
    campaign = await pool.fetchval(
        "INSERT INTO campaigns (name, total_count) VALUES ('dup', 60) RETURNING id"
    )
    recipients = [f"+1415000{i:04d}" for i in range(60)]
    ids = await insert_logs(
        pool, [{"channel": "sms", "recipient": r, "campaign_id": campaign} for r in recipients]
    )
    await pool.execute(
        "UPDATE communication_logs SET status = 'PROCESSING', attempts = 1,"
        " lease_until = now() + interval '1 hour'"
    )
    stack.add("responder", backoff_base_s="30")
    await stack.start()
    kinds = [OutcomeClass.SUCCESS, OutcomeClass.TRANSIENT, OutcomeClass.PERMANENT]
    outcomes = [outcome_for(i, r, kinds[n % 3]) for n, (i, r) in enumerate(zip(ids, recipients, strict=True))]

    # When every outcome is delivered once
    await publish(stack.environment.amqp_url, outcomes)
    await wait_until(lambda: _no_processing(pool), timeout=30, what="outcomes applied")
    await wait_until(lambda: _outbox_empty(pool), timeout=30, what="dead letters relayed")
    first = await snapshot(pool)

    # ... and then every one of them again, plus outcomes of an attempt that is not the current one
    await publish(stack.environment.amqp_url, outcomes)
    await publish(
        stack.environment.amqp_url,
        [outcome_for(i, r, OutcomeClass.SUCCESS, attempt=3) for i, r in zip(ids, recipients, strict=True)],
    )
    await wait_until(lambda: _ignored(stack, 120), timeout=30, what="every duplicate consumed and ignored")

    # Then nothing changed: not a status, a counter, an attempt row or a timestamp
    assert await snapshot(pool) == first
    statuses = {r["status"] for r in await pool.fetch("SELECT status FROM communication_logs")}
    assert statuses == {"SENT", "PENDING", "FAILED"}
    counters = await pool.fetchrow("SELECT sent_count, failed_count, retry_count FROM campaigns")
    assert tuple(counters) == (20, 20, 20)


async def _no_processing(pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM communication_logs WHERE status = 'PROCESSING'") == 0


async def _outbox_empty(pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM dead_letter_outbox") == 0


async def _ignored(stack: Stack, expected: int) -> bool:
    text = stack.processes["responder"].log_path.read_text()
    return text.count('"event":"outcome_ignored"') >= expected
