"""Threat: a tenant (or anyone) turning small requests into large costs (the amplifiers), guessing keys,
or planting what a spreadsheet executes. Each limit is tried through the API in-process against a real
database, or at the pure function that enforces it."""

from __future__ import annotations

import csv
import threading
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from services.api.auththrottle import AuthThrottle
from services.api.contacts_csv import MAX_KEPT_REJECTIONS, parse_contacts
from services.api.routers import contacts as contacts_router
from services.api.schedule import ScheduleError, validate_cron
from services.api.templating import RenderTooLarge, parse, render
from services.dlq.entries import parse_entry
from services.dlq.export import Exporter, ExportFormat
from shared.bus import wire
from shared.core.models import DeadLetterReason, OutcomeClass, encode, utcnow
from shared.db.routing_store import resolve
from tests.helpers import dead_letter
from tests.integration.test_api_support import csv_upload, running_api
from tools.stack import Environment

# ---- template rendering: 0.5 KB in must not become megabytes out --------------------------------------


def test_a_small_template_cannot_render_megabytes() -> None:
    # Given a 0.6 KB template of 100 placeholders, and 10 KB values (what the API accepts)
    template = parse({"body": "{{ a }}" * 100})
    # When it is rendered / Then it is refused before the string is built
    with pytest.raises(RenderTooLarge):
        render(template, {"a": "x" * 10_000})
    assert len(render(template, {"a": "x" * 600})["body"]) == 60_000  # under 64 KiB: fine


async def test_preview_and_campaigns_refuse_renders_beyond_64_kib(environment: Environment) -> None:
    async with running_api(environment.settings) as api:
        key = await api.key("mallory")
        created = await api.client.post(
            "/v1/templates",
            json={"name": "amp", "channel": "sms", "content": {"body": "{{ a }}" * 100}},
            headers=key,
        )
        template = created.json()["id"]
        preview = await api.client.post(
            f"/v1/templates/{template}/preview", json={"variables": {"a": "x" * 10_000}}, headers=key
        )
        contacts = await api.client.post(
            "/v1/contact-lists",
            headers=key,
            **csv_upload("l", "sms", f"recipient,a\n+447911000001,{'x' * 2000}\n"),
        )
        campaign = await api.client.post(
            "/v1/campaigns",
            json={"name": "c", "template_id": template, "contact_list_id": contacts.json()["id"]},
            headers=key,
        )
    assert (preview.status_code, preview.json()["error"]["code"]) == (422, "payload_too_large")
    assert (campaign.status_code, campaign.json()["error"]["code"]) == (422, "payload_too_large")


# ---- keys: failed logins counted and throttled, keys that expire -------------------------------------


async def test_failed_keys_are_counted_and_the_source_throttled(environment: Environment) -> None:
    before = sum(
        REGISTRY.get_sample_value("switchboard_api_auth_failures_total", {"reason": r}) or 0
        for r in ("unknown", "malformed")
    )
    async with running_api(environment.settings, api_auth_failures_per_window=5) as api:
        good = await api.key("acme")
        # When one source guesses keys
        guesses = [
            (
                await api.client.get("/v1/messages", headers={"X-API-Key": f"sbk_guess{n:04d}_{'x' * 32}"})
            ).status_code
            for n in range(8)
        ]
        # Then after 5 failures it is refused without its keys being looked at, even a valid one
        throttled = await api.client.get("/v1/messages", headers=good)
    assert guesses[:5] == [401] * 5 and set(guesses[5:]) == {429}
    assert throttled.status_code == 429 and "Retry-After" in throttled.headers
    # ... and every failure was counted
    failures = sum(
        REGISTRY.get_sample_value("switchboard_api_auth_failures_total", {"reason": r}) or 0
        for r in ("unknown", "malformed")
    )
    assert failures - before >= 5


def test_the_throttle_forgets_after_its_window_and_keeps_bounded_memory() -> None:
    throttle = AuthThrottle(limit=2, window_s=60, max_sources=100)
    for _ in range(2):
        throttle.failed("10.9.9.9", now=0.0)
    assert throttle.retry_after("10.9.9.9", now=1.0) == pytest.approx(59.0)
    assert throttle.retry_after("10.9.9.9", now=61.0) is None
    for n in range(1000):
        throttle.failed(f"s{n}", now=0.0)
    assert len(throttle._sources) == 100


async def test_an_expired_key_is_refused(environment: Environment, pool: asyncpg.Pool) -> None:
    async with running_api(environment.settings) as api:
        key = await api.key("acme")
        assert (await api.client.get("/v1/messages", headers=key)).status_code == 200
        await pool.execute("UPDATE api_keys SET expires_at = now() - interval '1 second'")
        api.app.state.context._keys.clear()  # the key cache (SWITCHBOARD_API_KEY_CACHE_S) moves on
        answer = await api.client.get("/v1/messages", headers=key)
    assert (answer.status_code, answer.json()["error"]["message"]) == (401, "expired API key")


# ---- metrics: made-up methods do not become label values ------------------------------------------


async def test_made_up_methods_are_counted_as_other(environment: Environment) -> None:
    async with running_api(environment.settings) as api:
        for n in range(3):
            await api.client.request(f"X-EVIL-{n}", "/v1/messages")
    methods = {
        s.labels["method"]
        for m in REGISTRY.collect()
        if m.name == "switchboard_api_requests"
        for s in m.samples
    }
    assert "OTHER" in methods and not any(m.startswith("X-EVIL") for m in methods)


# ---- cron: a schedule is not an amplifier ----------------------------------------------------------


@pytest.mark.parametrize("expression", ["* * * * *", "*/5 * * * *", "0,1 9 * * *"])
def test_a_cron_more_often_than_every_15_minutes_is_refused(expression: str) -> None:
    with pytest.raises(ScheduleError, match="at most every 15 minutes"):
        validate_cron(expression)
    assert validate_cron("*/15 * * * *") == "*/15 * * * *"


# ---- contact lists: bad rows cost no more memory than good ones --------------------------------------


def test_a_file_of_bad_rows_keeps_a_bounded_number_of_reasons() -> None:
    data = ("recipient\n" + "not-a-number\n" * 20_000).encode()
    parsed = parse_contacts(data, "sms", 100_000)
    assert (parsed.rejected_count, len(parsed.rejected)) == (20_000, MAX_KEPT_REJECTIONS)


async def test_a_contact_file_is_parsed_off_the_event_loop(
    environment: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the parser, watched for the thread it runs in
    threads: list[int] = []

    def watched(*args: Any) -> Any:
        threads.append(threading.get_ident())
        return parse_contacts(*args)

    monkeypatch.setattr(contacts_router, "parse_contacts", watched)
    rows = "recipient\n" + "not-a-number\n" * 50_000  # about 650 KB of bad rows
    async with running_api(environment.settings) as api:
        key = await api.key("mallory")
        loop_thread = threading.get_ident()
        # When a large file of bad rows is uploaded
        answer = await api.client.post("/v1/contact-lists", headers=key, **csv_upload("l", "sms", rows))
    # Then it was refused with a bounded report, parsed in a worker thread, never on the event loop's
    assert answer.status_code == 422 and len(answer.json()["error"]["details"]) <= MAX_KEPT_REJECTIONS
    assert len(threads) == 1 and threads[0] != loop_thread


# ---- DLQ export: a tenant's text never runs as a spreadsheet formula ---------------------------------


def test_the_csv_export_neutralises_formulas(tmp_path: Path) -> None:
    letter = dead_letter(
        log_id=1,
        attempt=1,
        tenant="mallory",
        campaign_id=None,
        channel="webhook",
        recipient="https://93.184.216.34/x",
        provider="hooks",
        reason=DeadLetterReason.PERMANENT_ERROR,
        error_class=OutcomeClass.PERMANENT,
        error_code='=HYPERLINK("http://evil","click")',
        error_message="+cmd|' /C calc'!A0",
        created_at=utcnow(),
        dead_lettered_at=utcnow(),
    )
    entry = parse_entry(encode(letter), dict(wire.dead_letter(letter).headers), message_id="dl-1-1")
    path = tmp_path / "dlq.csv"
    with Exporter(path, ExportFormat.CSV) as out:
        out.write(entry, encode(letter))
    with path.open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    cells = [v for v in row.values() if v]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)
    assert row["error_code"] == '\'=HYPERLINK("http://evil","click")'


# ---- provider settings: env references cannot reach other variables ----------------------------------


def test_env_references_reach_only_provider_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATABASE_URL", "postgresql://owner:s3cret@db/x")
    monkeypatch.setenv("SWITCHBOARD_PROVIDER_SMS_TOKEN", "tok")
    assert resolve({"auth_token": "env:SWITCHBOARD_DATABASE_URL"}) == {"auth_token": ""}
    assert resolve({"auth_token": "env:SWITCHBOARD_PROVIDER_SMS_TOKEN"}) == {"auth_token": "tok"}


async def test_the_api_refuses_env_references_outside_the_prefix(environment: Environment) -> None:
    async with running_api(environment.settings) as api:
        ops = await api.key("ops", admin=True)
        answer = await api.client.put(
            "/v1/routing/providers/leak",
            json={
                "kind": "sms_gateway",
                "settings": {
                    "base_url": "https://93.184.216.34/x",
                    "auth_token": "env:SWITCHBOARD_DATABASE_URL",
                },
            },
            headers=ops,
        )
    assert answer.status_code == 422 and "SWITCHBOARD_PROVIDER_" in answer.text
