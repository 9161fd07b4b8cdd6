"""End to end: messages and a campaign sent through the API process reach SENT through the real pipeline."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from services.api.keys import generate_key, hash_key
from tests.helpers import wait_until
from tools.stack import Stack

PEPPER = "e2e-pepper"
CALM = {
    "backoff_base_s": "0.2",
    "backoff_cap_s": "1",
    "mock_latency_ms": "2",
    "mock_latency_jitter_ms": "1",
    "mock_transient_rate": "0",
    "mock_permanent_rate": "0",
    "mock_rate_limit_rate": "0",
    "poll_interval_s": "0.05",
}


def start_pipeline_and_api(stack: Stack) -> str:
    mock = stack.add("mock_provider", **CALM)
    settings = {**CALM, "provider_url": f"http://127.0.0.1:{mock.port}"}
    stack.add("poller", **settings)
    stack.add("sender", **settings)
    stack.add("responder", **settings)
    api = stack.add("api", api_key_pepper=PEPPER, api_scheduler_interval_s="0.2")
    api.env["SWITCHBOARD_API_PORT"] = str(api.port)  # the API serves /readyz on its own port
    return stack.url("api")


@pytest.mark.e2e
async def test_messages_and_a_campaign_sent_through_the_api_reach_sent(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    # Given the pipeline and the API running as processes, and a key for acme
    base = start_pipeline_and_api(stack)
    await stack.start()
    new = generate_key()
    await pool.execute(
        "INSERT INTO api_keys (tenant, key_id, key_hash) VALUES ('acme', $1, $2)",
        new.key_id,
        hash_key(new.key, PEPPER),
    )
    headers = {"X-API-Key": new.key}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
        # When one message, a batch of 20, and a 3-contact campaign are sent through the API
        one = await client.post(
            "/v1/messages",
            json={"channel": "sms", "recipient": "+447911123456", "payload": {"body": "hello"}},
            headers={"Idempotency-Key": "k1"},
        )
        assert one.status_code == 202, one.text
        batch = await client.post(
            "/v1/messages/batch",
            json={
                "messages": [
                    {
                        "channel": "email",
                        "recipient": f"user{i}@example.com",
                        "payload": {"subject": "s", "text": "t"},
                    }
                    for i in range(20)
                ]
            },
        )
        assert batch.status_code == 202, batch.text
        template = await client.post(
            "/v1/templates", json={"name": "hi", "channel": "sms", "content": {"body": "Hi {{name}}"}}
        )
        contacts = await client.post(
            "/v1/contact-lists",
            data={"name": "few", "channel": "sms"},
            files={
                "file": ("c.csv", b"recipient,name\n+447911000001,Ada\n+447911000002,Bob\n+447911000003,Cy\n")
            },
        )
        campaign = await client.post(
            "/v1/campaigns",
            json={
                "name": "e2e",
                "template_id": template.json()["id"],
                "contact_list_id": contacts.json()["id"],
            },
        )
        assert campaign.status_code == 201, campaign.text
        ids = [one.json()["id"], *batch.json()["ids"]]

        # Then every message reaches SENT, as the API reports it
        async def all_sent() -> bool:
            page = (await client.get("/v1/messages", params={"limit": 100})).json()["items"]
            return len(page) == 24 and all(m["status"] == "SENT" for m in page)

        await wait_until(all_sent, timeout=60, what="every message SENT")
        detail = (await client.get(f"/v1/messages/{ids[0]}")).json()
        assert detail["provider"] and detail["attempt_history"][-1]["outcome"] == "success"
        assert "ACCEPTED" in [r["status"] for r in detail["receipts"]]

        # ... and the campaign completes, its counters and statistics agree
        async def completed() -> bool:
            status: str = (await client.get(f"/v1/campaigns/{campaign.json()['id']}")).json()["status"]
            return status == "COMPLETED"

        await wait_until(completed, timeout=30, what="campaign COMPLETED")
        done = (await client.get(f"/v1/campaigns/{campaign.json()['id']}")).json()
        assert done["counters"]["sent"] == 3 and done["progress"]["done_ratio"] == 1
        stats = (await client.get("/v1/stats", params={"group_by": "channel"})).json()["groups"]
        assert {r["key"]: r["sent"] for r in stats} == {"email": 20, "sms": 4}
    assert set(stack.stop().values()) == {0}
