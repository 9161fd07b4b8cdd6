"""Channels and providers against the real services: each adapter against the mock provider's emulated
API, and every routing strategy (and a tenant override, reloaded without restart) end to end."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from ipaddress import ip_network
from typing import Any

import asyncpg
import httpx
import pytest

from services.sender.adapters import SendRequest
from services.sender.adapters.sms import SmsGatewayAdapter
from services.sender.adapters.smtp import SmtpAdapter
from services.sender.adapters.transport import AiohttpTransport
from services.sender.adapters.webhook import WebhookAdapter
from services.sender.adapters.whatsapp import WhatsAppCloudAdapter
from shared.core.models import OutcomeClass
from shared.db.routing_store import write_config
from shared.runtime.settings import DEV_WEBHOOK_SECRET
from tests.helpers import all_terminal, insert_logs, ledger, status_counts, wait_until
from tools.ports import free_port
from tools.stack import Stack

TOKEN = "mock-token"  # Settings.mock_auth_token's default, which the adapters also default to
LOOPBACK_ALLOWED = {"*": (ip_network("127.0.0.0/8"),)}
QUIET = {"mock_transient_rate": "0", "mock_permanent_rate": "0", "mock_rate_limit_rate": "0"}
FAST = {
    "backoff_base_s": "0.2",
    "backoff_cap_s": "1",
    "mock_latency_ms": "2",
    "mock_latency_jitter_ms": "1",
    "mock_retry_after_s": "0.3",
    "poll_interval_s": "0.05",
    "routing_refresh_s": "0.2",
    "reliability_refresh_s": "0.5",
    "standby_delay_s": "0.5",
}


def start_stack(stack: Stack, senders: int = 1, receipts: bool = False, **overrides: str) -> dict[str, str]:
    """The mock provider (HTTP APIs and SMTP), optionally the receipts receiver, poller, senders (each
    active on its own shards), responder."""
    settings = {**FAST, **overrides, "mock_smtp_port": str(free_port())}
    if receipts:
        settings["receipts_port"] = str(free_port())
        settings["mock_receipt_url"] = f"http://127.0.0.1:{settings['receipts_port']}"
        stack.add("receipts", **settings)
    mock = stack.add("mock_provider", **settings)
    settings["provider_url"] = f"http://127.0.0.1:{mock.port}"
    stack.add("poller", **settings)
    if senders > 1:  # each sender active on its own shards first, standby for the others later
        settings["standby_delay_s"] = overrides.get("standby_delay_s", "5")
    shards = int(settings.get("shards", "4"))
    for n in range(senders):
        mine = [s for s in range(shards) if s % senders == n]
        stack.add("sender", f"sender-{n}", **settings, consume_shards=str(mine))
    stack.add("responder", **settings)
    return settings


def sms(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": "sms_gateway", "settings": {"account_sid": f"AC{name}"}, **fields}


def whatsapp(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": "whatsapp_cloud", "settings": {"phone_number_id": f"pn-{name}"}, **fields}


def smtp(name: str, **fields: Any) -> dict[str, Any]:
    # The mock's SMTP server names the provider after the login.
    return {"name": name, "kind": "smtp", "settings": {"username": name, "password": TOKEN}, **fields}


def webhook(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": "webhook", "settings": {}, **fields}


def route(channel: str, provider: str, priority: int = 0, **fields: Any) -> dict[str, Any]:
    return {"channel": channel, "provider": provider, "priority": priority, **fields}


async def configure(pool: asyncpg.Pool, document: dict[str, Any]) -> None:
    async with pool.acquire() as conn:
        await write_config(conn, document)


def by_provider(rows: list[dict[str, Any]], channel: str) -> Counter[str]:
    return Counter(r["provider"] for r in rows if r["channel"] == channel and not r["replay"])


# ---- every adapter against the mock provider's emulated API --------------------------------------------


@pytest.mark.e2e
async def test_each_adapter_speaks_the_mock_providers_api(stack: Stack) -> None:
    # Given the mock provider alone, with its SMTP server
    smtp_port = free_port()
    mock = stack.add("mock_provider", mock_smtp_port=str(smtp_port), mock_latency_ms="1", **QUIET)
    await stack.start()
    base = stack.url("mock_provider")
    transport = AiohttpTransport(5, 10)
    sms_gw = SmsGatewayAdapter(f"{base}/gw", {"account_sid": "AC1"}, transport, default_token=TOKEN)
    bad_gw = SmsGatewayAdapter(f"{base}/gw", {"account_sid": "AC1", "auth_token": "wrong"}, transport)
    wa = WhatsAppCloudAdapter(f"{base}/wa", {"access_token": TOKEN, "phone_number_id": "pn-1"}, transport)
    mailer = SmtpAdapter({"username": "mailer", "password": TOKEN}, "127.0.0.1", smtp_port, 5)
    # (the mock listens on loopback: an address the outbound policy refuses unless allowed)
    hooks = WebhookAdapter({"secret": DEV_WEBHOOK_SECRET}, transport, allowlist=LOOPBACK_ALLOWED)
    bad_hooks = WebhookAdapter({"secret": "not the one"}, transport, allowlist=LOOPBACK_ALLOWED)

    def req(channel: str, recipient: str, n: int, **payload: Any) -> SendRequest:
        return SendRequest("gw", channel, recipient, payload or {"body": "hi"}, f"{n}-1", n, 1)

    hook_url = f"http://127.0.0.1:{mock.port}/hooks/acme/orders"
    try:
        # When every adapter sends, and some send what the provider refuses
        results = {
            "sms": await sms_gw.send(req("sms", "+14155550001", 1)),
            "sms again": await sms_gw.send(req("sms", "+14155550001", 1)),
            "mms": await sms_gw.send(
                req("mms", "+14155550002", 2, body="pic", media_urls=["https://x/1.png"])
            ),
            "sms invalid": await sms_gw.send(req("sms", "+9990000001", 3)),
            "sms carrier error": await sms_gw.send(req("sms", "+8880000001", 4)),
            "sms bad token": await bad_gw.send(req("sms", "+14155550003", 5)),
            "wa text": await wa.send(req("whatsapp", "+447700900001", 6)),
            "wa template": await wa.send(
                req("whatsapp", "+447700900002", 7, template={"name": "t", "language": "en"})
            ),
            "wa blocked": await wa.send(req("whatsapp", "+7770000001", 8)),
            "email": await mailer.send(req("email", "jo@example.com", 9, subject="s", body="b")),
            "email bounce": await mailer.send(req("email", "bounce.x@example.com", 10)),
            "webhook": await hooks.send(req("webhook", hook_url, 11)),
            "webhook bad signature": await bad_hooks.send(req("webhook", hook_url, 12)),
            "webhook gone": await hooks.send(req("webhook", f"{base}/hooks/acme/gone", 13)),
        }
        async with httpx.AsyncClient() as client:
            await client.post(f"{base}/admin/outage", json={"provider": "gw", "seconds": 30})
        results["sms outage"] = await sms_gw.send(req("sms", "+14155550004", 14))
    finally:
        await mailer.close()
        await transport.close()

    # Then each answer is classified as the provider meant it
    S, T, R, P = (
        OutcomeClass.SUCCESS,
        OutcomeClass.TRANSIENT,
        OutcomeClass.RECOVERABLE,
        OutcomeClass.PERMANENT,
    )
    expected = {
        "sms": (S, None),
        "sms again": (S, None),
        "mms": (S, None),
        "sms invalid": (P, "INVALID_NUMBER"),
        "sms carrier error": (T, "SERVER_ERROR"),
        "sms bad token": (R, "AUTH_FAILED"),
        "wa text": (S, None),
        "wa template": (S, None),
        "wa blocked": (P, "UNDELIVERABLE"),
        "email": (S, None),
        "email bounce": (P, "HARD_BOUNCE"),
        "webhook": (S, None),
        "webhook bad signature": (P, "HTTP_401"),
        "webhook gone": (P, "ENDPOINT_GONE"),
        "sms outage": (R, "PROVIDER_UNAVAILABLE"),
    }
    assert {k: (r.outcome, r.error_code) for k, r in results.items()} == expected
    assert results["sms"].vendor_ref and results["sms"].vendor_ref.startswith("SM")
    assert results["sms again"].replay and results["sms again"].vendor_ref == results["sms"].vendor_ref
    assert results["wa text"].vendor_ref and results["wa text"].vendor_ref.startswith("wamid.")
    assert results["email bounce"].bounced and results["wa blocked"].bounced
    # ... and the ledger holds each accepted message once, the repeat as a replay
    rows = await ledger(base)
    sends = [(r["channel"], r["provider"], r["idempotency_key"]) for r in rows if not r["replay"]]
    assert sorted(sends) == sorted(
        [
            ("sms", "gw", "1-1"),
            ("mms", "gw", "2-1"),
            ("whatsapp", "wa", "6-1"),
            ("whatsapp", "wa", "7-1"),
            ("email", "mailer", "9-1"),
            ("webhook", "acme", "11-1"),
        ]
    )
    assert [r["idempotency_key"] for r in rows if r["replay"]] == ["1-1"]


# ---- every strategy end to end, and a tenant override without restart -----------------------------------


async def seed_history(pool: asyncpg.Pool, provider: str, outcome: str, count: int) -> None:
    ids = await insert_logs(pool, [{"channel": "mms", "recipient": f"+1999000{n:04d}"} for n in range(count)])
    await pool.execute("UPDATE communication_logs SET status = 'FAILED' WHERE id = ANY($1::bigint[])", ids)
    await pool.executemany(
        "INSERT INTO delivery_attempts (log_id, attempt, provider, outcome, finished_at)"
        " VALUES ($1, 1, $2, $3, now())",
        [(i, provider, outcome) for i in ids],
    )


@pytest.mark.e2e
async def test_every_strategy_routes_as_configured_and_changes_apply_without_restart(
    stack: Stack, pool
) -> None:
    # Given routing in PostgreSQL: one strategy per channel, and a reliability history for mms
    await configure(
        pool,
        {
            "providers": [
                sms("smsA"),
                sms("smsB"),
                sms("smsC"),
                sms("mmsA"),
                sms("mmsB"),
                whatsapp("waA"),
                whatsapp("waB"),
                smtp("mailA"),
                smtp("mailB"),
                webhook("hookA"),
                webhook("hookB"),
            ],
            "routes": [
                route("sms", "smsA", 0),
                route("sms", "smsB", 1),
                route("sms", "smsC", 2),
                route("email", "mailA", 0, cost=0.002),
                route("email", "mailB", 1, cost=0.001),
                route("whatsapp", "waA", 0, weight=3),
                route("whatsapp", "waB", 1, weight=1),
                route("mms", "mmsA", 0),
                route("mms", "mmsB", 1),
                route("webhook", "hookA", 0),
                route("webhook", "hookB", 1),
            ],
            "policies": [
                {"channel": "sms", "strategy": "round_robin"},
                {"channel": "email", "strategy": "least_cost"},
                {"channel": "whatsapp", "strategy": "weighted"},
                {"channel": "mms", "strategy": "highest_reliability"},
                {"channel": "webhook", "strategy": "primary"},
            ],
        },
    )
    await seed_history(pool, "mmsA", "transient", 30)
    await seed_history(pool, "mmsB", "success", 30)
    # (the webhooks go to the mock provider on loopback, which every tenant is allowed to reach here)
    start_stack(stack, **QUIET, outbound_allowlist='{"*": ["127.0.0.1/32"]}')
    await stack.start()
    hooks = f"{stack.url('mock_provider')}/hooks/acme"
    # When 60 messages per channel are sent
    rows: list[dict[str, Any]] = []
    for n in range(60):
        rows += [
            {"channel": "sms", "recipient": f"+1415550{n:04d}"},
            {"channel": "email", "recipient": f"user{n}@example.com"},
            {"channel": "whatsapp", "recipient": f"+4477009{n:05d}"},
            {
                "channel": "mms",
                "recipient": f"+1415660{n:04d}",
                "payload": {"body": "p", "media_urls": ["https://x"]},
            },
            {"channel": "webhook", "recipient": f"{hooks}/n{n}"},
        ]
    await insert_logs(pool, rows)
    await wait_until(lambda: all_terminal(pool), timeout=90, what="every log terminal")
    assert (await status_counts(pool)).get("SENT") == 300
    sent = await ledger(stack.url("mock_provider"))
    # Then round robin spread sms evenly, least cost chose the cheaper mailer, weighted split 3:1,
    # highest reliability chose the provider with the better record, primary used only the first
    assert by_provider(sent, "sms") == {"smsA": 20, "smsB": 20, "smsC": 20}
    assert by_provider(sent, "email") == {"mailB": 60}
    weighted = by_provider(sent, "whatsapp")
    assert weighted["waA"] + weighted["waB"] == 60 and 33 <= weighted["waA"] <= 54
    assert by_provider(sent, "mms") == {"mmsB": 60}
    attempts = Counter(
        r["provider"]
        for r in await pool.fetch(
            "SELECT a.provider FROM delivery_attempts a JOIN communication_logs l ON l.id = a.log_id"
            " WHERE l.channel = 'webhook'"
        )
    )
    assert attempts == {"hookA": 60}

    # When the sms strategy becomes a fallback chain and tenant acme prefers smsC, while running
    async with pool.acquire() as conn:
        await conn.execute("UPDATE channel_policies SET strategy = 'fallback' WHERE channel = 'sms'")
        await conn.execute(
            "INSERT INTO tenant_routes (tenant, channel, provider, priority) VALUES"
            " ('acme', 'sms', 'smsC', -1)"
        )
    await asyncio.sleep(1.0)  # a few routing refreshes
    started = time.monotonic()
    await insert_logs(
        pool,
        [
            {"channel": "sms", "recipient": f"+1415770{n:04d}", "tenant": t}
            for n in range(10)
            for t in ("acme", "default")
        ],
    )
    await wait_until(lambda: all_terminal(pool), timeout=30, what="the new logs terminal")
    # Then, without a restart, acme's go to smsC and everyone else's to the head of the chain
    routed = {
        (r["tenant"], r["provider"])
        for r in await pool.fetch(
            "SELECT tenant, provider FROM communication_logs WHERE recipient LIKE '+1415770%'"
        )
    }
    assert routed == {("acme", "smsC"), ("default", "smsA")}
    assert time.monotonic() - started < 30
    assert {p.name: p.starts for p in stack.processes.values()}["sender-0"] == 1
