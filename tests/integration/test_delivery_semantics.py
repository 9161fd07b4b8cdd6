"""Delivery semantics against the real services (issue 14): a local wait is a deferral, not an attempt;
a failing provider loses its traffic to the next one; a message unreachable on WhatsApp goes out as
SMS; a sender frozen with calls in flight never makes a provider accept one log twice."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from services.api.store.messages import get_log
from tests.helpers import all_terminal, insert_logs, ledger, status_counts, wait_until
from tests.integration.test_pipeline import start_pipeline
from tests.integration.test_providers import QUIET, configure, route, sms, start_stack, whatsapp
from tools.stack import Stack


async def dead_letter_count(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM dead_letter_outbox")
    return count


def sender_events(stack: Stack, event: str) -> list[dict[str, Any]]:
    events = []
    for name, process in stack.processes.items():
        if name.startswith("sender") and process.log_path.exists():
            for line in process.log_path.read_text(errors="replace").splitlines():
                if f'"{event}"' in line:
                    events.append(orjson.loads(line))
    return events


@pytest.mark.e2e
async def test_paced_whatsapp_campaign_is_deferred_not_failed(stack: Stack, pool: asyncpg.Pool) -> None:
    # Given a WhatsApp provider paced to 50 messages/s (one business number), two senders that wait at
    # most 1 s for a pacing slot, and a provider that never fails
    await configure(
        pool,
        {"providers": [whatsapp("wa", pacing_gap_ms=20)], "routes": [route("whatsapp", "wa")]},
    )
    start_stack(stack, senders=2, rate_limit_max_wait_s="1", **QUIET)
    await stack.start()
    # When a campaign of 2 000 WhatsApp messages is inserted at once
    ids = await insert_logs(
        pool, [{"channel": "whatsapp", "recipient": f"+4477009{n:05d}"} for n in range(2000)]
    )
    await wait_until(lambda: all_terminal(pool), timeout=600, interval=1, what="every log terminal")
    # Then every log is SENT after exactly one attempt, and none was dead-lettered
    assert await status_counts(pool) == {"SENT": 2000}
    assert await dead_letter_count(pool) == 0
    attempts = await pool.fetch("SELECT log_id, attempt, outcome, channel FROM delivery_attempts")
    assert sorted(r["log_id"] for r in attempts) == sorted(ids)  # one attempt row per log
    assert {(r["attempt"], r["outcome"], r["channel"]) for r in attempts} == {(1, "success", "whatsapp")}
    assert await pool.fetchval("SELECT max(attempts) FROM communication_logs") == 1
    # ... although most of them had to wait for a slot, and were deferred (not attempted) meanwhile
    deferred = await pool.fetchval("SELECT count(*) FROM communication_logs WHERE deferrals > 0")
    deferrals = await pool.fetchval("SELECT coalesce(sum(deferrals), 0) FROM communication_logs")
    # ... and the provider got each once, at the pace: 2 000 sends at 50/s span at least 40 s
    rows = [r for r in await ledger(stack.url("mock_provider")) if not r["replay"]]
    assert len(rows) == len({r["log_id"] for r in rows}) == 2000
    times = sorted(datetime.fromisoformat(r["arrived_at"]) for r in rows)
    span = (times[-1] - times[0]).total_seconds()
    print(f"paced campaign: {deferred} logs deferred {deferrals} times in all; sends spanned {span:.1f} s")
    assert deferred > 0
    assert span >= 1999 * 0.020 * 0.95


@pytest.mark.e2e
async def test_primary_failing_every_request_loses_its_traffic_to_the_fallback(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    # Given sms over smsA then smsB, and smsA answering 500 to every request for the whole test
    await configure(
        pool,
        {
            "providers": [sms("smsA"), sms("smsB")],
            "routes": [route("sms", "smsA", 0), route("sms", "smsB", 1)],
        },
    )
    start_stack(stack, circuit_open_s="60", **QUIET)
    await stack.start()
    mock = stack.url("mock_provider")
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{mock}/admin/outage", json={"provider": "smsA", "seconds": 600, "answer": "server_error"}
        )
        response.raise_for_status()
        # When 300 sms are sent in waves
        for wave in range(15):
            await insert_logs(
                pool, [{"channel": "sms", "recipient": f"+1415{wave:03d}{n:04d}"} for n in range(20)]
            )
            await asyncio.sleep(0.2)
        await wait_until(lambda: all_terminal(pool), timeout=120, what="every log terminal")
        calls = orjson.loads((await client.get(f"{mock}/calls", params={"provider": "smsA"})).content)
    # Then every log was delivered by smsB, none dead-lettered
    assert await status_counts(pool) == {"SENT": 300}
    assert await dead_letter_count(pool) == 0
    sent_by = Counter(r["provider"] for r in await ledger(mock) if not r["replay"])
    assert sent_by == {"smsB": 300}
    # ... no log tried smsA more than failover_after (2) times before moving on
    per_log = await pool.fetch(
        "SELECT log_id, count(*) FILTER (WHERE provider = 'smsA') AS on_a"
        " FROM delivery_attempts GROUP BY log_id"
    )
    assert max(r["on_a"] for r in per_log) <= 2
    # ... and the breaker opened within its window of 20 calls (plus the calls already in flight then),
    # after which smsA got no more traffic than its probes
    opened = [
        e for e in sender_events(stack, "circuit_changed") if e["provider"] == "smsA" and e["state"] == "OPEN"
    ]
    assert opened, "the circuit of smsA never opened"
    failed_calls = [c for c in calls if c["result"] == "outage"]
    print(
        f"smsA refused {len(failed_calls)} calls; logs attempted there: {sum(r['on_a'] > 0 for r in per_log)}"
    )
    assert len(failed_calls) < 150


@pytest.mark.e2e
async def test_a_few_random_server_errors_do_not_open_the_breaker(stack: Stack, pool: asyncpg.Pool) -> None:
    # Given sms over smsA then smsB, and a provider failing 5 % of requests with a 500 at random
    await configure(
        pool,
        {
            "providers": [sms("smsA"), sms("smsB")],
            "routes": [route("sms", "smsA", 0), route("sms", "smsB", 1)],
        },
    )
    start_stack(stack, mock_transient_rate="0.05", mock_permanent_rate="0", mock_rate_limit_rate="0")
    await stack.start()
    # When 400 sms are sent
    await insert_logs(pool, [{"channel": "sms", "recipient": f"+1415666{n:04d}"} for n in range(400)])
    await wait_until(lambda: all_terminal(pool), timeout=120, what="every log terminal")
    # Then all are delivered, the failed ones retried, and smsA's breaker never opened
    assert await status_counts(pool) == {"SENT": 400}
    failures = await pool.fetchval("SELECT count(*) FROM delivery_attempts WHERE outcome = 'transient'")
    total = await pool.fetchval("SELECT count(*) FROM delivery_attempts")
    print(f"{failures} random 500s among {total} attempts")
    assert failures > 0
    assert [e for e in sender_events(stack, "circuit_changed") if e["provider"] == "smsA"] == []
    assert (
        Counter(r["provider"] for r in await ledger(stack.url("mock_provider")) if not r["replay"])["smsA"]
        > 300
    )


@pytest.mark.e2e
async def test_whatsapp_refusing_a_recipient_as_unreachable_sends_it_as_sms(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    # Given WhatsApp and SMS providers; tenant acme falls back from whatsapp to sms; a default-tenant
    # message names its own fallback; +555 numbers are not WhatsApp users
    await configure(
        pool,
        {
            "providers": [whatsapp("wa"), sms("smsA")],
            "routes": [route("whatsapp", "wa"), route("sms", "smsA")],
            "channel_fallbacks": [{"tenant": "acme", "channel": "whatsapp", "fallback_channels": ["sms"]}],
        },
    )
    start_stack(stack, **QUIET)
    await stack.start()
    # When WhatsApp messages go to unreachable and reachable numbers, with and without a fallback
    acme = await insert_logs(
        pool,
        [{"tenant": "acme", "channel": "whatsapp", "recipient": f"+5550001{n:03d}"} for n in range(10)]
        + [{"tenant": "acme", "channel": "whatsapp", "recipient": f"+4477001{n:03d}"} for n in range(10)],
    )
    own = await insert_logs(pool, [{"channel": "whatsapp", "recipient": "+5550002000"}])
    await pool.execute("UPDATE communication_logs SET fallback_channels = '{sms}' WHERE id = $1", own[0])
    (none,) = await insert_logs(pool, [{"channel": "whatsapp", "recipient": "+5550003000"}])
    await wait_until(lambda: all_terminal(pool), timeout=60, what="every log terminal")
    # Then the unreachable ones went out as SMS (attempt 1 refused on whatsapp, attempt 2 sent on sms)
    unreachable = acme[:10] + own
    rows = await pool.fetch(
        "SELECT log_id, attempt, channel, provider, outcome, error_code, fallback_reason"
        " FROM delivery_attempts WHERE log_id = ANY($1::bigint[]) ORDER BY log_id, attempt",
        unreachable,
    )
    by_log: dict[int, list[tuple[Any, ...]]] = {}
    for r in rows:
        by_log.setdefault(r["log_id"], []).append(
            (r["attempt"], r["channel"], r["provider"], r["outcome"], r["error_code"], r["fallback_reason"])
        )
    expected = [
        (1, "whatsapp", "wa", "permanent", "UNDELIVERABLE", None),
        (2, "sms", "smsA", "success", None, "channel_fallback"),
    ]
    assert by_log == {log_id: expected for log_id in unreachable}
    async with pool.acquire() as conn:
        detail = await get_log(conn, "acme", acme[0])
        reachable = await get_log(conn, "acme", acme[10])
    assert detail is not None and reachable is not None
    assert (detail["status"], detail["channel"], detail["delivered_channel"]) == ("SENT", "whatsapp", "sms")
    assert (reachable["status"], reachable["delivered_channel"]) == ("SENT", "whatsapp")
    # ... the provider got each on the channel that delivered it
    sends = {(r["log_id"], r["channel"]) for r in await ledger(stack.url("mock_provider")) if not r["replay"]}
    assert {(log_id, "sms") for log_id in unreachable} <= sends
    assert not any(channel == "whatsapp" and log_id in unreachable for log_id, channel in sends)
    # ... and without a fallback the refusal is final: BOUNCED, dead-lettered
    status = await pool.fetchval("SELECT status FROM communication_logs WHERE id = $1", none)
    assert status == "BOUNCED"
    assert await pool.fetchval("SELECT count(*) FROM dead_letter_outbox WHERE log_id = $1", none) <= 1


@pytest.mark.e2e
async def test_sender_frozen_past_the_provider_timeout_never_gets_a_log_accepted_twice(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    # Given a provider that answers in 0.4 s and honours idempotency keys, and a 1 s provider timeout
    start_pipeline(
        stack,
        senders=1,
        provider_timeout_s="1",
        mock_latency_ms="400",
        mock_latency_jitter_ms="50",
        mock_transient_rate="0",
        mock_permanent_rate="0",
        mock_rate_limit_rate="0",
        backoff_base_s="0.2",
        backoff_cap_s="1",
    )
    await stack.start()
    mock = stack.url("mock_provider")
    await insert_logs(pool, [{"channel": "sms", "recipient": f"+1415777{n:04d}"} for n in range(300)])
    # When the sender is frozen for 3 s while its calls are in flight, then resumed
    # (the ledger records a send when it is answered, so the freeze waits for requests that arrived and
    # are not answered yet: with bulk requests the first answers may already cover every log)
    await wait_until(
        lambda: _requests_in_flight(mock, 300), timeout=60, interval=0.02, what="sends under way"
    )
    sender = stack.processes["sender-0"]
    sender.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(3)
    finally:
        sender.signal(signal.SIGCONT)
    await wait_until(lambda: all_terminal(pool), timeout=120, what="every log terminal")
    # Then the calls it made before the freeze were answered after its timeout: unknown outcomes,
    # retried under the same key, answered from the provider's ledger; no log was accepted twice
    rows = await ledger(mock)
    accepted = Counter(r["log_id"] for r in rows if not r["replay"])
    assert [log_id for log_id, n in accepted.items() if n > 1] == []
    assert await status_counts(pool) == {"SENT": 300}
    unknown = await pool.fetch("SELECT log_id, attempt FROM delivery_attempts WHERE outcome = 'unknown'")
    replays = sum(r["replay"] for r in rows)
    print(
        f"{len(unknown)} unknown outcomes after the freeze, {replays} replays, {len(accepted)} logs accepted"
    )
    assert unknown, "no call was in flight past its timeout: the freeze came too late"
    retried = await pool.fetch(
        "SELECT a.log_id, a.replay FROM delivery_attempts a"
        " JOIN (SELECT log_id, min(attempt) AS attempt FROM delivery_attempts WHERE outcome = 'unknown'"
        "       GROUP BY log_id) u ON u.log_id = a.log_id AND a.attempt > u.attempt AND a.outcome = 'success'"
    )
    assert any(r["replay"] for r in retried)  # the provider had them: answered from its ledger


async def _requests_in_flight(mock: str, logs: int) -> bool:
    async with httpx.AsyncClient() as client:
        stats = orjson.loads((await client.get(f"{mock}/ledger/stats")).content)
    return int(stats.get("requests", 0)) > 0 and int(stats.get("accepted", 0)) < logs
