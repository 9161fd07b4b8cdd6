"""End to end through the real processes: a draft campaign given JSON contacts and sent, and a tenant
retrying its failed messages while the DLQ is settled to agree with the database."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise

import asyncpg
import httpx
import pytest

from services.api.keys import generate_key, hash_key
from tests.helpers import ledger, wait_until
from tests.integration.dlq_support import dlq_depth, json_lines, run_dlq
from tests.integration.test_api_e2e import PEPPER, start_pipeline_and_api
from tools.stack import Stack


async def api_key(pool: asyncpg.Pool, tenant: str) -> dict[str, str]:
    new = generate_key()
    await pool.execute(
        "INSERT INTO api_keys (tenant, key_id, key_hash) VALUES ($1, $2, $3)",
        tenant,
        new.key_id,
        hash_key(new.key, PEPPER),
    )
    return {"X-API-Key": new.key}


@pytest.mark.e2e
async def test_a_draft_campaign_with_json_contacts_is_sent_and_its_stats_follow(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    # Given the pipeline and the API running as processes
    base = start_pipeline_and_api(stack)
    await stack.start()
    headers = await api_key(pool, "acme")
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
        template = await client.post(
            "/v1/templates", json={"name": "hi", "channel": "sms", "content": {"body": "Hi {{name}}"}}
        )
        # When a draft campaign gets JSON contacts (one bad) and is sent
        draft = await client.post(
            "/v1/campaigns", json={"name": "d", "template_id": template.json()["id"], "draft": True}
        )
        campaign_id = draft.json()["id"]
        rows = [{"phone": f"+4479110000{i:02d}", "name": f"n{i}"} for i in range(5)] + [
            {"phone": "oops", "name": "x"}
        ]
        added = await client.post(f"/v1/campaigns/{campaign_id}/contacts", json=rows)
        assert added.json()["added"] == 5 and added.json()["rejected"] == [
            {"index": 5, "reason": "not an E.164 phone number: ****"}
        ]
        sent = await client.post(f"/v1/campaigns/{campaign_id}/send")
        assert sent.status_code == 200, sent.text

        # Then every message reaches SENT, the campaign completes and its stats say so
        async def completed() -> bool:
            status: str = (await client.get(f"/v1/campaigns/{campaign_id}")).json()["status"]
            return status == "COMPLETED"

        await wait_until(completed, timeout=60, what="campaign COMPLETED")
        stats = (await client.get(f"/v1/campaigns/{campaign_id}/stats")).json()
        assert stats == {"total": 5, "pending": 0, "sent": 5, "delivered": 0, "failed": 0, "successRate": 1.0}
        bodies = sorted(
            r["payload"]["body"]
            for r in (await client.get("/v1/messages", params={"campaign_id": campaign_id})).json()["items"]
        )
        assert bodies == [f"Hi n{i}" for i in range(5)]
    assert set(stack.stop().values()) == {0}


@pytest.mark.e2e
async def test_a_tenant_retries_its_failed_messages_and_the_dlq_is_settled(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    # Given the pipeline and the API, and a provider that fails every call for now
    base = start_pipeline_and_api(stack)
    await stack.start()
    async with httpx.AsyncClient() as admin:
        (
            await admin.post(f"{stack.url('mock_provider')}/admin/config", json={"transient_rate": 1.0})
        ).raise_for_status()
    headers = await api_key(pool, "acme")
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
        # When acme sends four messages with one attempt each, and they fail and are dead-lettered
        batch = await client.post(
            "/v1/messages/batch",
            json={
                "messages": [
                    {"channel": "sms", "recipient": f"+1415555010{i}", "max_attempts": 1} for i in range(4)
                ]
            },
        )
        ids = batch.json()["ids"]

        async def all_failed() -> bool:
            page = (await client.get("/v1/messages", params={"status": "FAILED"})).json()["items"]
            return len(page) == 4

        await wait_until(all_failed, timeout=60, what="four FAILED messages")
        await wait_until(lambda: _depth_is(stack, 4), timeout=30, what="four dead letters in the DLQ")
        # ... and, the provider healthy again, acme retries its failures (a dry run first)
        async with httpx.AsyncClient() as admin:
            (
                await admin.post(f"{stack.url('mock_provider')}/admin/config", json={"transient_rate": 0})
            ).raise_for_status()
        dry = await client.post("/v1/messages/retry-failed", json={"dry_run": True})
        assert dry.json() == {"dry_run": True, "retried": 4, "ids": sorted(ids), "more": False}
        retried = await client.post("/v1/messages/retry-failed", json={"channel": "sms"})
        assert retried.json()["retried"] == 4

        # Then each message is sent on its second attempt, once at the provider
        async def all_sent() -> bool:
            page = (await client.get("/v1/messages", params={"status": "SENT"})).json()["items"]
            return len(page) == 4

        await wait_until(all_sent, timeout=60, what="every retried message SENT")
        for log_id in ids:
            history = (await client.get(f"/v1/messages/{log_id}")).json()["attempt_history"]
            assert [(a["attempt"], a["outcome"]) for a in history] == [(1, "transient"), (2, "success")]
        accepted = [row for row in await ledger(stack.url("mock_provider")) if not row["replay"]]
        assert sorted(row["log_id"] for row in accepted) == sorted(ids)
    # When the operator settles the DLQ, the letters of the retried logs go (their logs moved on)
    dry_settle = run_dlq(stack.environment, "settle", "--dry-run")
    assert dry_settle.returncode == 0, dry_settle.stderr
    assert await dlq_depth(stack.environment.amqp_url) == 4
    settled = run_dlq(stack.environment, "settle")
    assert settled.returncode == 0, settled.stderr
    assert "stale, removed" in settled.stdout
    # Then the DLQ and the database agree: no letter for a log that is not FAILED
    assert await dlq_depth(stack.environment.amqp_url) == 0
    listed = run_dlq(stack.environment, "list", "--json")
    assert json_lines(listed.stdout) == []
    assert set(stack.stop().values()) == {0}


async def _depth_is(stack: Stack, expected: int) -> bool:
    return await dlq_depth(stack.environment.amqp_url) == expected


@pytest.mark.e2e
async def test_a_paced_campaign_is_due_one_gap_apart_and_no_message_leaves_before_its_time(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    # Given the pipeline and the API running as processes
    base = start_pipeline_and_api(stack)
    await stack.start()
    headers = await api_key(pool, "acme")
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
        template = await client.post(
            "/v1/templates",
            json={"name": "p", "channel": "sms", "content": {"body": "Hi {{name}}", "from": "+15550001"}},
        )
        # When a draft paced "fast" (2 to 5 s between two messages of its sender) gets 3 contacts, is sent
        draft = await client.post(
            "/v1/campaigns",
            json={"name": "p", "template_id": template.json()["id"], "draft": True, "pacing": "fast"},
        )
        campaign_id = draft.json()["id"]
        rows = [{"phone": f"+4479110000{i:02d}", "name": f"n{i}"} for i in range(3)]
        await client.post(f"/v1/campaigns/{campaign_id}/contacts", json=rows)
        sent = (await client.post(f"/v1/campaigns/{campaign_id}/send")).json()
        # Then its messages are due 2 to 5 s apart and its ETA is the last one's due time
        items = (await client.get("/v1/messages", params={"campaign_id": campaign_id})).json()["items"]
        due = {m["recipient"]: datetime.fromisoformat(m["next_attempt_at"]) for m in items}
        times = sorted(due.values())
        assert all(2.0 <= (b - a).total_seconds() <= 5.0 for a, b in pairwise(times))
        assert datetime.fromisoformat(sent["eta"]) == times[-1]

        async def completed() -> bool:
            status: str = (await client.get(f"/v1/campaigns/{campaign_id}")).json()["status"]
            return status == "COMPLETED"

        await wait_until(completed, timeout=60, what="campaign COMPLETED")
        assert (await client.get(f"/v1/campaigns/{campaign_id}")).json()["eta"] is None
    # ... and the provider received none of them before its due time
    arrived = {
        r["recipient"]: datetime.fromisoformat(r["received_at"])
        for r in await ledger(stack.url("mock_provider"))
        if not r["replay"]
    }
    assert set(arrived) == set(due)
    for recipient, at in due.items():
        assert arrived[recipient] >= at, recipient
