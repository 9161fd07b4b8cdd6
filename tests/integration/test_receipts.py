"""Delivery receipts against the real services: the mock provider's callbacks in every format, through
the receipts receiver and RabbitMQ, to DELIVERED / BOUNCED / FAILED; early, repeated and forged ones."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import orjson
import pytest

from services.mock_provider.behaviour import ReceiptMix, ReceiptVerdict, receipt_verdict
from shared.bus import wire
from shared.bus.topology import DEAD_LETTER_QUEUE, RESPONSES, Lane, lane_exchange
from shared.core.models import OutcomeClass, OutcomeMessage
from shared.core.recipients import normalise
from shared.core.signatures import SWITCHBOARD_HEADER, sign_timestamped
from shared.runtime.settings import DEV_VERIFY_TOKEN
from tests.helpers import all_terminal, drain_queue, insert_logs, publish_envelopes, wait_until
from tests.integration.test_providers import QUIET, configure, route, sms, smtp, start_stack, whatsapp
from tools.ports import free_port
from tools.stack import Stack

RESPONSES_EXCHANGE = lane_exchange(RESPONSES, Lane.BULK)

SECRET = "switchboard-dev-receipts"  # Settings.default_receipt_secret
MIX = ReceiptMix(delivered_rate=0.6, bounced_rate=0.15, failed_rate=0.1, delay_ms=100)
FINAL = {
    ReceiptVerdict.DELIVERED: "DELIVERED",
    ReceiptVerdict.BOUNCED: "BOUNCED",
    ReceiptVerdict.FAILED: "FAILED",
    None: "SENT",
}


@pytest.mark.e2e
async def test_reports_in_every_format_settle_logs_and_campaign_counters(stack: Stack, pool) -> None:
    # Given providers of each API, a mock that reports on 85% of what it accepts, and the receiver
    await configure(
        pool,
        {
            "providers": [
                sms("smsR"),
                whatsapp("waR"),
                smtp("mailR"),
                {"name": "jsonR", "kind": "mock_json"},
            ],
            "routes": [
                route("sms", "smsR"),
                route("whatsapp", "waR"),
                route("email", "mailR"),
                route("mms", "jsonR"),
            ],
        },
    )
    start_stack(
        stack,
        receipts=True,
        **QUIET,
        mock_receipt_delivered_rate=str(MIX.delivered_rate),
        mock_receipt_bounced_rate=str(MIX.bounced_rate),
        mock_receipt_failed_rate=str(MIX.failed_rate),
        mock_receipt_delay_ms=str(MIX.delay_ms),
        mock_seed="7",
    )
    await stack.start()
    campaign = await pool.fetchval(
        "INSERT INTO campaigns (name, total_count) VALUES ('dlr', 200) RETURNING id"
    )
    # When 200 messages are sent across the four formats (and a few recipients whose report is fixed)
    rows = []
    for n in range(50):
        rows += [
            {"channel": "sms", "recipient": f"+1415555{n:04d}" if n % 10 else f"+444555{n:04d}"},
            {"channel": "whatsapp", "recipient": f"+4477009{n:05d}" if n % 10 else f"+333555{n:04d}"},
            {"channel": "email", "recipient": f"user{n}@example.com"},
            {"channel": "mms", "recipient": f"+1415666{n:04d}"},
        ]
    ids = await insert_logs(pool, [{**r, "campaign_id": campaign} for r in rows])
    expected = {
        log_id: FINAL[receipt_verdict(MIX, 7, normalise(r["channel"], r["recipient"]), f"{log_id}-1")]
        for log_id, r in zip(ids, rows, strict=True)
    }
    await wait_until(lambda: all_terminal(pool), timeout=60, what="every log sent")
    await wait_until(lambda: _settled(pool, expected), timeout=30, what="every report applied")

    # Then each log ends as its report said (SENT when the provider never reported)
    statuses = {r["id"]: r["status"] for r in await pool.fetch("SELECT id, status FROM communication_logs")}
    assert statuses == expected
    counts = Counter(expected.values())
    assert (
        counts["DELIVERED"] > 80 and counts["BOUNCED"] > 10 and counts["FAILED"] > 10 and counts["SENT"] > 10
    )
    # ... the campaign counts partition them: sent = accepted and not undelivered, delivered within it
    campaign_row = await pool.fetchrow("SELECT * FROM campaigns WHERE id = $1", campaign)
    assert (
        campaign_row["sent_count"],
        campaign_row["delivered_count"],
        campaign_row["failed_count"],
        campaign_row["bounced_count"],
    ) == (counts["SENT"] + counts["DELIVERED"], counts["DELIVERED"], counts["FAILED"], counts["BOUNCED"])
    # ... the delivered ones carry their time, every report is recorded once next to the acceptance
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM communication_logs WHERE status = 'DELIVERED' AND delivered_at >= sent_at"
        )
        == counts["DELIVERED"]
    )
    receipts = Counter(r["status"] for r in await pool.fetch("SELECT status FROM delivery_receipts"))
    assert receipts == {"ACCEPTED": 200, **{k: v for k, v in counts.items() if k != "SENT"}}
    # ... and each undelivered log has exactly one dead letter, with the provider's code
    await wait_until(lambda: _outbox_empty(pool), timeout=20, what="dead letters relayed")
    letters = [orjson.loads(m.body) for m in await drain_queue(stack.environment.amqp_url, DEAD_LETTER_QUEUE)]
    undelivered = sorted(i for i, s in expected.items() if s in ("FAILED", "BOUNCED"))
    assert sorted(letter["log_id"] for letter in letters) == undelivered
    assert all(letter["error_code"] and letter["error_class"] == "permanent" for letter in letters)
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"{stack.url('mock_provider')}/ledger/stats")).json()["receipts"]
    assert stats["sent"] == 200 - counts["SENT"] and stats.get("gave_up", 0) == 0


async def _settled(pool, expected: dict[int, str]) -> bool:
    rows = await pool.fetch("SELECT status, count(*) AS n FROM communication_logs GROUP BY status")
    return {r["status"]: r["n"] for r in rows} == dict(Counter(expected.values()))


async def _outbox_empty(pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM dead_letter_outbox") == 0


async def post_report(
    client: httpx.AsyncClient, url: str, body: dict, secret: str = SECRET
) -> httpx.Response:
    content = orjson.dumps(body)
    headers = {
        "Content-Type": "application/json",
        SWITCHBOARD_HEADER: sign_timestamped(secret, content, int(time.time())),
    }
    return await client.post(f"{url}/receipts/json/prov", content=content, headers=headers)


@pytest.mark.e2e
async def test_a_report_before_its_outcome_is_kept_repeats_are_harmless_and_forgeries_refused(
    stack: Stack, pool
) -> None:
    # Given a log claimed for attempt 1 whose outcome has not arrived yet, the receiver and a responder
    campaign = await pool.fetchval(
        "INSERT INTO campaigns (name, total_count) VALUES ('early', 1) RETURNING id"
    )
    (log_id,) = await insert_logs(
        pool, [{"channel": "sms", "recipient": "+14155550100", "campaign_id": campaign}]
    )
    await pool.execute(
        "UPDATE communication_logs SET status = 'PROCESSING', attempts = 1,"
        " lease_until = now() + interval '1 hour'"
    )
    port = free_port()
    stack.add("receipts", receipts_port=str(port))
    stack.add("responder")
    await stack.start()
    url = f"http://127.0.0.1:{port}"
    report = {"id": "v-1", "reference": f"{log_id}-1", "status": "delivered", "recipient": "+14155550100"}
    async with httpx.AsyncClient(timeout=10) as client:
        # When the provider reports delivery first (twice), and someone forges a report
        first = await post_report(client, url, report)
        again = await post_report(client, url, report)
        forged = await post_report(client, url, {**report, "status": "failed"}, secret="guess")
        unmatched = await post_report(client, url, {**report, "reference": "not-ours"})
        hub = await client.get(
            f"{url}/receipts/whatsapp/prov",
            params={"hub.mode": "subscribe", "hub.verify_token": DEV_VERIFY_TOKEN, "hub.challenge": "42"},
        )
    assert (first.status_code, first.json()) == (200, {"accepted": 1, "unmatched": 0})
    assert again.status_code == 200
    assert forged.status_code == 401
    assert (unmatched.status_code, unmatched.json()) == (200, {"accepted": 0, "unmatched": 1})
    assert (hub.status_code, hub.text) == (200, "42")
    # Then the report is recorded once, and the log waits for its outcome
    await wait_until(lambda: _receipts(pool, log_id, "DELIVERED"), timeout=20, what="early receipt recorded")
    assert await pool.fetchval("SELECT status FROM communication_logs WHERE id = $1", log_id) == "PROCESSING"

    # When the sender's outcome arrives
    outcome = OutcomeMessage(
        log_id=log_id,
        attempt=1,
        recipient="+14155550100",
        channel="sms",
        provider="prov",
        outcome=OutcomeClass.SUCCESS,
        vendor_ref="v-1",
    )
    await publish_envelopes(stack.environment.amqp_url, RESPONSES_EXCHANGE, [wire.outcome(outcome)])
    # Then the log is DELIVERED at once, with its attempt, and counted sent and delivered once
    await wait_until(lambda: _status(pool, log_id, "DELIVERED"), timeout=20, what="log delivered")
    row = await pool.fetchrow("SELECT * FROM communication_logs WHERE id = $1", log_id)
    assert row["sent_at"] is not None and row["delivered_at"] is not None and row["vendor_ref"] == "v-1"
    assert await pool.fetchval("SELECT count(*) FROM delivery_attempts WHERE log_id = $1", log_id) == 1
    assert await _receipts(pool, log_id, "DELIVERED")
    counters = await pool.fetchrow("SELECT sent_count, delivered_count, failed_count FROM campaigns")
    assert tuple(counters) == (1, 1, 0)


async def _receipts(pool, log_id: int, status: str) -> bool:
    return (
        await pool.fetchval(
            "SELECT count(*) FROM delivery_receipts WHERE log_id = $1 AND status = $2", log_id, status
        )
        == 1
    )


async def _status(pool, log_id: int, status: str) -> bool:
    return await pool.fetchval("SELECT status FROM communication_logs WHERE id = $1", log_id) == status
