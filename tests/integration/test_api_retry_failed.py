"""POST /v1/messages/retry-failed and the per-message answer of POST /v1/messages/batch (real database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from tests.helpers import insert_logs
from tests.integration.test_api_support import Api, api_for, sms
from tools.stack import Environment


@pytest.fixture
async def api(environment: Environment) -> AsyncIterator[Api]:
    async with api_for(environment) as running:
        yield running


async def fail(pool: asyncpg.Pool, ids: list[int], code: str, attempts: int = 2, ago_s: float = 0) -> None:
    """Make ``ids`` FAILED at ``attempts`` with ``code``, each with a dead letter waiting in the outbox."""
    await pool.execute(
        "UPDATE communication_logs SET status = 'FAILED', attempts = $2, max_attempts = $2,"
        " last_error_code = $3, updated_at = now() - make_interval(secs => $4) WHERE id = ANY($1::bigint[])",
        ids,
        attempts,
        code,
        ago_s,
    )
    await pool.executemany(
        "INSERT INTO dead_letter_outbox (log_id, attempt, body) VALUES ($1, $2, $3)",
        [(i, attempts, orjson.dumps({"log_id": i}).decode()) for i in ids],
    )


async def test_a_tenant_retries_its_failed_messages_with_filters_a_cap_and_a_dry_run(
    api: Api, pool: asyncpg.Pool
) -> None:
    headers = await api.key("acme")
    campaign = await pool.fetchval(
        "INSERT INTO campaigns (tenant, name, status, total_count, failed_count)"
        " VALUES ('acme', 'c', 'COMPLETED', 3, 3) RETURNING id"
    )
    # Given acme's failed messages: three of a completed campaign (SERVER_ERROR), two sms and one email
    # on their own (TIMEOUT, two of them failed an hour ago), one still sent; and globex's failed one
    in_campaign = await insert_logs(
        pool,
        [
            {"tenant": "acme", "channel": "sms", "recipient": f"+1415555000{i}", "campaign_id": campaign}
            for i in range(3)
        ],
    )
    alone = await insert_logs(
        pool,
        [
            {"tenant": "acme", "channel": "sms", "recipient": "+14155551000"},
            {"tenant": "acme", "channel": "sms", "recipient": "+14155551001"},
            {"tenant": "acme", "channel": "email", "recipient": "a@example.com"},
        ],
    )
    (sent,) = await insert_logs(pool, [{"tenant": "acme", "channel": "sms", "recipient": "+14155552000"}])
    (foreign,) = await insert_logs(
        pool, [{"tenant": "globex", "channel": "sms", "recipient": "+14155553000"}]
    )
    await fail(pool, in_campaign, "SERVER_ERROR")
    await fail(pool, alone[:2], "TIMEOUT", ago_s=3600)
    await fail(pool, alone[2:], "TIMEOUT")
    await fail(pool, [foreign], "TIMEOUT")
    await pool.execute("UPDATE communication_logs SET status = 'SENT' WHERE id = $1", sent)
    url = "/v1/messages/retry-failed"
    # When a dry run asks for the TIMEOUT sms failures
    dry = await api.client.post(
        url, json={"error_code": "TIMEOUT", "channel": "sms", "dry_run": True}, headers=headers
    )
    # Then it names them and changes nothing
    assert dry.status_code == 200, dry.text
    assert dry.json() == {"dry_run": True, "retried": 2, "ids": alone[:2], "more": False}
    assert await pool.fetchval("SELECT count(*) FROM communication_logs WHERE status = 'FAILED'") == 7
    # When a time window selects only the recent failures, capped at one per call
    window = {"failed_from": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(), "limit": 1}
    first = await api.client.post(url, json={**window, "error_code": "TIMEOUT"}, headers=headers)
    assert first.json() == {"dry_run": False, "retried": 1, "ids": alone[2:], "more": False}
    # When the campaign's failures are retried, one per call, with a fresh budget of 3
    body = {"campaign_id": campaign, "limit": 2, "max_attempts": 3}
    one = await api.client.post(url, json=body, headers=headers)
    assert one.json()["retried"] == 2 and one.json()["more"] is True
    two = await api.client.post(url, json=body, headers=headers)
    assert two.json() == {"dry_run": False, "retried": 1, "ids": [in_campaign[2]], "more": False}
    # Then those logs are PENDING and due, attempts kept, budget raised, dead letters in the outbox settled
    rows = await pool.fetch(
        "SELECT status, attempts, max_attempts, next_attempt_at <= now() AS due FROM communication_logs"
        " WHERE id = ANY($1::bigint[])",
        in_campaign,
    )
    assert all(
        (r["status"], r["attempts"], r["max_attempts"], r["due"]) == ("PENDING", 2, 5, True) for r in rows
    )
    outbox = {r["log_id"] for r in await pool.fetch("SELECT log_id FROM dead_letter_outbox")}
    assert outbox == {alone[0], alone[1], foreign}
    # ... the campaign no longer counts them as failed and runs again
    row = await pool.fetchrow("SELECT status, failed_count FROM campaigns WHERE id = $1", campaign)
    assert (row["status"], row["failed_count"]) == ("RUNNING", 0)
    # When the same call is made again, nothing more happens (the logs are no longer FAILED)
    again = await api.client.post(url, json=body, headers=headers)
    assert again.json() == {"dry_run": False, "retried": 0, "ids": [], "more": False}
    # ... and with an Idempotency-Key, a repeat is answered with the first answer
    keyed = {**headers, "Idempotency-Key": "retry-1"}
    everything = await api.client.post(url, json={}, headers=keyed)
    assert everything.json()["ids"] == alone[:2]
    replay = await api.client.post(url, json={}, headers=keyed)
    assert replay.json() == everything.json() and replay.headers["Idempotent-Replayed"] == "true"
    conflict = await api.client.post(url, json={"limit": 5}, headers=keyed)
    assert conflict.status_code == 409
    # ... the other tenant's failure and the sent log were never touched
    states = dict(
        await pool.fetch(
            "SELECT id, status FROM communication_logs WHERE id = ANY($1::bigint[])", [sent, foreign]
        )
    )
    assert states == {sent: "SENT", foreign: "FAILED"}
    # Bad filters are refused
    for bad in (
        {"limit": 0},
        {"limit": 10001},
        {"channel": "fax"},
        {"unknown": 1},
        {"failed_from": "2030-01-02T00:00:00Z", "failed_to": "2030-01-01T00:00:00Z"},
    ):
        assert (await api.client.post(url, json=bad, headers=headers)).status_code == 422, bad


async def test_failed_logs_of_a_paused_or_cancelled_campaign_are_left_alone(
    api: Api, pool: asyncpg.Pool
) -> None:
    headers = await api.key("acme")
    paused = await pool.fetchval(
        "INSERT INTO campaigns (tenant, name, status) VALUES ('acme', 'p', 'PAUSED') RETURNING id"
    )
    ids = await insert_logs(
        pool, [{"tenant": "acme", "channel": "sms", "recipient": "+14155550001", "campaign_id": paused}]
    )
    await fail(pool, ids, "SERVER_ERROR")
    response = await api.client.post("/v1/messages/retry-failed", json={}, headers=headers)
    assert response.json()["retried"] == 0


async def test_a_batch_answers_totals_and_a_result_per_message(api: Api, pool: asyncpg.Pool) -> None:
    headers = await api.key("acme")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    # When a batch of three, one scheduled, with recipients written loosely, is sent
    messages = [
        sms("+44 7911 123456"),
        {"channel": "email", "recipient": "Ada@EXAMPLE.com", "payload": {"subject": "s"}},
        sms("0044 7911 123457", send_at=later),
    ]
    response = await api.client.post("/v1/messages/batch", json={"messages": messages}, headers=headers)
    # Then the answer has totals and, per message in request order, its id, status and normalised recipient
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["count"] == 3 and answer["totals"] == {
        "accepted": 3,
        "scheduled": 1,
        "by_channel": {"email": 1, "sms": 2},
    }
    results = answer["results"]
    assert [r["index"] for r in results] == [0, 1, 2] and [r["id"] for r in results] == answer["ids"]
    assert [r["recipient"] for r in results] == ["+447911123456", "Ada@example.com", "+447911123457"]
    assert {r["status"] for r in results} == {"PENDING"}
    stored = dict(await pool.fetch("SELECT id, recipient FROM communication_logs"))
    assert [stored[r["id"]] for r in results] == [r["recipient"] for r in results]
    assert datetime.fromisoformat(results[2]["send_at"]) > datetime.fromisoformat(results[0]["send_at"])
