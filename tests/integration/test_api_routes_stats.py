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


async def test_routes_can_be_created_listed_replaced_and_deleted(api: Api, pool: asyncpg.Pool) -> None:
    headers = await api.key("acme")
    # When two providers are routed for SMS
    first = await api.client.post(
        "/v1/routes",
        json={
            "channel": "sms",
            "provider": "mocksms",
            "position": 0,
            "weight": 70,
            "cost_per_message": 0.0075,
            "rate_limit_per_s": 50,
            "burst": 100,
        },
        headers=headers,
    )
    second = await api.client.post(
        "/v1/routes", json={"channel": "sms", "provider": "mocksms2", "position": 1}, headers=headers
    )
    assert first.status_code == second.status_code == 201, first.text
    # Then they are listed in order, stored for the tenant
    listed = (await api.client.get("/v1/routes", params={"channel": "sms"}, headers=headers)).json()["items"]
    assert [(r["provider"], r["position"], r["cost_per_message"]) for r in listed] == [
        ("mocksms", 0, 0.0075),
        ("mocksms2", 1, 0.0),
    ]
    assert await pool.fetchval("SELECT count(*) FROM provider_routes WHERE tenant = 'acme'") == 2
    # When the same provider is routed twice, or replaced onto an existing one, it is a conflict
    dup = await api.client.post("/v1/routes", json={"channel": "sms", "provider": "mocksms"}, headers=headers)
    assert dup.status_code == 409
    clash = await api.client.put(
        f"/v1/routes/{second.json()['id']}", json={"channel": "sms", "provider": "mocksms"}, headers=headers
    )
    assert clash.status_code == 409
    # When one is replaced and the other deleted
    replaced = await api.client.put(
        f"/v1/routes/{second.json()['id']}",
        json={"channel": "sms", "provider": "mocksms2", "position": 5, "active": False},
        headers=headers,
    )
    assert replaced.status_code == 200 and replaced.json()["position"] == 5 and not replaced.json()["active"]
    deleted = await api.client.delete(f"/v1/routes/{first.json()['id']}", headers=headers)
    assert deleted.status_code == 204
    assert (await api.client.get(f"/v1/routes/{first.json()['id']}", headers=headers)).status_code == 404


INVALID_ROUTES: list[dict[str, object]] = [
    {"channel": "fax", "provider": "p"},
    {"channel": "sms", "provider": "Bad Name"},
    {"channel": "sms", "provider": "p", "weight": 5000},
    {"channel": "sms", "provider": "p", "position": -1},
    {"channel": "sms", "provider": "p", "cost_per_message": -1},
    {"channel": "sms", "provider": "p", "rate_limit_per_s": 0},
    {"channel": "sms", "provider": "p", "burst": 0},
    {"channel": "sms", "provider": "p", "active": "yes"},
    {"channel": "sms"},
]


async def test_invalid_routes_are_refused_with_the_field_at_fault(api: Api) -> None:
    headers = await api.key("acme")
    for route in INVALID_ROUTES:
        response = await api.client.post("/v1/routes", json=route, headers=headers)
        assert response.status_code == 422, route
        assert response.json()["error"]["details"][0]["loc"][0] == "body"


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
