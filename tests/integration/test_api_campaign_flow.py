"""Draft campaigns with JSON contacts, explicit send, stats, pacing and its ETA (API on the real database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import asyncpg
import pytest

from services.api.scheduler import tick
from tests.integration.test_api_support import Api, api_for, csv_upload
from tools.stack import Environment


@pytest.fixture
async def api(environment: Environment) -> AsyncIterator[Api]:
    async with api_for(environment) as running:
        yield running


async def template(
    api: Api, headers: dict[str, str], body: str = "Hi {{name}}, code {{code}}", **extra: Any
) -> int:
    response = await api.client.post(
        "/v1/templates",
        json={"name": f"t-{body[:5]}-{len(extra)}", "channel": "sms", "content": {"body": body, **extra}},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    template_id: int = response.json()["id"]
    return template_id


async def draft(api: Api, headers: dict[str, str], template_id: int, **fields: Any) -> dict[str, Any]:
    response = await api.client.post(
        "/v1/campaigns",
        json={"name": "spring", "template_id": template_id, "draft": True, **fields},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_a_draft_gets_json_contacts_reported_per_row_and_is_sent_explicitly(
    api: Api, pool: asyncpg.Pool
) -> None:
    headers = await api.key("acme")
    template_id = await template(api, headers)
    # Given a draft campaign
    campaign = await draft(api, headers, template_id)
    campaign_id = campaign["id"]
    assert campaign["status"] == "DRAFT" and campaign["stats"]["total"] == 0
    assert await pool.fetchval("SELECT count(*) FROM communication_logs") == 0
    # When JSON contacts are added, some of them bad
    rows = [
        {"phone": "+44 7911 000001", "name": "Ada", "variables": {"code": "A1"}},
        {"phone": "+447911000002", "name": "Bob"},  # no code
        {"email": "x@example.com", "variables": {"code": "C", "name": "Cy"}},  # email for sms
        {"phone": "not a number", "name": "Dee", "variables": {"code": "D"}},
        {"phone": "+447911000001", "name": "Ada again", "variables": {"code": "A2"}},  # duplicate
        {"recipient": "0044 7911 000003", "variables": {"name": "Eve", "code": "E5"}},
        {"name": "Fay", "variables": {"code": "F"}},  # no recipient
    ]
    added = await api.client.post(f"/v1/campaigns/{campaign_id}/contacts", json=rows, headers=headers)
    # Then the valid ones are kept, normalised, and each bad row is reported with its index and reason
    assert added.status_code == 200, added.text
    report = added.json()
    assert (report["added"], report["rejected_count"], report["contact_count"]) == (2, 5, 2)
    reasons = {r["index"]: r["reason"] for r in report["rejected"]}
    assert sorted(reasons) == [1, 2, 3, 4, 6]
    assert "missing template variables: code" in reasons[1]
    assert "needs a phone" in reasons[2]
    assert "E.164" in reasons[3]
    assert "duplicate" in reasons[4] and "index 0" in reasons[4]
    assert "exactly one of phone, email or recipient" in reasons[6]
    # When more contacts are added, one of which the campaign has already
    more = await api.client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        json=[
            {"phone": "+447911000003", "name": "E", "variables": {"code": "x"}},
            {"phone": "+447911000004", "name": "Gus", "variables": {"code": "G7"}},
        ],
        headers=headers,
    )
    assert more.json()["added"] == 1 and "already in the campaign" in more.json()["rejected"][0]["reason"]
    # ... and a request without any valid row is refused with the reasons
    none_valid = await api.client.post(
        f"/v1/campaigns/{campaign_id}/contacts", json=[{"phone": "bad"}], headers=headers
    )
    assert none_valid.status_code == 422 and none_valid.json()["error"]["code"] == "no_valid_contacts"
    assert none_valid.json()["error"]["details"][0]["loc"] == ["body", 0]
    # Still nothing is sent while it is a draft
    assert await pool.fetchval("SELECT count(*) FROM communication_logs") == 0
    # When it is sent
    sent = await api.client.post(f"/v1/campaigns/{campaign_id}/send", headers=headers)
    # Then it runs: one rendered log per contact, and the stats say so
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "RUNNING"
    logs = await pool.fetch(
        "SELECT recipient, payload FROM communication_logs WHERE campaign_id = $1 ORDER BY id", campaign_id
    )
    assert [(r["recipient"], r["payload"]["body"]) for r in logs] == [
        ("+447911000001", "Hi Ada, code A1"),
        ("+447911000003", "Hi Eve, code E5"),
        ("+447911000004", "Hi Gus, code G7"),
    ]
    assert sent.json()["stats"] == {
        "total": 3,
        "pending": 3,
        "sent": 0,
        "delivered": 0,
        "failed": 0,
        "successRate": 0.0,
    }
    # ... a sent campaign takes no more contacts and cannot be sent twice
    late = await api.client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        json=[{"phone": "+447911000009", "name": "Z", "variables": {"code": "z"}}],
        headers=headers,
    )
    assert late.status_code == 409 and late.json()["error"]["code"] == "not_a_draft"
    again = await api.client.post(f"/v1/campaigns/{campaign_id}/send", headers=headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_transition"
    # When its messages end, the stats count them as users do
    await pool.execute(
        "UPDATE communication_logs SET status = CASE recipient WHEN '+447911000001' THEN 'DELIVERED'"
        " WHEN '+447911000003' THEN 'SENT' ELSE 'FAILED' END WHERE campaign_id = $1",
        campaign_id,
    )
    stats = (await api.client.get(f"/v1/campaigns/{campaign_id}/stats", headers=headers)).json()
    assert stats == {"total": 3, "pending": 0, "sent": 2, "delivered": 1, "failed": 1, "successRate": 0.6667}
    shown = (await api.client.get(f"/v1/campaigns/{campaign_id}", headers=headers)).json()
    assert shown["stats"] == stats


async def test_a_draft_can_start_from_an_uploaded_list_be_cancelled_and_needs_contacts_to_send(
    api: Api, pool: asyncpg.Pool
) -> None:
    headers = await api.key("acme")
    template_id = await template(api, headers)
    upload = await api.client.post(
        "/v1/contact-lists",
        headers=headers,
        **csv_upload("vip", "sms", "recipient,name,code\n+447911000001,Ada,A1\n"),
    )
    list_id = upload.json()["id"]
    # Given a draft that starts from an uploaded list
    campaign = await draft(api, headers, template_id, contact_list_id=list_id)
    assert campaign["contact_list_id"] != list_id and campaign["stats"]["total"] == 0
    added = await api.client.post(
        f"/v1/campaigns/{campaign['id']}/contacts",
        json=[{"phone": "+447911000002", "name": "Bob", "variables": {"code": "B2"}}],
        headers=headers,
    )
    # Then it holds the list's contacts and its own, and the uploaded list is unchanged
    assert added.json()["contact_count"] == 2
    assert await pool.fetchval("SELECT count(*) FROM contacts WHERE list_id = $1", list_id) == 1
    # ... and its own list cannot be used by another campaign
    reuse = await api.client.post(
        "/v1/campaigns",
        json={"name": "x", "template_id": template_id, "contact_list_id": campaign["contact_list_id"]},
        headers=headers,
    )
    assert reuse.status_code == 422 and "belongs to campaign" in reuse.json()["error"]["message"]
    # When a draft is cancelled, it is CANCELLED and can no longer be sent
    cancelled = await api.client.post(f"/v1/campaigns/{campaign['id']}/cancel", headers=headers)
    assert cancelled.json()["status"] == "CANCELLED"
    assert (await api.client.post(f"/v1/campaigns/{campaign['id']}/send", headers=headers)).status_code == 409
    # When an empty draft is sent, it is refused
    empty = await draft(api, headers, template_id)
    refused = await api.client.post(f"/v1/campaigns/{empty['id']}/send", headers=headers)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "no_contacts"
    # ... and a non-draft campaign still needs a list
    missing = await api.client.post(
        "/v1/campaigns", json={"name": "x", "template_id": template_id}, headers=headers
    )
    assert missing.status_code == 422 and "contact_list_id is required" in missing.text
    # ... another tenant sees none of it
    other = await api.key("globex")
    assert (await api.client.post(f"/v1/campaigns/{empty['id']}/send", headers=other)).status_code == 404
    assert (
        await api.client.post(
            f"/v1/campaigns/{empty['id']}/contacts", json=[{"phone": "+447911000002"}], headers=other
        )
    ).status_code == 404


async def test_a_draft_sent_for_later_is_scheduled_and_a_cron_draft_gets_its_next_run(
    api: Api, pool: asyncpg.Pool
) -> None:
    headers = await api.key("acme")
    template_id = await template(api, headers, body="Hi {{name}}")
    one = await draft(api, headers, template_id)
    await api.client.post(
        f"/v1/campaigns/{one['id']}/contacts",
        json=[{"phone": "+447911000001", "name": "Ada"}],
        headers=headers,
    )
    start = datetime.now(UTC) + timedelta(hours=1)
    # When a draft is sent with a start time
    sent = await api.client.post(
        f"/v1/campaigns/{one['id']}/send", json={"start_at": start.isoformat()}, headers=headers
    )
    # Then it is SCHEDULED and its log is due then
    assert sent.json()["status"] == "SCHEDULED"
    due = await pool.fetchval(
        "SELECT next_attempt_at FROM communication_logs WHERE campaign_id = $1", one["id"]
    )
    assert abs((due - start).total_seconds()) < 0.001
    # When a cron draft is sent, it waits for its next run (none of its logs exist yet)
    cron = await draft(api, headers, template_id, cron="0 9 * * *")
    await api.client.post(
        f"/v1/campaigns/{cron['id']}/contacts",
        json=[{"phone": "+447911000001", "name": "Ada"}],
        headers=headers,
    )
    assert cron["next_run_at"] is None
    scheduled = (await api.client.post(f"/v1/campaigns/{cron['id']}/send", headers=headers)).json()
    assert scheduled["status"] == "SCHEDULED" and scheduled["next_run_at"] is not None
    await tick(api.app.state.context)
    assert (
        await pool.fetchval("SELECT count(*) FROM communication_logs WHERE campaign_id = $1", cron["id"]) == 0
    )


async def test_a_paced_campaign_spaces_its_messages_inside_the_preset_range_and_shows_its_eta(
    api: Api, pool: asyncpg.Pool
) -> None:
    headers = await api.key("acme")
    template_id = await template(api, headers, body="Hi {{name}}", **{"from": "+15550001"})
    contacts = [{"phone": f"+4479110000{i:02d}", "name": f"n{i}"} for i in range(20)]
    # Given two balanced-paced drafts of the same sender identity, sent one after the other
    first = await draft(api, headers, template_id, pacing="balanced")
    second = await draft(api, headers, template_id, pacing="balanced")
    for campaign in (first, second):
        await api.client.post(f"/v1/campaigns/{campaign['id']}/contacts", json=contacts, headers=headers)
    before = datetime.now(UTC)
    one = (await api.client.post(f"/v1/campaigns/{first['id']}/send", headers=headers)).json()
    two = (await api.client.post(f"/v1/campaigns/{second['id']}/send", headers=headers)).json()
    # Then each one's messages are due 5 to 10 s apart (random inside the range, not a fixed tick)
    due: dict[int, list[datetime]] = {}
    for campaign in (one, two):
        rows = await pool.fetch(
            "SELECT next_attempt_at FROM communication_logs WHERE campaign_id = $1 ORDER BY next_attempt_at",
            campaign["id"],
        )
        due[campaign["id"]] = [r["next_attempt_at"] for r in rows]
        gaps = [(b - a).total_seconds() for a, b in pairwise(due[campaign["id"]])]
        assert len(gaps) == 19 and all(5.0 <= g <= 10.0 for g in gaps), gaps
        assert len({round(g, 3) for g in gaps}) > 1
        # ... and its ETA is when its last message is due
        assert datetime.fromisoformat(campaign["eta"]) == due[campaign["id"]][-1]
        assert campaign["pacing"] == "balanced"
    assert due[first["id"]][0] >= before - timedelta(seconds=1)
    # ... the second queues behind the first (same identity): no interleaving inside the gaps
    gap = (due[second["id"]][0] - due[first["id"]][-1]).total_seconds()
    assert 5.0 <= gap <= 10.0
    # When the first is paused for a while and resumed, its pending messages are spaced from now again
    await api.client.post(f"/v1/campaigns/{first['id']}/pause", headers=headers)
    await pool.execute(
        "UPDATE paused_logs SET next_attempt_at = next_attempt_at - interval '1 hour' WHERE campaign_id = $1",
        first["id"],
    )
    resumed_at = datetime.now(UTC)
    resumed = (await api.client.post(f"/v1/campaigns/{first['id']}/resume", headers=headers)).json()
    rows = await pool.fetch(
        "SELECT next_attempt_at FROM communication_logs WHERE campaign_id = $1 ORDER BY next_attempt_at",
        first["id"],
    )
    times = [r["next_attempt_at"] for r in rows]
    assert times[0] >= resumed_at - timedelta(seconds=1)
    assert all(5.0 <= (b - a).total_seconds() <= 10.0 for a, b in pairwise(times))
    assert datetime.fromisoformat(resumed["eta"]) == times[-1]
    # An unpaced campaign shows no ETA
    plain = await draft(api, headers, template_id)
    assert plain["pacing"] == "none" and plain["eta"] is None
    # An unknown preset is refused
    bad = await api.client.post(
        "/v1/campaigns",
        json={"name": "x", "template_id": template_id, "draft": True, "pacing": "slow"},
        headers=headers,
    )
    assert bad.status_code == 422
