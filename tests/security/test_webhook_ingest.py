"""Threat: a tenant registers an internal URL as a webhook through the API. The API refuses it at
ingest, with a clear error that names the message, in single sends, batches and contact lists; an
operator's allowlist lets one tenant through, and nobody else."""

from __future__ import annotations

import asyncpg

from tests.integration.test_api_support import csv_upload, running_api
from tools.stack import Environment

REFUSED = [
    "http://127.0.0.1:15672/api/users",
    "http://2130706433/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.5/",
    "http://localhost/",
    "https://hooks.example.invalid/",  # RFC 6761: never resolves (refused without a lookup)
]


def hook(url: str) -> dict[str, object]:
    return {"channel": "webhook", "recipient": url, "payload": {"event": "x"}}


async def test_an_internal_webhook_url_is_refused_at_ingest(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    async with running_api(environment.settings) as api:
        key = await api.key("mallory")
        answers = [await api.client.post("/v1/messages", json=hook(url), headers=key) for url in REFUSED]
    for answer in answers:
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "destination_refused"
        assert error["details"][0]["loc"] == ["body", "recipient"]
    assert await pool.fetchval("SELECT count(*) FROM communication_logs") == 0


async def test_credentials_in_a_webhook_url_are_refused(environment: Environment) -> None:
    async with running_api(environment.settings) as api:
        key = await api.key("mallory")
        answer = await api.client.post(
            "/v1/messages", json=hook("http://guest:guest@example.com/hook"), headers=key
        )
    assert answer.status_code == 422
    assert "credentials" in answer.text


async def test_a_batch_names_each_refused_message_and_inserts_nothing(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    async with running_api(environment.settings) as api:
        key = await api.key("mallory")
        batch = {
            "messages": [hook("https://93.184.216.34/ok"), hook("http://0x7f.1/"), hook("http://[fe80::1]/")]
        }
        answer = await api.client.post("/v1/messages/batch", json=batch, headers=key)
    assert answer.status_code == 422
    assert [d["loc"] for d in answer.json()["error"]["details"]] == [
        ["body", "messages", 1, "recipient"],
        ["body", "messages", 2, "recipient"],
    ]
    assert await pool.fetchval("SELECT count(*) FROM communication_logs") == 0


async def test_the_allowlist_lets_its_tenant_through_and_nobody_else(environment: Environment) -> None:
    async with running_api(environment.settings, outbound_allowlist={"acme": ["10.0.0.0/24"]}) as api:
        acme, mallory = await api.key("acme"), await api.key("mallory")
        allowed = await api.client.post("/v1/messages", json=hook("http://10.0.0.5/hook"), headers=acme)
        refused = await api.client.post("/v1/messages", json=hook("http://10.0.0.5/hook"), headers=mallory)
    assert (allowed.status_code, refused.status_code) == (202, 422)


async def test_a_contact_list_of_webhooks_rejects_the_internal_rows(environment: Environment) -> None:
    rows = "recipient\nhttps://93.184.216.34/a\nhttp://127.0.0.1:5672/\nhttp://u:p@example.com/\n"
    async with running_api(environment.settings) as api:
        key = await api.key("mallory")
        answer = await api.client.post("/v1/contact-lists", headers=key, **csv_upload("l", "webhook", rows))
    assert answer.status_code == 201
    report = answer.json()
    assert (report["contact_count"], report["rejected_count"]) == (1, 2)
    assert [r["row"] for r in report["rejected"]] == [3, 4]


async def test_the_error_says_why_a_webhook_url_is_refused(environment: Environment) -> None:
    async with running_api(environment.settings) as api:
        key = await api.key("mallory")
        loopback = await api.client.post("/v1/messages", json=hook("http://localhost:8080/"), headers=key)
        missing = await api.client.post("/v1/messages", json=hook("https://no.such.invalid/"), headers=key)
    assert (
        loopback.json()["error"]["details"][0]["message"] == "recipient: the URL points at a loopback address"
    )
    assert missing.json()["error"]["details"][0]["message"] == "recipient: the host name does not exist"
