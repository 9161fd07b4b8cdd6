"""In-doubt sends end to end (issue 14 item 4): a provider that ignores idempotency keys is never sent one
log twice, however senders die or stall; the attempts that may have gone out are held for an operator."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers import all_terminal, insert_logs, ledger, wait_until
from tests.integration.test_providers import configure, route
from tools.stack import ROOT, Stack

LOOSE = {"name": "loose", "kind": "mock_json", "idempotency_keys": False}  # in_doubt defaults to hold
QUIET = {"mock_transient_rate": "0", "mock_permanent_rate": "0", "mock_rate_limit_rate": "0"}
SETTINGS = {
    **QUIET,
    "mock_ignore_idempotency_keys": '["loose"]',
    "backoff_base_s": "0.2",
    "backoff_cap_s": "1",
    "poll_interval_s": "0.05",
    "routing_refresh_s": "0.2",
    "standby_delay_s": "0.5",
    "standby_wait_s": "1",
    "provider_batch_max": "1",
}


def start(stack: Stack, senders: int, **overrides: str) -> None:
    settings = {**SETTINGS, **overrides}
    mock = stack.add("mock_provider", **settings)
    settings["provider_url"] = f"http://127.0.0.1:{mock.port}"
    stack.add("poller", **settings)
    for n in range(senders):
        stack.add("sender", f"sender-{n}", **settings)
    stack.add("responder", **settings)


async def held_for_an_operator(pool: Any) -> list[int]:
    rows = await pool.fetch("SELECT id FROM communication_logs WHERE status = 'IN_DOUBT' ORDER BY id")
    return [r["id"] for r in rows]


async def assert_never_sent_twice_and_every_hold_listed(stack: Stack, pool: Any) -> dict[str, int]:
    """The checks both tests share; returns the counts per status."""
    sends = [r for r in await ledger(stack.url("mock_provider")) if not r["replay"]]
    per_log = Counter(r["log_id"] for r in sends)
    assert [log_id for log_id, n in per_log.items() if n > 1] == []  # 0 double sends at the provider
    statuses = {r["id"]: r["status"] for r in await pool.fetch("SELECT id, status FROM communication_logs")}
    # every SENT log was accepted exactly once; an IN_DOUBT one at most once (that is the doubt)
    assert all(per_log[i] == 1 for i, s in statuses.items() if s == "SENT")
    held = await held_for_an_operator(pool)
    assert all(per_log[i] <= 1 for i in held)
    # each hold has one dead letter `in_doubt`, which the DLQ tool lists
    await wait_until(lambda: _outbox_empty(pool), timeout=30, what="dead letters relayed")
    listed = dlq_list(stack, "--reason", "in_doubt")
    assert sorted(row["log_id"] for row in listed) == held
    assert {(row["status"], row["error_code"]) for row in listed} <= {("IN_DOUBT", "IN_DOUBT")}
    attempts = await pool.fetch(
        "SELECT log_id, outcome FROM delivery_attempts WHERE outcome = 'in_doubt' ORDER BY log_id"
    )
    assert [a["log_id"] for a in attempts] == held
    return dict(Counter(statuses.values()))


def dlq_list(stack: Stack, *args: str) -> list[dict[str, Any]]:
    env = {**os.environ, **stack.environment.env}
    out = subprocess.run(
        [sys.executable, "-m", "services.dlq", "list", "--json", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


async def _outbox_empty(pool: Any) -> bool:
    return await pool.fetchval("SELECT count(*) FROM dead_letter_outbox") == 0


@pytest.mark.e2e
async def test_senders_killed_in_a_loop_never_send_a_log_twice_to_a_provider_without_keys(
    stack: Stack, pool
) -> None:
    # Given a provider that ignores idempotency keys (and says so), slow enough that kills catch calls
    # in flight, two senders and a short lease so that the poller republishes what a dead sender held
    await configure(pool, {"providers": [LOOSE], "routes": [route("sms", "loose")]})
    start(stack, senders=2, mock_latency_ms="300", mock_latency_jitter_ms="50", lease_s="2")
    await stack.start()
    mock = stack.url("mock_provider")
    ids: list[int] = []

    # When logs arrive in eight waves, and a sender is killed with SIGKILL (then restarted) as soon as
    # its wave's first request reached the provider and before the provider answered it (the kill is
    # timed on the provider's request count, not on the clock, so a fast machine cannot outrun it)
    for round_ in range(8):
        before = await _provider_requests(mock)
        wave = [{"channel": "sms", "recipient": f"+1415666{round_}{n:03d}"} for n in range(75)]
        ids += await insert_logs(pool, wave)
        await wait_until(
            lambda before=before: _requests_after(mock, before),
            timeout=30,
            interval=0.01,
            what="a request in flight",
        )
        victim = f"sender-{round_ % 2}"
        stack.kill(victim)
        await stack.restart(victim)
    await wait_until(lambda: all_terminal(pool), timeout=120, what="every log terminal")

    # Then the provider accepted no log twice, the in-doubt attempts were held and listed
    counts = await assert_never_sent_twice_and_every_hold_listed(stack, pool)
    print("kill -9 loop: logs per status", counts)
    assert counts.get("IN_DOUBT", 0) >= 1, counts  # kills during calls leave attempts in doubt
    assert counts.get("SENT", 0) + counts.get("IN_DOUBT", 0) == len(ids), counts


@pytest.mark.e2e
async def test_a_sender_frozen_longer_than_the_provider_timeout_sends_no_log_twice(
    stack: Stack, pool
) -> None:
    # Given one sender calling a provider without idempotency keys that answers in 300 ms, a provider
    # timeout of 1 s and a lease of 2 s
    await configure(pool, {"providers": [LOOSE], "routes": [route("sms", "loose")]})
    start(
        stack,
        senders=1,
        mock_latency_ms="300",
        mock_latency_jitter_ms="50",
        provider_timeout_s="1",
        lease_s="2",
    )
    await stack.start()
    ids = await insert_logs(pool, [{"channel": "sms", "recipient": f"+1415777{n:04d}"} for n in range(300)])
    await wait_until(
        lambda: _some_accepted(stack), timeout=30, interval=0.05, what="calls in flight at the provider"
    )

    # When the sender is frozen (SIGSTOP) for 4 s while its calls are in flight, then resumed
    sender = stack.processes["sender-0"]
    sender.signal(signal.SIGSTOP)
    await asyncio.sleep(4)
    sender.signal(signal.SIGCONT)
    await wait_until(lambda: all_terminal(pool), timeout=120, what="every log terminal")

    # Then no log was accepted twice (the ledger), and what was in doubt is held and listed
    counts = await assert_never_sent_twice_and_every_hold_listed(stack, pool)
    print("SIGSTOP 4 s: logs per status", counts)
    assert counts.get("SENT", 0) + counts.get("IN_DOUBT", 0) == len(ids), counts


async def _some_accepted(stack: Stack) -> bool:
    return len(await ledger(stack.url("mock_provider"))) >= 20


async def _provider_requests(mock: str) -> int:
    async with httpx.AsyncClient() as client:
        return int(orjson.loads((await client.get(f"{mock}/ledger/stats")).content).get("requests", 0))


async def _requests_after(mock: str, before: int) -> bool:
    return await _provider_requests(mock) > before
