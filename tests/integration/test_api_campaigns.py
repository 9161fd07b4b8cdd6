"""Templates, contact lists and campaigns against the real database, scheduler ticks included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.api.scheduler import tick
from tests.integration.test_api_support import Api, api_for, csv_upload
from tools.stack import Environment

CONTACTS = (
    "recipient,name,code\n+447911000001,Ada,A1\n+447911000002,Bob,B2\nbad,Cy,C3\n+447911000003,Dee,D4\n"
)


@pytest.fixture
async def api(environment: Environment) -> AsyncIterator[Api]:
    async with api_for(environment) as running:
        yield running


async def make_campaign_inputs(
    api: Api, headers: dict[str, str], contacts: str = CONTACTS
) -> tuple[int, int]:
    template = await api.client.post(
        "/v1/templates",
        json={"name": "welcome", "channel": "sms", "content": {"body": "Hi {{ name }}, code {{code}}"}},
        headers=headers,
    )
    assert template.status_code == 201, template.text
    upload = await api.client.post(
        "/v1/contact-lists", headers=headers, **csv_upload("list", "sms", contacts)
    )
    assert upload.status_code == 201, upload.text
    return template.json()["id"], upload.json()["id"]


async def test_templates_are_validated_and_previewed(api: Api) -> None:
    headers = await api.key("acme")
    # When a template with a malformed placeholder is created
    bad = await api.client.post(
        "/v1/templates",
        json={"name": "t", "channel": "sms", "content": {"body": "Hi {{ name"}},
        headers=headers,
    )
    # Then it is refused with the reason
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_template"
    assert "malformed placeholder" in bad.json()["error"]["message"]
    # When a good one is created, its variables are listed, and a preview renders it
    good = await api.client.post(
        "/v1/templates",
        json={"name": "t", "channel": "email", "content": {"subject": "{{a}}", "text": "{{ b }} {{a}}"}},
        headers=headers,
    )
    assert good.status_code == 201 and good.json()["variables"] == ["a", "b"]
    template_id = good.json()["id"]
    preview = await api.client.post(
        f"/v1/templates/{template_id}/preview", json={"variables": {"a": "1", "b": "2"}}, headers=headers
    )
    assert preview.json() == {"payload": {"subject": "1", "text": "2 1"}}
    missing = await api.client.post(
        f"/v1/templates/{template_id}/preview", json={"variables": {}}, headers=headers
    )
    assert missing.status_code == 422 and "a, b" in missing.json()["error"]["message"]
    # ... names are unique per tenant
    again = await api.client.post(
        "/v1/templates", json={"name": "t", "channel": "sms", "content": {"body": "x"}}, headers=headers
    )
    assert again.status_code == 409


async def test_a_csv_upload_keeps_valid_contacts_and_reports_rejected_rows(
    api: Api, pool: asyncpg.Pool
) -> None:
    headers = await api.key("acme")
    # When a CSV with one invalid and one duplicate row is uploaded
    text = CONTACTS + "+44 7911 000001,Ada twice,A5\n"
    response = await api.client.post("/v1/contact-lists", headers=headers, **csv_upload("vip", "sms", text))
    # Then the valid contacts are stored and each rejected row is reported with its line
    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["contact_count"], report["rejected_count"], report["columns"]) == (3, 2, ["name", "code"])
    assert [r["row"] for r in report["rejected"]] == [4, 6]
    assert "duplicate" in report["rejected"][1]["reason"]
    stored = await pool.fetch("SELECT recipient, variables FROM contacts ORDER BY position")
    assert [r["recipient"] for r in stored] == ["+447911000001", "+447911000002", "+447911000003"]
    # When a file has no valid row, or no recipient column, it is refused
    none_valid = await api.client.post(
        "/v1/contact-lists", headers=headers, **csv_upload("x", "sms", "recipient\nbad\n")
    )
    assert none_valid.status_code == 422 and none_valid.json()["error"]["details"][0]["loc"] == ["file", 2]
    no_column = await api.client.post(
        "/v1/contact-lists", headers=headers, **csv_upload("x", "sms", "phone\n1\n")
    )
    assert no_column.status_code == 422 and "recipient" in no_column.json()["error"]["message"]


async def test_a_campaign_now_renders_the_template_for_every_contact(api: Api, pool: asyncpg.Pool) -> None:
    headers = await api.key("acme")
    template_id, list_id = await make_campaign_inputs(api, headers)
    # When a campaign is created without a schedule
    response = await api.client.post(
        "/v1/campaigns",
        json={"name": "spring", "template_id": template_id, "contact_list_id": list_id, "priority": 1},
        headers=headers,
    )
    # Then it runs at once: one PENDING log per contact, rendered, due now
    assert response.status_code == 201, response.text
    campaign = response.json()
    assert campaign["status"] == "RUNNING" and campaign["counters"]["total"] == 3
    assert campaign["progress"]["pending"] == 3 and campaign["progress"]["done_ratio"] == 0
    logs = await pool.fetch(
        "SELECT recipient, payload, priority, next_attempt_at <= now() AS due FROM communication_logs"
        " WHERE campaign_id = $1 ORDER BY id",
        campaign["id"],
    )
    assert [r["payload"]["body"] for r in logs] == ["Hi Ada, code A1", "Hi Bob, code B2", "Hi Dee, code D4"]
    assert all(r["due"] and r["priority"] == 1 for r in logs)
    # When its logs finish, the scheduler marks it COMPLETED and progress shows it
    await pool.execute("UPDATE communication_logs SET status = 'SENT' WHERE campaign_id = $1", campaign["id"])
    await tick(api.app.state.context)
    done = (await api.client.get(f"/v1/campaigns/{campaign['id']}", headers=headers)).json()
    assert (
        done["status"] == "COMPLETED"
        and done["progress"]["sent"] == 3
        and done["progress"]["done_ratio"] == 1
    )


async def test_a_campaign_needs_a_compatible_template_and_list(api: Api) -> None:
    headers = await api.key("acme")
    template_id, list_id = await make_campaign_inputs(
        api, headers, contacts="recipient,name\n+447911000001,Ada\n"
    )
    base = {"name": "c", "template_id": template_id, "contact_list_id": list_id}
    response = await api.client.post("/v1/campaigns", json=base, headers=headers)
    assert response.status_code == 422 and "code" in response.json()["error"]["message"]
    unknown = await api.client.post("/v1/campaigns", json={**base, "template_id": 9999}, headers=headers)
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_template"


async def test_a_scheduled_campaign_waits_for_its_start_and_pause_resume_hold_and_release_it(
    api: Api, pool: asyncpg.Pool
) -> None:
    headers = await api.key("acme")
    template_id, list_id = await make_campaign_inputs(api, headers)
    start = datetime.now(UTC) + timedelta(hours=2)
    # Given a campaign scheduled in two hours
    created = await api.client.post(
        "/v1/campaigns",
        json={
            "name": "later",
            "template_id": template_id,
            "contact_list_id": list_id,
            "start_at": start.isoformat(),
        },
        headers=headers,
    )
    campaign_id = created.json()["id"]
    # Then it is SCHEDULED and its logs wait for the start time
    assert created.json()["status"] == "SCHEDULED"
    due = await pool.fetch(
        "SELECT next_attempt_at FROM communication_logs WHERE campaign_id = $1", campaign_id
    )
    assert len(due) == 3 and all(abs((r["next_attempt_at"] - start).total_seconds()) < 0.001 for r in due)
    # When it is paused
    paused = await api.client.post(f"/v1/campaigns/{campaign_id}/pause", headers=headers)
    # Then its logs stay PENDING but out of the poller's reach, their due time kept
    assert paused.json()["status"] == "PAUSED"
    states = await pool.fetch(
        "SELECT status, next_attempt_at = 'infinity' AS held FROM communication_logs WHERE campaign_id = $1",
        campaign_id,
    )
    assert all(r["status"] == "PENDING" and r["held"] for r in states)
    assert await pool.fetchval("SELECT count(*) FROM paused_logs WHERE campaign_id = $1", campaign_id) == 3
    one = await pool.fetchval("SELECT id FROM communication_logs WHERE campaign_id = $1 LIMIT 1", campaign_id)
    shown = (await api.client.get(f"/v1/messages/{one}", headers=headers)).json()
    assert shown["paused"] and shown["next_attempt_at"].startswith(start.strftime("%Y-%m-%dT%H:%M"))
    assert (await api.client.post(f"/v1/campaigns/{campaign_id}/pause", headers=headers)).status_code == 409
    # When a retry of a paused campaign comes back PENDING, the scheduler holds it too
    await pool.execute("DELETE FROM paused_logs WHERE log_id = $1", one)
    await pool.execute("UPDATE communication_logs SET next_attempt_at = now() WHERE id = $1", one)
    report = await tick(api.app.state.context)
    assert report.held == 1
    # When it is resumed
    resumed = await api.client.post(f"/v1/campaigns/{campaign_id}/resume", headers=headers)
    # Then it is SCHEDULED again and every log is due at its time again
    assert resumed.json()["status"] == "SCHEDULED"
    assert await pool.fetchval("SELECT count(*) FROM paused_logs") == 0
    held = await pool.fetchval(
        "SELECT count(*) FROM communication_logs WHERE campaign_id = $1 AND next_attempt_at = 'infinity'",
        campaign_id,
    )
    assert held == 0
    # When its start time comes, the scheduler makes it RUNNING
    await pool.execute("UPDATE campaign_specs SET start_at = now() WHERE campaign_id = $1", campaign_id)
    await tick(api.app.state.context)
    assert (await api.client.get(f"/v1/campaigns/{campaign_id}", headers=headers)).json()[
        "status"
    ] == "RUNNING"


async def test_cancelling_a_campaign_cancels_its_pending_logs_only(api: Api, pool: asyncpg.Pool) -> None:
    headers = await api.key("acme")
    template_id, list_id = await make_campaign_inputs(api, headers)
    body = {"name": "c", "template_id": template_id, "contact_list_id": list_id}
    campaign_id = (await api.client.post("/v1/campaigns", json=body, headers=headers)).json()["id"]
    first = await pool.fetchval("SELECT min(id) FROM communication_logs WHERE campaign_id = $1", campaign_id)
    await pool.execute("UPDATE communication_logs SET status = 'PROCESSING' WHERE id = $1", first)
    await api.client.post(f"/v1/campaigns/{campaign_id}/pause", headers=headers)
    # When the paused campaign is cancelled
    response = await api.client.post(f"/v1/campaigns/{campaign_id}/cancel", headers=headers)
    # Then it is CANCELLED, its pending logs too, and the one being processed is left alone
    assert response.status_code == 200 and response.json()["status"] == "CANCELLED"
    assert response.json()["progress"]["cancelled"] == 2 and response.json()["progress"]["processing"] == 1
    assert await pool.fetchval("SELECT count(*) FROM paused_logs") == 0
    assert (await api.client.post(f"/v1/campaigns/{campaign_id}/resume", headers=headers)).status_code == 409


async def test_a_cron_campaign_materialises_each_run_once(api: Api, pool: asyncpg.Pool) -> None:
    headers = await api.key("acme")
    template_id, list_id = await make_campaign_inputs(api, headers)
    # Given a campaign every day at 09:00 Paris time
    response = await api.client.post(
        "/v1/campaigns",
        json={
            "name": "daily",
            "template_id": template_id,
            "contact_list_id": list_id,
            "cron": "0 9 * * *",
            "timezone": "Europe/Paris",
        },
        headers=headers,
    )
    assert response.status_code == 201, response.text
    campaign = response.json()
    assert campaign["status"] == "SCHEDULED" and campaign["counters"]["total"] == 0
    assert datetime.fromisoformat(campaign["next_run_at"]).astimezone(UTC).hour in (7, 8)
    # When its run time comes and two schedulers tick at once
    run_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    await pool.execute(
        "UPDATE campaign_specs SET next_run_at = $2 WHERE campaign_id = $1", campaign["id"], run_at
    )
    context = api.app.state.context
    reports = await asyncio.gather(tick(context), tick(context))
    # Then the run is materialised once: 3 logs, one campaign_runs row, the next run tomorrow
    assert sum(r.runs for r in reports) == 1
    assert (
        await pool.fetchval("SELECT count(*) FROM communication_logs WHERE campaign_id = $1", campaign["id"])
        == 3
    )
    assert (
        await pool.fetchval("SELECT count(*) FROM campaign_runs WHERE campaign_id = $1", campaign["id"]) == 1
    )
    after = (await api.client.get(f"/v1/campaigns/{campaign['id']}", headers=headers)).json()
    assert after["status"] == "RUNNING" and after["runs"] == 1 and after["counters"]["total"] == 3
    assert datetime.fromisoformat(after["next_run_at"]) > datetime.now(UTC)
    # When the same run time is forced again (a stale scheduler), nothing is inserted twice
    await pool.execute(
        "UPDATE campaign_specs SET next_run_at = $2 WHERE campaign_id = $1", campaign["id"], run_at
    )
    assert (await tick(context)).runs == 0
    assert (
        await pool.fetchval("SELECT count(*) FROM communication_logs WHERE campaign_id = $1", campaign["id"])
        == 3
    )
