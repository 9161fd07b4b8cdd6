"""The API side of failover and channel fallback: a message's own fallback channels, a tenant's
channel fallbacks and a channel's failover settings, through the real API and database."""

from __future__ import annotations

import asyncpg
import pytest

from shared.db.routing_store import load_config
from tests.integration.test_api_support import api_for
from tools.stack import Environment


@pytest.mark.e2e
async def test_a_message_names_its_fallback_channels_and_its_status_shows_them(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    async with api_for(environment) as api:
        acme = await api.key("acme")
        # Given a WhatsApp message that may fall back to SMS
        sent = await api.client.post(
            "/v1/messages",
            json={"channel": "whatsapp", "recipient": "+447700900123", "fallback_channels": ["sms"]},
            headers=acme,
        )
        assert sent.status_code == 202, sent.text
        # When its status is read
        detail = await api.client.get(f"/v1/messages/{sent.json()['id']}", headers=acme)
        # Then it shows the fallback channels and no delivering channel yet
        assert detail.status_code == 200, detail.text
        body = detail.json()
        assert (body["fallback_channels"], body["delivered_channel"]) == (["sms"], None)
        assert await pool.fetchval("SELECT fallback_channels FROM communication_logs") == ["sms"]
        # ... and a fallback that cannot reach the recipient is refused, as is its own channel
        for bad in (["email"], ["whatsapp"], ["sms", "sms"]):
            refused = await api.client.post(
                "/v1/messages",
                json={"channel": "whatsapp", "recipient": "+447700900123", "fallback_channels": bad},
                headers=acme,
            )
            assert refused.status_code == 422, (bad, refused.text)
        assert await pool.fetchval("SELECT count(*) FROM communication_logs") == 1


@pytest.mark.e2e
async def test_a_tenant_sets_its_channel_fallbacks_and_an_operator_the_failover_settings(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    async with api_for(environment) as api:
        ops, acme, globex = await api.key("ops", admin=True), await api.key("acme"), await api.key("globex")
        # When acme says its whatsapp messages fall back to sms, and an operator tunes whatsapp's failover
        put = await api.client.put(
            "/v1/routing/channel-fallbacks/whatsapp", json={"fallback_channels": ["sms"]}, headers=acme
        )
        assert put.status_code == 201, put.text
        again = await api.client.put(
            "/v1/routing/channel-fallbacks/whatsapp", json={"fallback_channels": ["mms", "sms"]}, headers=acme
        )
        assert again.status_code == 200, again.text
        policy = await api.client.put(
            "/v1/routing/channels/whatsapp/policy",
            json={"strategy": "fallback", "failover_after": 3, "retry_after_tolerance_s": 10.0},
            headers=ops,
        )
        assert policy.status_code == 200, policy.text
        # Then acme sees its fallbacks, globex none, and the senders' configuration has both
        listed = await api.client.get("/v1/routing/channel-fallbacks", headers=acme)
        assert [(i["channel"], i["fallback_channels"]) for i in listed.json()["items"]] == [
            ("whatsapp", ["mms", "sms"])
        ]
        assert (await api.client.get("/v1/routing/channel-fallbacks", headers=globex)).json()["items"] == []
        shown = (await api.client.get("/v1/routing/channels/whatsapp", headers=acme)).json()["policy"]
        assert (shown["failover_after"], shown["retry_after_tolerance_s"]) == (3, 10.0)
        async with pool.acquire() as conn:
            config = await load_config(conn)
        assert config.fallback_channels("acme", "whatsapp") == ("mms", "sms")
        assert config.fallback_channels("globex", "whatsapp") == ()
        assert (
            config.policy("whatsapp").failover_after,
            config.policy("whatsapp").retry_after_tolerance_s,
        ) == (
            3,
            10.0,
        )
        # ... a fallback the recipient cannot be reached on is refused; a tenant cannot set failover
        email = await api.client.put(
            "/v1/routing/channel-fallbacks/email", json={"fallback_channels": ["sms"]}, headers=acme
        )
        assert email.status_code == 422, email.text
        tenant_policy = await api.client.put(
            "/v1/routing/channels/whatsapp/policy", json={"failover_after": 1}, headers=acme
        )
        assert tenant_policy.status_code == 403, tenant_policy.text
        # ... and deleting the fallback removes it, once
        deleted = await api.client.delete("/v1/routing/channel-fallbacks/whatsapp", headers=acme)
        assert deleted.status_code == 204
        missing = await api.client.delete("/v1/routing/channel-fallbacks/whatsapp", headers=acme)
        assert missing.status_code == 404
