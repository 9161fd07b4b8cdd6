"""Retries follow the backoff policy and Retry-After; exhausted logs are dead-lettered with their context."""

from __future__ import annotations

from itertools import pairwise

import httpx
import orjson
import pytest

from shared.bus.topology import DEAD_LETTER_QUEUE
from tests.helpers import all_terminal, drain_queue, insert_logs, wait_until
from tests.integration.test_pipeline import start_pipeline
from tools.stack import Stack

BASE_S = 0.4
JITTER = 0.2


@pytest.mark.e2e
async def test_transient_failures_retry_with_exponential_backoff_then_dead_letter(stack: Stack, pool) -> None:
    # Given a provider that always fails transiently for +888 numbers, a 0.4 s backoff base, and no
    # failover to the next provider before the attempts run out
    start_pipeline(
        stack,
        senders=1,
        backoff_base_s=str(BASE_S),
        backoff_cap_s="10",
        backoff_jitter=str(JITTER),
        failover_after="100",
    )
    await stack.start()
    # When four such logs with 4 attempts each are sent
    ids = await insert_logs(
        pool, [{"channel": "sms", "recipient": f"+8881000{i:03d}", "max_attempts": 4} for i in range(4)]
    )
    await wait_until(lambda: all_terminal(pool), timeout=60, what="every log terminal")
    # Then every log made 4 attempts, spaced by min(base * 2^(n-1), cap) with jitter
    for log_id in ids:
        rows = await pool.fetch(
            "SELECT attempt, outcome, finished_at FROM delivery_attempts WHERE log_id = $1 ORDER BY attempt",
            log_id,
        )
        assert [r["attempt"] for r in rows] == [1, 2, 3, 4]
        assert {r["outcome"] for r in rows} == {"transient"}
        for earlier, later in pairwise(rows):
            gap = (later["finished_at"] - earlier["finished_at"]).total_seconds()
            ceiling = BASE_S * 2 ** (earlier["attempt"] - 1)
            assert gap >= ceiling * (1 - JITTER) - 0.05, (log_id, earlier["attempt"], gap)
            assert gap <= ceiling + 1.5, (log_id, earlier["attempt"], gap)
    # ... and each is FAILED with exactly one dead letter saying its attempts were exhausted
    statuses = {r["status"] for r in await pool.fetch("SELECT status FROM communication_logs")}
    assert statuses == {"FAILED"}
    await wait_until(lambda: _outbox_empty(pool), timeout=20, what="dead letters relayed")
    letters = [orjson.loads(m.body) for m in await drain_queue(stack.environment.amqp_url, DEAD_LETTER_QUEUE)]
    assert sorted(letter["log_id"] for letter in letters) == sorted(ids)
    for letter in letters:
        assert letter["reason"] == "attempts_exhausted"
        assert letter["attempt"] == 4 and letter["max_attempts"] == 4
        assert letter["error_class"] == "transient" and letter["error_code"] == "SERVER_ERROR"
        assert letter["provider"] == "mocksms" and letter["recipient"].startswith("+888")


@pytest.mark.e2e
async def test_rate_limited_sends_wait_for_retry_after(stack: Stack, pool) -> None:
    # Given a provider answering 429 with Retry-After: 1.5 to every request, and a tiny backoff base
    start_pipeline(stack, senders=1, backoff_base_s="0.05", mock_retry_after_s="1.5")
    await stack.start()
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{stack.url('mock_provider')}/admin/config",
            json={"rate_limit_rate": 1.0, "transient_rate": 0, "permanent_rate": 0},
        )
        response.raise_for_status()
    # When a log is sent and retried twice
    (log_id,) = await insert_logs(pool, [{"channel": "sms", "recipient": "+14155550100", "max_attempts": 3}])
    await wait_until(lambda: all_terminal(pool), timeout=30, what="the log terminal")
    # Then the retries waited at least the Retry-After, not the 0.05 s backoff
    rows = await pool.fetch(
        "SELECT error_code, finished_at FROM delivery_attempts WHERE log_id = $1 ORDER BY attempt", log_id
    )
    assert [r["error_code"] for r in rows] == ["RATE_LIMITED"] * 3
    for earlier, later in pairwise(rows):
        assert (later["finished_at"] - earlier["finished_at"]).total_seconds() >= 1.5


async def _outbox_empty(pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM dead_letter_outbox") == 0
