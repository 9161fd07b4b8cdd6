"""Tenants, keys and limits: isolation between tenants, rate limiting, the create-key command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.integration.test_api_support import PEPPER, Api, api_for, csv_upload, sms
from tools.stack import ROOT, Environment


@pytest.fixture
async def api(environment: Environment) -> AsyncIterator[Api]:
    async with api_for(environment) as running:
        yield running


async def test_one_tenant_cannot_read_or_change_another_tenants_data(api: Api, pool: asyncpg.Pool) -> None:
    acme, globex = await api.key("acme"), await api.key("globex")
    ops = await api.key("ops", admin=True)
    for n, provider in enumerate(("smsA", "smsB")):  # the operator's global routing: smsA, then smsB
        await api.client.put(f"/v1/routing/providers/{provider}", json={"kind": "mock_json"}, headers=ops)
        await api.client.put(f"/v1/routing/channels/sms/routes/{provider}", json={"priority": n}, headers=ops)
    # Given acme's message, template, contact list, campaign and routing override
    message = (await api.client.post("/v1/messages", json=sms(), headers=acme)).json()["id"]
    template = (
        await api.client.post(
            "/v1/templates", json={"name": "t", "channel": "sms", "content": {"body": "hi"}}, headers=acme
        )
    ).json()["id"]
    contacts = (
        await api.client.post(
            "/v1/contact-lists", headers=acme, **csv_upload("l", "sms", "recipient\n+447911000001\n")
        )
    ).json()["id"]
    campaign = (
        await api.client.post(
            "/v1/campaigns",
            json={"name": "c", "template_id": template, "contact_list_id": contacts},
            headers=acme,
        )
    ).json()["id"]
    override = "/v1/routing/overrides/sms/smsB"
    put = await api.client.put(override, json={"priority": -1}, headers=acme)
    assert put.status_code == 201, put.text
    # When globex tries to read them
    reads = [
        f"/v1/messages/{message}",
        f"/v1/templates/{template}",
        f"/v1/contact-lists/{contacts}",
        f"/v1/campaigns/{campaign}",
        override,
    ]
    # Then each is "not found" for globex
    for path in reads:
        assert (await api.client.get(path, headers=globex)).status_code == 404, path
    # ... its lists are empty
    lists = ("/v1/messages", "/v1/campaigns", "/v1/routing/overrides", "/v1/templates", "/v1/contact-lists")
    for path in lists:
        assert (await api.client.get(path, headers=globex)).json()["items"] == [], path
    assert (await api.client.get("/v1/stats", headers=globex)).json()["groups"][0]["total"] == 0
    # ... and its routing is the operator's, without acme's override
    assert (await api.client.get("/v1/routing/channels/sms", headers=globex)).json()["chain"] == [
        "smsA",
        "smsB",
    ]
    assert (await api.client.get("/v1/routing/channels/sms", headers=acme)).json()["chain"] == [
        "smsB",
        "smsA",
    ]
    # When globex tries to change them, or to use acme's template and list in a campaign
    changes = [
        api.client.post(f"/v1/messages/{message}/cancel", headers=globex),
        api.client.post(f"/v1/campaigns/{campaign}/pause", headers=globex),
        api.client.post(f"/v1/campaigns/{campaign}/cancel", headers=globex),
        api.client.delete(override, headers=globex),
        api.client.post(f"/v1/templates/{template}/preview", json={}, headers=globex),
    ]
    assert [r.status_code for r in await asyncio.gather(*changes)] == [404] * len(changes)
    stolen = await api.client.post(
        "/v1/campaigns",
        json={"name": "x", "template_id": template, "contact_list_id": contacts},
        headers=globex,
    )
    assert stolen.status_code == 422
    # Then acme's data is untouched
    assert await pool.fetchval("SELECT status FROM communication_logs WHERE id = $1", message) == "PENDING"
    assert await pool.fetchval("SELECT status FROM campaigns WHERE id = $1", campaign) == "RUNNING"
    # When globex writes an override of the same provider, it is globex's own, and the global routing
    # is not globex's to change
    mine = await api.client.put(override, json={"active": False}, headers=globex)
    assert mine.status_code == 201 and mine.json()["active"] is False
    global_changes = [
        api.client.put("/v1/routing/channels/sms/routes/smsB", json={"priority": -5}, headers=globex),
        api.client.put("/v1/routing/channels/sms/policy", json={"strategy": "primary"}, headers=globex),
        api.client.delete("/v1/routing/providers/smsA", headers=globex),
    ]
    assert [r.status_code for r in await asyncio.gather(*global_changes)] == [403] * len(global_changes)
    # Then acme's override and the global routing are untouched
    overrides = await pool.fetch(
        "SELECT tenant, provider, priority, active FROM tenant_routes ORDER BY tenant"
    )
    assert [tuple(r) for r in overrides] == [("acme", "smsB", -1, True), ("globex", "smsB", 1, False)]
    assert await pool.fetchval("SELECT priority FROM channel_routes WHERE provider = 'smsB'") == 1
    assert (await api.client.get("/v1/routing/channels/sms", headers=acme)).json()["chain"] == [
        "smsB",
        "smsA",
    ]
    assert await pool.fetchval("SELECT count(*) FROM campaigns WHERE tenant = 'globex'") == 0


async def test_rate_limits_answer_429_with_retry_after_and_high_priority_may_bypass_a_share(
    environment: Environment,
) -> None:
    async with api_for(
        environment, api_rate_limit_per_s=0.5, api_rate_limit_burst=5, api_priority_bypass_share=0.4
    ) as api:
        headers = await api.key("acme")
        # Given a key with a burst of 5 and a 40 % reserve for high priority
        normal = [await api.client.post("/v1/messages", json=sms(), headers=headers) for _ in range(6)]
        # Then the 6th normal send is refused with 429 and a Retry-After
        assert [r.status_code for r in normal] == [202] * 5 + [429]
        assert int(normal[-1].headers["Retry-After"]) >= 1
        assert normal[-1].json()["error"]["code"] == "rate_limited"
        # ... reads are limited too
        assert (await api.client.get("/v1/messages", headers=headers)).status_code == 429
        # When high-priority sends come, two of them (the reserve) still pass
        urgent = [
            await api.client.post("/v1/messages", json=sms(priority=0), headers=headers) for _ in range(3)
        ]
        assert [r.status_code for r in urgent] == [202, 202, 429]
        # ... and another key has its own budget
        other = await api.key("acme")
        assert (await api.client.post("/v1/messages", json=sms(), headers=other)).status_code == 202


async def test_create_key_prints_a_key_once_and_stores_only_its_hash(environment: Environment) -> None:
    # When the command creates a key for acme
    env = {**os.environ, **environment.env, "SWITCHBOARD_API_KEY_PEPPER": PEPPER}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.api", "create-key", "--tenant", "acme", "--name", "ci"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then it prints the key on stdout, and the database has its hash, not the key
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("sbk_") and len(key.splitlines()) == 1
    conn = await asyncpg.connect(environment.database_url)
    try:
        row = await conn.fetchrow("SELECT tenant, key_hash, name FROM api_keys")
        assert row["tenant"] == "acme" and row["name"] == "ci" and key not in row["key_hash"]
        everything = await conn.fetchval("SELECT string_agg(t::text, '') FROM api_keys t")
        assert key not in everything
    finally:
        await conn.close()
    # ... and the key works against the API
    async with api_for(environment) as api:
        response = await api.client.get("/v1/messages", headers={"X-API-Key": key})
        assert response.status_code == 200
    # When it is revoked, a fresh API process refuses it
    key_id = key.split("_")[1]
    revoke = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.api", "revoke-key", key_id],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoke.returncode == 0, revoke.stderr
    async with api_for(environment) as api:
        assert (await api.client.get("/v1/messages", headers={"X-API-Key": key})).status_code == 401
