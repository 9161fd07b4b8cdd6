"""End to end: routing configured through the API is what a running sender uses, without a restart."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import asyncpg
import orjson
import pytest

from tests.helpers import all_terminal, ledger, wait_until
from tests.integration.test_api_support import Api, api_for
from tests.integration.test_providers import QUIET, start_stack
from tools.stack import Environment, Stack


async def sender_reloaded(stack: Stack, version: int) -> bool:
    """Whether sender-0 has logged loading routing version ``version`` or a later one."""
    path = stack.processes["sender-0"].log_path
    for line in path.read_bytes().splitlines():
        if b"routing_reloaded" not in line:
            continue
        event: dict[str, Any] = orjson.loads(line)
        if event.get("event") == "routing_reloaded" and event.get("version", -1) >= version:
            return True
    return False


async def send_sms(api: Api, headers: dict[str, str], prefix: str, count: int) -> None:
    messages = [
        {"channel": "sms", "recipient": f"{prefix}{n:04d}", "payload": {"body": "hi"}} for n in range(count)
    ]
    response = await api.client.post("/v1/messages/batch", json={"messages": messages}, headers=headers)
    assert response.status_code == 202, response.text


@pytest.mark.e2e
async def test_a_routing_change_made_through_the_api_is_used_by_a_running_sender(
    stack: Stack, pool: asyncpg.Pool, environment: Environment
) -> None:
    # Given the pipeline running with no routing in the database (the settings' chains apply)
    start_stack(stack, 1, False, **QUIET)
    await stack.start()
    async with api_for(environment) as api:
        ops, acme, globex = await api.key("ops", admin=True), await api.key("acme"), await api.key("globex")
        # When an operator configures two SMS gateways for sms through the API, smsA first
        for n, name in enumerate(("smsA", "smsB")):
            provider = {"kind": "sms_gateway", "settings": {"account_sid": f"AC{name}"}}
            put = await api.client.put(f"/v1/routing/providers/{name}", json=provider, headers=ops)
            assert put.status_code == 201, put.text
            route = await api.client.put(
                f"/v1/routing/channels/sms/routes/{name}", json={"priority": n}, headers=ops
            )
            assert route.status_code == 201, route.text
        policy = await api.client.put(
            "/v1/routing/channels/sms/policy", json={"strategy": "fallback"}, headers=ops
        )
        assert policy.status_code == 200, policy.text
        version = await pool.fetchval("SELECT version FROM routing_version")
        await wait_until(lambda: sender_reloaded(stack, version), timeout=15, what="the sender's reload")
        # ... and both tenants send 10 sms each
        await send_sms(api, acme, "+1415551", 10)
        await send_sms(api, globex, "+1415552", 10)
        await wait_until(lambda: all_terminal(pool), timeout=60, what="the first logs terminal")

        # When acme makes smsB its primary for sms through the API, while everything runs
        override = await api.client.put("/v1/routing/overrides/sms/smsB", json={"priority": -1}, headers=acme)
        assert override.status_code == 201, override.text
        assert (await api.client.get("/v1/routing/channels/sms", headers=acme)).json()["chain"] == [
            "smsB",
            "smsA",
        ]
        version = await pool.fetchval("SELECT version FROM routing_version")
        started = time.monotonic()
        await wait_until(lambda: sender_reloaded(stack, version), timeout=15, what="the sender's reload")
        reload_s = time.monotonic() - started
        await send_sms(api, acme, "+1415553", 10)
        await send_sms(api, globex, "+1415554", 10)
        await wait_until(lambda: all_terminal(pool), timeout=60, what="the second logs terminal")

    # Then the mock provider's ledger shows the switch: acme's sms moved to smsB, globex's stayed on smsA
    sent: dict[str, Counter[str]] = {}
    for row in await ledger(stack.url("mock_provider")):
        if row["channel"] == "sms" and not row["replay"]:
            sent.setdefault(row["recipient"][:8], Counter())[row["provider"]] += 1
    assert sent == {
        "+1415551": {"smsA": 10},  # acme, before its override
        "+1415552": {"smsA": 10},  # globex
        "+1415553": {"smsB": 10},  # acme, after
        "+1415554": {"smsA": 10},  # globex, unaffected
    }
    # ... every log was sent once, the change took effect within about a second, with no restart
    assert await pool.fetchval("SELECT count(*) FROM communication_logs WHERE status = 'SENT'") == 40
    assert reload_s < 5
    assert {p.name: p.starts for p in stack.processes.values()}["sender-0"] == 1
