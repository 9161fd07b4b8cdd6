"""What operators and users see of attempts (issue 14 items 7 and 8, issue 16 item 9): the status API's
attempt history with fallback reason, vendor reference and provider details; stats with attempt
success and fallbacks; receipts overdue (metric and stats); dead letters with the message's payload."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import asyncpg
import httpx
import pytest

from services.api.keys import generate_key, hash_key
from tests.helpers import all_terminal, wait_until
from tests.integration.test_providers import configure, route, sms
from tools.stack import ROOT, Stack

PEPPER = "visibility-pepper"
SETTINGS = {
    "backoff_base_s": "0.2",
    "backoff_cap_s": "1",
    "mock_latency_ms": "2",
    "mock_latency_jitter_ms": "1",
    "mock_transient_rate": "0",
    "mock_permanent_rate": "0",
    "mock_rate_limit_rate": "0",
    "poll_interval_s": "0.05",
    "routing_refresh_s": "0.2",
    "receipts_overdue_every_s": "0.5",
}


async def api_key(pool: asyncpg.Pool, tenant: str) -> str:
    new = generate_key()
    await pool.execute(
        "INSERT INTO api_keys (tenant, key_id, key_hash) VALUES ($1, $2, $3)",
        tenant,
        new.key_id,
        hash_key(new.key, PEPPER),
    )
    return new.key


@pytest.mark.e2e
async def test_attempts_stats_overdue_receipts_and_dead_letter_payloads_are_visible(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    # Given sms routed to a gateway that is down first, then to one whose delivery reports are due within
    # 1 s (no receipts receiver runs, so none will come), and the whole pipeline with the API
    await configure(
        pool,
        {
            "providers": [sms("down"), sms("gw", receipt_timeout_s=1.0)],
            "routes": [route("sms", "down", 0), route("sms", "gw", 1)],
        },
    )
    mock = stack.add("mock_provider", **SETTINGS)
    settings = {**SETTINGS, "provider_url": f"http://127.0.0.1:{mock.port}"}
    for service in ("poller", "sender", "responder"):
        stack.add(service, **settings)
    api = stack.add("api", api_key_pepper=PEPPER, api_scheduler_interval_s="0.2")
    api.env["SWITCHBOARD_API_PORT"] = str(api.port)
    await stack.start()
    async with httpx.AsyncClient() as client:
        outage = await client.post(
            f"{stack.url('mock_provider')}/admin/outage", json={"provider": "down", "seconds": 300}
        )
        assert outage.status_code == 200, outage.text
    key = await api_key(pool, "acme")

    async with httpx.AsyncClient(base_url=stack.url("api"), headers={"X-API-Key": key}, timeout=10) as client:
        # When two messages go out (one long enough for two segments) and one to an invalid number
        ids = []
        for recipient, body in (
            ("+447911123456", "hello"),
            ("+447911123457", "x" * 200),
            ("+9990000001", "never delivered"),
        ):
            sent = await client.post(
                "/v1/messages", json={"channel": "sms", "recipient": recipient, "payload": {"body": body}}
            )
            assert sent.status_code == 202, sent.text
            ids.append(sent.json()["id"])
        await wait_until(lambda: all_terminal(pool), timeout=60, what="every log terminal")

        # Then the status shows each attempt: the refused one on `down`, the fallback to `gw` with its
        # reason, the gateway's reference and details (status text, segments)
        detail = (await client.get(f"/v1/messages/{ids[1]}")).json()
        history = detail["attempt_history"]
        assert [(a["provider"], a["outcome"], a["error_code"]) for a in history] == [
            ("down", "recoverable", "PROVIDER_UNAVAILABLE"),
            ("gw", "success", None),
        ]
        assert history[1]["fallback_reason"] == "primary_failed"
        assert history[1]["vendor_ref"] and history[1]["vendor_ref"].startswith("SM")
        assert history[1]["details"]["provider_status"] == "queued"
        assert history[1]["details"]["segments"] == 2
        assert history[0]["details"]["http_status"] == 503

        # ... stats count attempts that succeeded and failed, the success rate and the fallbacks
        stats = (await client.get("/v1/stats", params={"group_by": "provider"})).json()
        rows = {g["key"]: g for g in stats["groups"]}
        assert (rows["gw"]["attempts_succeeded"], rows["gw"]["fallbacks"]) == (2, 3)  # all three fell back
        assert rows["gw"]["attempts_failed"] == 1  # the invalid number, refused by gw itself
        assert rows["down"]["attempts_failed"] == rows["down"]["attempts"] == 3
        assert rows["down"]["success_rate"] == 0.0

        # ... and once the delivery reports are overdue, the stats and the responder's metric say so
        await wait_until(lambda: _overdue_metric(stack, 2), timeout=30, what="receipts overdue on gw")
        stats = (await client.get("/v1/stats", params={"group_by": "channel"})).json()
        assert {g["key"]: g["receipts_overdue"] for g in stats["groups"]} == {"sms": 2}

    # ... the dead letter of the invalid number carries the message, and `dlq show` displays it
    await wait_until(lambda: _outbox_empty(pool), timeout=30, what="dead letter relayed")
    shown = dlq(stack, "show", str(ids[2]), "--json", "--reveal")
    (letter,) = shown["letters"]
    assert letter["payload"] == {"body": "never delivered"}
    table = dlq(stack, "show", str(ids[2]), "--reveal")
    assert "never delivered" in table and "payload" in table
    hidden = dlq(stack, "show", str(ids[2]))
    assert "never delivered" not in hidden and "payload: 1 field(s): body" in hidden


def dlq(stack: Stack, *args: str) -> Any:
    env = {**os.environ, **stack.environment.env, "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "services.dlq", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout) if "--json" in args else out.stdout


async def _overdue_metric(stack: Stack, expected: int) -> bool:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{stack.url('responder')}/metrics")).text
    match = re.search(r'^switchboard_receipts_overdue\{provider="gw"\} (\S+)$', text, re.M)
    return match is not None and float(match.group(1)) == expected


async def _outbox_empty(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM dead_letter_outbox") == 0
