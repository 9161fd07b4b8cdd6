"""End to end: the real poller, senders, responder and mock provider over RabbitMQ and PostgreSQL."""

from __future__ import annotations

import orjson
import pytest

from shared.bus.topology import DEAD_LETTER_QUEUE
from tests.helpers import all_terminal, drain_queue, insert_logs, ledger, status_counts, wait_until
from tools.stack import Stack

FAST = {
    "backoff_base_s": "0.2",
    "backoff_cap_s": "1",
    "mock_latency_ms": "2",
    "mock_latency_jitter_ms": "1",
    "mock_retry_after_s": "0.3",
    "poll_interval_s": "0.05",
}


def start_pipeline(stack: Stack, senders: int = 2, **overrides: str) -> None:
    settings = {**FAST, **overrides}
    mock = stack.add("mock_provider", **settings)
    settings["provider_url"] = f"http://127.0.0.1:{mock.port}"
    stack.add("poller", **settings)
    for n in range(senders):
        stack.add("sender", f"sender-{n}", **settings)
    stack.add("responder", **settings)


def campaign(count: int, recipients: int = 300) -> list[dict[str, object]]:
    rows = []
    for i in range(count):
        kind = i % 3
        r = i % recipients
        if kind == 0:
            rows.append({"channel": "sms", "recipient": f"+1415555{r:04d}"})
        elif kind == 1:
            rows.append({"channel": "email", "recipient": f"user{r}@example.com"})
        else:
            rows.append({"channel": "whatsapp", "recipient": f"+4477009{r:05d}"})
    return rows


@pytest.mark.e2e
async def test_thousands_of_logs_reach_a_terminal_state_without_duplicates(stack: Stack, pool) -> None:
    # Given a running pipeline with the default failure mix
    start_pipeline(stack)
    await stack.start()
    # When 3 000 logs for 300 recipients are inserted
    ids = await insert_logs(pool, campaign(3000))
    # Then all of them end terminal
    await wait_until(lambda: all_terminal(pool), timeout=120, what="every log terminal")
    counts = await status_counts(pool)
    assert sum(counts.values()) == len(ids)
    assert set(counts) <= {"SENT", "FAILED", "BOUNCED"}
    # ... the provider accepted exactly the SENT ones, each once (replays aside)
    rows = await ledger(stack.url("mock_provider"))
    sends = [r for r in rows if not r["replay"]]
    sent_ids = {r["id"] for r in await pool.fetch("SELECT id FROM communication_logs WHERE status = 'SENT'")}
    assert len(sends) == len({r["log_id"] for r in sends}), "a log was sent twice"
    assert {r["log_id"] for r in sends} == sent_ids
    # ... every attempt is recorded, retries happened, and each failure has one dead letter with its context
    attempts = await pool.fetchval("SELECT count(*) FROM delivery_attempts")
    total_attempts = await pool.fetchval("SELECT sum(attempts) FROM communication_logs")
    assert attempts == total_attempts
    assert await pool.fetchval("SELECT count(*) FROM delivery_attempts WHERE outcome = 'transient'") > 0
    failed = {
        r["id"]: r
        for r in await pool.fetch(
            "SELECT id, status, attempts, last_error_code FROM communication_logs"
            " WHERE status IN ('FAILED', 'BOUNCED')"
        )
    }
    assert failed, "the failure mix should fail some logs"
    await wait_until(lambda: _outbox_empty(pool), timeout=30, what="dead-letter outbox relayed")
    letters = [orjson.loads(m.body) for m in await drain_queue(stack.environment.amqp_url, DEAD_LETTER_QUEUE)]
    assert sorted(letter["log_id"] for letter in letters) == sorted(failed)
    for letter in letters:
        row = failed[letter["log_id"]]
        assert letter["status"] == row["status"]
        assert letter["attempt"] == row["attempts"]
        assert letter["error_code"] == row["last_error_code"]
        assert letter["recipient"] and letter["channel"] and letter["reason"]
    # ... and the processes stop cleanly
    assert set(stack.stop().values()) == {0}


async def _outbox_empty(pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM dead_letter_outbox") == 0
