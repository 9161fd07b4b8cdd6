"""Routing configuration CRUD and statistics against the real database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.integration.test_api_support import Api, api_for, sms
from tools.stack import Environment


@pytest.fixture
async def api(environment: Environment) -> AsyncIterator[Api]:
    async with api_for(environment) as running:
        yield running


async def configure_sms(api: Api, ops: dict[str, str], *names: str) -> None:
    """Providers ``names`` (SMS gateways) routed for sms in that order, strategy fallback."""
    for n, name in enumerate(names):
        put = await api.client.put(
            f"/v1/routing/providers/{name}",
            json={"kind": "sms_gateway", "settings": {"account_sid": f"AC{name}"}},
            headers=ops,
        )
        assert put.status_code in (200, 201), put.text
        route = await api.client.put(
            f"/v1/routing/channels/sms/routes/{name}", json={"priority": n}, headers=ops
        )
        assert route.status_code in (200, 201), route.text


async def test_operators_configure_providers_routes_and_policies_in_the_tables_senders_read(
    api: Api, pool: asyncpg.Pool
) -> None:
    ops = await api.key("ops", admin=True)
    version = await pool.fetchval("SELECT version FROM routing_version")
    # Given no provider in the database: the settings' chains apply, and the channel view says so
    empty = (await api.client.get("/v1/routing/channels/sms", headers=ops)).json()
    assert (
        empty["source"] == "settings" and empty["routes"] == [] and empty["chain"] == ["mocksms", "mocksms2"]
    )
    assert empty["policy"]["configured"] is False and empty["policy"]["strategy"] == "fallback"
    # When an operator creates two providers, with limits, pacing and settings
    first = await api.client.put(
        "/v1/routing/providers/smsA",
        json={
            "kind": "sms_gateway",
            "rate_per_s": 50,
            "burst": 100,
            "reserved_share": 0.2,
            "pacing": "fast",
            "settings": {
                "account_sid": "AC1",
                "auth_token": "env:SWITCHBOARD_PROVIDER_SMSA_TOKEN",
                "from": "+15550001",
            },
        },
        headers=ops,
    )
    second = await api.client.put("/v1/routing/providers/smsB", json={"kind": "mock_json"}, headers=ops)
    assert first.status_code == second.status_code == 201, first.text
    assert (
        first.json()["settings"]["auth_token"] == "env:SWITCHBOARD_PROVIDER_SMSA_TOKEN"
        and first.json()["channels"] == []
    )
    # ... routes them for sms, with costs, and sets the channel's strategy and retry policy
    routes = [
        await api.client.put(
            "/v1/routing/channels/sms/routes/smsA", json={"priority": 0, "cost": 0.0075}, headers=ops
        ),
        await api.client.put(
            "/v1/routing/channels/sms/routes/smsB", json={"priority": 1, "weight": 30}, headers=ops
        ),
    ]
    assert [r.status_code for r in routes] == [201, 201], routes[0].text
    policy = await api.client.put(
        "/v1/routing/channels/sms/policy",
        json={
            "strategy": "least_cost",
            "retry_mode": "custom",
            "retry_delays_s": [1, 5, 30],
            "retry_max_attempts": 4,
            "max_cost": 0.05,
        },
        headers=ops,
    )
    assert policy.status_code == 200 and policy.json()["configured"], policy.text
    # Then the rows are in 0003's tables, which the senders read, and the routing version moved
    assert await pool.fetchval("SELECT to_regclass('provider_routes')") is None
    row = await pool.fetchrow("SELECT * FROM providers WHERE name = 'smsA'")
    assert (row["kind"], row["rate_per_s"], row["burst"], row["pacing"]) == ("sms_gateway", 50, 100, "fast")
    assert row["settings"]["auth_token"] == "env:SWITCHBOARD_PROVIDER_SMSA_TOKEN"
    assert [
        tuple(r)
        for r in await pool.fetch(
            "SELECT provider, priority, weight, cost::float8 FROM channel_routes"
            " WHERE channel = 'sms' ORDER BY priority"
        )
    ] == [("smsA", 0, 100, 0.0075), ("smsB", 1, 30, 0.0)]
    stored = await pool.fetchrow("SELECT * FROM channel_policies WHERE channel = 'sms'")
    assert (stored["strategy"], stored["retry_mode"], stored["retry_delays_s"]) == (
        "least_cost",
        "custom",
        [1.0, 5.0, 30.0],
    )
    assert await pool.fetchval("SELECT version FROM routing_version") > version
    # ... and the channel view shows routes, policy and the chain the senders will use
    view = (await api.client.get("/v1/routing/channels/sms", headers=ops)).json()
    assert view["source"] == "database" and view["chain"] == ["smsA", "smsB"]
    assert [(r["provider"], r["kind"], r["cost"]) for r in view["routes"]] == [
        ("smsA", "sms_gateway", 0.0075),
        ("smsB", "mock_json", 0.0),
    ]
    assert view["policy"]["strategy"] == "least_cost" and view["policy"]["retry_max_attempts"] == 4
    email = (await api.client.get("/v1/routing/channels/email", headers=ops)).json()
    assert email["routes"] == [] and email["chain"] == []
    listed = (await api.client.get("/v1/routing/channels", headers=ops)).json()["items"]
    assert [c["channel"] for c in listed] == ["sms", "mms", "email", "whatsapp", "webhook", "signal"]
    # When a route is replaced: the same key answers 200
    replaced = await api.client.put(
        "/v1/routing/channels/sms/routes/smsB", json={"priority": -1, "active": False}, headers=ops
    )
    assert replaced.status_code == 200 and replaced.json()["priority"] == -1 and not replaced.json()["active"]
    assert (await api.client.get("/v1/routing/channels/sms", headers=ops)).json()["chain"] == ["smsA"]
    # When a routed provider is deleted, it is refused; once unrouted, it goes
    in_use = await api.client.delete("/v1/routing/providers/smsB", headers=ops)
    assert in_use.status_code == 409 and in_use.json()["error"]["code"] == "provider_in_use"
    assert "sms" in in_use.json()["error"]["message"]
    unrouted = await api.client.delete("/v1/routing/channels/sms/routes/smsB", headers=ops)
    assert unrouted.status_code == 204
    assert (await api.client.delete("/v1/routing/providers/smsB", headers=ops)).status_code == 204
    assert (await api.client.get("/v1/routing/providers/smsB", headers=ops)).status_code == 404
    assert (await api.client.get("/v1/routing/channels/sms/routes/smsB", headers=ops)).status_code == 404
    assert (await api.client.delete("/v1/routing/channels/sms/routes/smsB", headers=ops)).status_code == 404


async def test_tenant_keys_read_the_global_configuration_but_cannot_change_it(
    api: Api, pool: asyncpg.Pool
) -> None:
    ops, acme = await api.key("ops", admin=True), await api.key("acme")
    await configure_sms(api, ops, "smsA")
    # Given a credential that was written outside the API, literally
    await pool.execute(
        "UPDATE providers SET settings = settings || '{\"auth_token\": \"s3cret\"}' WHERE name = 'smsA'"
    )
    # When a tenant key reads the providers and channels, Then it sees them without any settings
    [provider] = (await api.client.get("/v1/routing/providers", headers=acme)).json()["items"]
    assert provider["name"] == "smsA" and provider["channels"] == ["sms"] and provider["settings"] is None
    assert (await api.client.get("/v1/routing/channels/sms", headers=acme)).json()["chain"] == ["smsA"]
    # ... while an operator sees the settings, with the literal credential masked
    shown = (await api.client.get("/v1/routing/providers/smsA", headers=ops)).json()["settings"]
    assert shown == {"account_sid": "ACsmsA", "auth_token": "********"}
    # When the tenant key tries to change the global configuration, Then each is forbidden
    attempts = [
        api.client.put("/v1/routing/providers/evil", json={"kind": "mock_json"}, headers=acme),
        api.client.put("/v1/routing/providers/smsA", json={"kind": "mock_json"}, headers=acme),
        api.client.delete("/v1/routing/providers/smsA", headers=acme),
        api.client.put("/v1/routing/channels/sms/routes/smsA", json={"priority": 5}, headers=acme),
        api.client.delete("/v1/routing/channels/sms/routes/smsA", headers=acme),
        api.client.put("/v1/routing/channels/sms/policy", json={"strategy": "primary"}, headers=acme),
    ]
    answers = [await a for a in attempts]
    assert [r.status_code for r in answers] == [403] * len(answers)
    assert {r.json()["error"]["code"] for r in answers} == {"forbidden"}
    # ... and nothing changed
    assert await pool.fetchval("SELECT count(*) FROM providers") == 1
    assert await pool.fetchval("SELECT count(*) FROM channel_policies") == 0
    assert await pool.fetchval("SELECT kind FROM providers WHERE name = 'smsA'") == "sms_gateway"


async def test_a_tenant_override_reorders_or_excludes_providers_for_that_tenant_only(
    api: Api, pool: asyncpg.Pool
) -> None:
    ops, acme, globex = await api.key("ops", admin=True), await api.key("acme"), await api.key("globex")
    await configure_sms(api, ops, "smsA", "smsB", "smsC")
    # When acme makes smsC its first choice and excludes smsA
    first = await api.client.put("/v1/routing/overrides/sms/smsC", json={"priority": -1}, headers=acme)
    excluded = await api.client.put("/v1/routing/overrides/sms/smsA", json={"active": False}, headers=acme)
    assert first.status_code == excluded.status_code == 201, first.text
    # ... an override without a priority keeps the route's own
    assert excluded.json() == {
        "channel": "sms",
        "provider": "smsA",
        "priority": 0,
        "active": False,
        "routed": True,
    }
    # Then acme's chain changes, globex's does not
    chain = "/v1/routing/channels/sms"
    assert (await api.client.get(chain, headers=acme)).json()["chain"] == ["smsC", "smsB"]
    assert (await api.client.get(chain, headers=globex)).json()["chain"] == ["smsA", "smsB", "smsC"]
    assert await pool.fetchval("SELECT count(*) FROM tenant_routes WHERE tenant = 'acme'") == 2
    # ... and acme lists its own overrides
    listed = (await api.client.get("/v1/routing/overrides", headers=acme)).json()["items"]
    assert [(o["provider"], o["priority"], o["active"]) for o in listed] == [
        ("smsC", -1, True),
        ("smsA", 0, False),
    ]
    assert (await api.client.get("/v1/routing/overrides", params={"channel": "email"}, headers=acme)).json()[
        "items"
    ] == []
    # When acme replaces and then removes an override
    again = await api.client.put("/v1/routing/overrides/sms/smsC", json={"priority": 7}, headers=acme)
    assert again.status_code == 200 and again.json()["priority"] == 7
    assert (await api.client.delete("/v1/routing/overrides/sms/smsA", headers=acme)).status_code == 204
    assert (await api.client.get("/v1/routing/overrides/sms/smsA", headers=acme)).status_code == 404
    assert (await api.client.get(chain, headers=acme)).json()["chain"] == ["smsA", "smsB", "smsC"]
    # When the operator stops routing smsC, acme's override stays but says it has no effect
    await api.client.delete("/v1/routing/channels/sms/routes/smsC", headers=ops)
    kept = (await api.client.get("/v1/routing/overrides/sms/smsC", headers=acme)).json()
    assert kept["routed"] is False


INVALID: list[tuple[str, dict[str, object], str]] = [
    # (path, body, what the message or the field at fault says); PUT with an operator key
    ("/v1/routing/channels/fax/routes/smsA", {}, "channel"),
    ("/v1/routing/channels/fax/policy", {}, "channel"),
    ("/v1/routing/channels/sms/routes/nosuch", {}, "unknown_provider"),
    ("/v1/routing/channels/email/routes/smsA", {}, "incompatible_provider"),
    ("/v1/routing/channels/sms/routes/smsA", {"cost": -0.01}, "cost"),
    ("/v1/routing/channels/sms/routes/smsA", {"weight": -1}, "weight"),
    ("/v1/routing/channels/sms/routes/smsA", {"priority": "1"}, "priority"),
    ("/v1/routing/channels/sms/policy", {"strategy": "cheapest"}, "strategy"),
    ("/v1/routing/channels/sms/policy", {"retry_mode": "custom"}, "retry_delays_s"),
    ("/v1/routing/channels/sms/policy", {"retry_initial_s": 1}, "retry_mode"),
    ("/v1/routing/channels/sms/policy", {"retry_mode": "linear", "retry_initial_s": -1}, "retry_initial_s"),
    ("/v1/routing/channels/sms/policy", {"max_cost": -1}, "max_cost"),
    ("/v1/routing/channels/sms/policy", {"min_success_rate": 1.5}, "min_success_rate"),
    ("/v1/routing/providers/p", {"kind": "carrier_pigeon"}, "kind"),
    ("/v1/routing/providers/p", {"kind": "mock_json", "rate_per_s": -5}, "rate_per_s"),
    ("/v1/routing/providers/p", {"kind": "mock_json", "rate_per_s": 0}, "rate_per_s"),
    ("/v1/routing/providers/p", {"kind": "mock_json", "burst": 0, "rate_per_s": 1}, "burst"),
    ("/v1/routing/providers/p", {"kind": "mock_json", "burst": 5}, "burst needs rate_per_s"),
    ("/v1/routing/providers/p", {"kind": "mock_json", "reserved_share": 1}, "reserved_share"),
    ("/v1/routing/providers/p", {"kind": "mock_json", "pacing": "slow"}, "pacing"),
    ("/v1/routing/providers/p", {"kind": "sms_gateway", "settings": {"acount_sid": "x"}}, "unknown setting"),
    (
        "/v1/routing/providers/p",
        {"kind": "sms_gateway", "settings": {"auth_token": "plain"}},
        "env:SWITCHBOARD_PROVIDER_",
    ),
    ("/v1/routing/providers/p", {"kind": "smtp", "settings": {"starttls": "false"}}, "true or false"),
    ("/v1/routing/providers/p", {"kind": "smtp", "settings": {"port": 70000}}, "port"),
    ("/v1/routing/providers/Bad%20Name", {"kind": "mock_json"}, "name"),
    ("/v1/routing/providers/smsA", {"kind": "smtp"}, "incompatible_provider"),
    ("/v1/routing/overrides/sms/nosuch", {"priority": 1}, "unknown_provider"),
    ("/v1/routing/overrides/mms/smsA", {"priority": 1}, "not_routed"),
    ("/v1/routing/overrides/fax/smsA", {"priority": 1}, "channel"),
    ("/v1/routing/overrides/sms/smsA", {"priority": 1.5}, "priority"),
]


async def test_invalid_configuration_is_refused_with_a_clear_message(api: Api, pool: asyncpg.Pool) -> None:
    ops = await api.key("ops", admin=True)
    await configure_sms(api, ops, "smsA")
    version = await pool.fetchval("SELECT version FROM routing_version")
    for path, body, says in INVALID:
        response = await api.client.put(path, json=body, headers=ops)
        assert response.status_code == 422, (path, body, response.text)
        error = response.json()["error"]
        said = " ".join([error["code"], error["message"], *(str(d["loc"]) for d in error["details"])])
        assert says in said, (path, body, error)
    # ... and nothing was written
    assert await pool.fetchval("SELECT version FROM routing_version") == version


async def test_statistics_per_channel_provider_campaign_and_overall(api: Api, pool: asyncpg.Pool) -> None:
    headers = await api.key("acme")
    batch = [sms(f"+44791100000{i}") for i in range(4)] + [
        {"channel": "email", "recipient": "a@example.com", "payload": {}}
    ]
    ids = (await api.client.post("/v1/messages/batch", json={"messages": batch}, headers=headers)).json()[
        "ids"
    ]
    # Given outcomes: two SMS sent (one after a retry), one failed, one pending, the email bounced
    await pool.execute(
        "UPDATE communication_logs SET status = s.status, provider = s.provider, attempts = s.attempts"
        " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[]) AS s(id, status, provider, attempts)"
        " WHERE communication_logs.id = s.id",
        ids,
        ["SENT", "DELIVERED", "FAILED", "PENDING", "BOUNCED"],
        ["p1", "p1", "p2", None, "m1"],
        [1, 2, 1, 0, 1],
    )
    attempts = [
        (ids[0], 1, "p1", "success", 10.0, 0.01),
        (ids[1], 1, "p2", "transient", 100.0, 0.0),
        (ids[1], 2, "p1", "success", 20.0, 0.01),
        (ids[2], 1, "p2", "permanent", 30.0, 0.0),
        (ids[4], 1, "m1", "permanent", 40.0, 0.0),
    ]
    await pool.executemany(
        "INSERT INTO delivery_attempts (log_id, attempt, provider, outcome, latency_ms, cost, finished_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, now())",
        attempts,
    )
    # When the statistics are read, overall and per channel and provider
    overall = (await api.client.get("/v1/stats", headers=headers)).json()
    by_channel = (await api.client.get("/v1/stats", params={"group_by": "channel"}, headers=headers)).json()
    by_provider = (await api.client.get("/v1/stats", params={"group_by": "provider"}, headers=headers)).json()
    by_campaign = (await api.client.get("/v1/stats", params={"group_by": "campaign"}, headers=headers)).json()
    # Then the figures add up
    [row] = overall["groups"]
    assert (
        row["key"],
        row["total"],
        row["sent"],
        row["delivered"],
        row["failed"],
        row["bounced"],
        row["pending"],
    ) == (
        "all",
        5,
        2,
        1,
        1,
        1,
        1,
    )
    assert row["attempts"] == 5 and row["retry_rate"] == 0.2 and row["cost"] == 0.02
    assert row["latency_avg_ms"] == 40.0 and 70 < row["latency_p95_ms"] <= 100
    channels = {r["key"]: r for r in by_channel["groups"]}
    assert channels["sms"]["total"] == 4 and channels["email"]["bounced"] == 1
    providers = {r["key"]: r for r in by_provider["groups"]}
    assert (
        providers["p1"]["attempts"] == 2
        and providers["p2"]["attempts"] == 2
        and providers["none"]["pending"] == 1
    )
    assert [r["key"] for r in by_campaign["groups"]] == ["none"]
    # ... a range in the past is empty, a wrong range is refused
    past = await api.client.get(
        "/v1/stats", params={"start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"}, headers=headers
    )
    assert past.json()["groups"][0]["total"] == 0
    wrong = await api.client.get(
        "/v1/stats", params={"start": "2020-01-02T00:00:00Z", "end": "2020-01-01T00:00:00Z"}, headers=headers
    )
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "invalid_range"
