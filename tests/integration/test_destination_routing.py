"""Routing by destination country or prefix, configured through the API and used by running senders."""

from __future__ import annotations

from collections import Counter

import asyncpg
import pytest

from tests.helpers import all_terminal, ledger, wait_until
from tests.integration.test_api_routing import send_sms, sender_reloaded
from tests.integration.test_api_support import api_for
from tests.integration.test_providers import QUIET, start_stack
from tools.stack import Environment, Stack


async def test_the_routing_api_takes_validates_and_explains_destinations(environment: Environment) -> None:
    async with api_for(environment) as api:
        ops, acme = await api.key("ops", admin=True), await api.key("acme")
        for name in ("world", "uk", "ukmobile"):
            await api.client.put(f"/v1/routing/providers/{name}", json={"kind": "sms_gateway"}, headers=ops)
        await api.client.put("/v1/routing/channels/sms/routes/world", json={"priority": 0}, headers=ops)
        # When routes are given countries and prefixes, written loosely
        uk = await api.client.put(
            "/v1/routing/channels/sms/routes/uk",
            json={"priority": 5, "destinations": ["gb", "GG"]},
            headers=ops,
        )
        mobile = await api.client.put(
            "/v1/routing/channels/sms/routes/ukmobile",
            json={"priority": 9, "destinations": ["+44 74"]},
            headers=ops,
        )
        # Then they are stored normalised and shown with the route
        assert uk.status_code == 201, uk.text
        assert uk.json()["destinations"] == ["GB", "GG"] and mobile.json()["destinations"] == ["+4474"]
        # ... and the channel view gives the chain a destination gets: longest prefix first
        view = await api.client.get(
            "/v1/routing/channels/sms", params={"to": "+44 7400 123456"}, headers=acme
        )
        assert view.json()["chain"] == ["ukmobile", "uk", "world"]
        landline = await api.client.get(
            "/v1/routing/channels/sms", params={"to": "+442071234567"}, headers=acme
        )
        assert landline.json()["chain"] == ["uk", "world"]
        france = await api.client.get("/v1/routing/channels/sms", params={"to": "+33612345678"}, headers=acme)
        assert france.json()["chain"] == ["world"]
        everything = await api.client.get("/v1/routing/channels/sms", headers=acme)
        assert everything.json()["chain"] == ["world", "uk", "ukmobile"]
        # Bad destinations, and destinations on a channel whose recipients are not numbers, are refused
        for bad in (["XX"], ["44"], ["+0"], ["G B R"]):
            response = await api.client.put(
                "/v1/routing/channels/sms/routes/uk", json={"destinations": bad}, headers=ops
            )
            assert response.status_code == 422, bad
        await api.client.put("/v1/routing/providers/mail", json={"kind": "mock_json"}, headers=ops)
        email = await api.client.put(
            "/v1/routing/channels/email/routes/mail", json={"destinations": ["GB"]}, headers=ops
        )
        assert email.status_code == 422 and email.json()["error"]["code"] == "invalid_destinations"
        bad_to = await api.client.get("/v1/routing/channels/sms", params={"to": "nope"}, headers=acme)
        assert bad_to.status_code == 422


@pytest.mark.e2e
async def test_running_senders_route_each_message_by_its_destination(
    stack: Stack, pool: asyncpg.Pool, environment: Environment
) -> None:
    # Given the pipeline, and through the API: a global sms provider, one for GB and one for US +1415
    start_stack(stack, 1, False, **QUIET)
    await stack.start()
    async with api_for(environment) as api:
        ops, acme = await api.key("ops", admin=True), await api.key("acme")
        routes = {"smsWorld": [], "smsGB": ["GB"], "smsSF": ["+1415"]}
        for n, (name, destinations) in enumerate(routes.items()):
            await api.client.put(
                f"/v1/routing/providers/{name}",
                json={"kind": "sms_gateway", "settings": {"account_sid": name}},
                headers=ops,
            )
            put = await api.client.put(
                f"/v1/routing/channels/sms/routes/{name}",
                json={"priority": n, "destinations": destinations},
                headers=ops,
            )
            assert put.status_code == 201, put.text
        version = await pool.fetchval("SELECT version FROM routing_version")
        await wait_until(lambda: sender_reloaded(stack, version), timeout=15, what="the sender's reload")
        # When acme sends sms to London, San Francisco, New York and Paris
        await send_sms(api, acme, "+44207123", 5)
        await send_sms(api, acme, "+1415555", 5)
        await send_sms(api, acme, "+1212555", 5)
        await send_sms(api, acme, "+3361234", 5)
        await wait_until(lambda: all_terminal(pool), timeout=60, what="every log terminal")
    # Then each went to the provider of its most specific destination, once
    sent: dict[str, Counter[str]] = {}
    for row in await ledger(stack.url("mock_provider")):
        if not row["replay"]:
            sent.setdefault(row["recipient"][:5], Counter())[row["provider"]] += 1
    assert sent == {
        "+4420": {"smsGB": 5},
        "+1415": {"smsSF": 5},
        "+1212": {"smsWorld": 5},
        "+3361": {"smsWorld": 5},
    }
    assert await pool.fetchval("SELECT count(*) FROM communication_logs WHERE status = 'SENT'") == 20
