"""``requeue`` and ``purge`` against the real broker and database, including interrupted runs.

The guarantees: a requeued log is reset once (PENDING, same attempts, a fresh attempt budget), its
letter is removed only after the reset committed, a letter whose log moved on is removed as stale,
and every letter a run does not act on stays in the DLQ, in order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aio_pika
import asyncpg
import httpx
import orjson
import pytest

from services.dlq import actions
from services.dlq.browse import Delivery, DlqBrowser
from services.dlq.filters import EntryFilter
from services.dlq.requeue import Verdict
from shared.bus.topology import DEAD_LETTER_QUEUE
from shared.core.models import Status
from tests.helpers import drain_queue, insert_logs, ledger, wait_until
from tests.integration.dlq_support import (
    dead_letter,
    dlq_depth,
    failed_logs,
    log_rows,
    publish_poison_copy,
    relay,
    run_dlq,
)
from tools.stack import ROOT, Environment, Stack

BUDGET = 5  # SWITCHBOARD_MAX_ATTEMPTS by default


async def campaign(pool: asyncpg.Pool, failed: int, bounced: int) -> int:
    campaign_id: int = await pool.fetchval(
        "INSERT INTO campaigns (name, failed_count, bounced_count) VALUES ('c', $1, $2) RETURNING id",
        failed,
        bounced,
    )
    return campaign_id


def letter_ids(messages: list[aio_pika.abc.AbstractIncomingMessage]) -> list[int | None]:
    ids = []
    for message in messages:
        try:
            ids.append(orjson.loads(message.body)["log_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            ids.append(None)
    return ids


async def test_requeue_by_id_resets_those_logs_and_removes_only_their_letters(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    # Given a campaign with three FAILED logs and one BOUNCED log, all dead-lettered, and a poison message
    campaign_id = await campaign(pool, failed=3, bounced=1)
    failed = await failed_logs(pool, 3, attempts=2, campaign_id=campaign_id)
    (bounced,) = await failed_logs(pool, 1, attempts=1, status=Status.BOUNCED, campaign_id=campaign_id)
    await dead_letter(pool, [*failed, bounced])
    await relay(pool, environment.amqp_url)
    await publish_poison_copy(environment.amqp_url, b"{not json")

    # When an operator requeues one failed and the bounced log
    result = run_dlq(environment, "requeue", str(failed[1]), str(bounced), "--yes")

    # Then both logs are PENDING, due now, with their attempts kept and a fresh budget
    assert result.returncode == 0, result.stderr
    rows = await log_rows(pool, [*failed, bounced])
    for log_id, attempts in ((failed[1], 2), (bounced, 1)):
        row = rows[log_id]
        assert (row["status"], row["attempts"], row["max_attempts"]) == (
            "PENDING",
            attempts,
            attempts + BUDGET,
        )
        assert row["due"] and row["lease_until"] is None
    assert {rows[i]["status"] for i in (failed[0], failed[2])} == {"FAILED"}
    # ... the campaign no longer counts them as failed or bounced
    counts = await pool.fetchrow(
        "SELECT failed_count, bounced_count FROM campaigns WHERE id = $1", campaign_id
    )
    assert (counts["failed_count"], counts["bounced_count"]) == (2, 0)
    # ... the summary says what happened
    assert "requeued" in result.stdout and "2" in result.stdout
    # And the DLQ holds the other letters and the poison message, in their order
    remaining = await drain_queue(environment.amqp_url, DEAD_LETTER_QUEUE)
    assert letter_ids(remaining) == [failed[0], failed[2], None]


async def test_a_dry_run_and_a_declined_confirmation_change_nothing(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    # Given four dead-lettered logs
    ids = await failed_logs(pool, 4)
    await dead_letter(pool, ids)
    await relay(pool, environment.amqp_url)

    # When an operator asks for a dry run, declines the confirmation, then gives no selection at all
    dry = run_dlq(environment, "requeue", "--all", "--dry-run")
    declined = run_dlq(environment, "requeue", "--channel", "sms", answer="n\n")
    unselected = run_dlq(environment, "requeue")

    # Then the plan is shown, the confirmation was asked, the missing selection refused, and nothing changed
    assert dry.returncode == 0 and "dry run" in dry.stdout and "4" in dry.stdout
    assert declined.returncode == 1 and "Requeue 2 dead letters" in declined.stderr
    assert unselected.returncode == 2 and "--all" in unselected.stderr
    assert {r["status"] for r in (await log_rows(pool, ids)).values()} == {"FAILED"}
    assert letter_ids(await drain_queue(environment.amqp_url, DEAD_LETTER_QUEUE)) == ids


async def test_requeue_all_removes_stale_letters_and_keeps_poison_and_orphans(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    # Given dead letters whose logs are: still FAILED (twice: a duplicate relay), already PENDING again,
    # re-sent and failed with more attempts, deleted; and a poison message
    eligible, pending, moved_on, deleted = await failed_logs(pool, 4, attempts=2)
    await dead_letter(pool, [eligible, pending, moved_on, deleted])
    await relay(pool, environment.amqp_url)
    await dead_letter(pool, [eligible])
    await relay(pool, environment.amqp_url)
    await publish_poison_copy(environment.amqp_url, b"garbage")
    await pool.execute("UPDATE communication_logs SET status = 'PENDING' WHERE id = $1", pending)
    await pool.execute("UPDATE communication_logs SET attempts = 4, max_attempts = 7 WHERE id = $1", moved_on)
    await pool.execute("DELETE FROM communication_logs WHERE id = $1", deleted)

    # When everything is requeued
    connection = await actions.connect(environment.settings)
    try:
        report = await actions.requeue(connection, pool, EntryFilter(), BUDGET)
    finally:
        await connection.close()

    # Then only the eligible log was reset, once
    counts = report.tally.counts
    assert (counts[Verdict.REQUEUED], counts[Verdict.STALE]) == (1, 3)
    assert (counts[Verdict.MISSING], counts[Verdict.POISON]) == (1, 1)
    rows = await log_rows(pool, [eligible, pending, moved_on])
    assert (rows[eligible]["status"], rows[eligible]["max_attempts"]) == ("PENDING", 2 + BUDGET)
    assert (rows[pending]["status"], rows[pending]["max_attempts"]) == ("PENDING", 2)
    assert (rows[moved_on]["status"], rows[moved_on]["max_attempts"]) == ("FAILED", 7)
    # And the orphan letter and the poison message stay in the DLQ
    assert letter_ids(await drain_queue(environment.amqp_url, DEAD_LETTER_QUEUE)) == [deleted, None]


async def test_a_requeue_interrupted_between_commit_and_ack_is_finished_by_running_it_again(
    environment: Environment, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 60 dead-lettered logs and a requeue (batches of at most 10) that dies after a batch
    # committed, before all of that batch's letters were acked (the 25th ack never happens)
    ids = await failed_logs(pool, 60, attempts=3)
    await dead_letter(pool, ids)
    await relay(pool, environment.amqp_url)
    acked = 0
    real_ack = DlqBrowser.ack

    async def dying_ack(self: DlqBrowser, delivery: Delivery) -> None:
        nonlocal acked
        if acked == 24:
            raise ConnectionResetError("killed between commit and ack")
        acked += 1
        await real_ack(self, delivery)

    monkeypatch.setattr(DlqBrowser, "ack", dying_ack)
    options = actions.ScanOptions(batch_size=10)
    connection = await actions.connect(environment.settings)
    try:
        with pytest.raises(ConnectionResetError):
            await actions.requeue(connection, pool, EntryFilter(), BUDGET, options=options)
    finally:
        await connection.close()
    # ... so some batches committed (more logs reset than letters removed) and 24 letters were removed
    reset = sum(r["status"] == "PENDING" for r in (await log_rows(pool, ids)).values())
    assert 24 < reset < 60 and await dlq_depth(environment.amqp_url) == 60 - 24

    # When it is run again
    monkeypatch.setattr(DlqBrowser, "ack", real_ack)
    connection = await actions.connect(environment.settings)
    try:
        report = await actions.requeue(connection, pool, EntryFilter(), BUDGET, options=options)
    finally:
        await connection.close()

    # Then the rest is requeued, the letters of logs already reset are removed as stale, and
    # every log was reset exactly once
    assert (report.tally.counts[Verdict.REQUEUED], report.tally.counts[Verdict.STALE]) == (
        60 - reset,
        reset - 24,
    )
    rows = await log_rows(pool, ids)
    assert {(r["status"], r["attempts"], r["max_attempts"]) for r in rows.values()} == {
        ("PENDING", 3, 3 + BUDGET)
    }
    assert await dlq_depth(environment.amqp_url) == 0


async def test_a_killed_requeue_loses_nothing_and_resets_nothing_twice(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    # Given 1 500 dead-lettered sms logs to requeue and 300 email ones that are not selected
    sms = await failed_logs(pool, 1500, attempts=2, channels=("sms",))
    email = await failed_logs(pool, 300, attempts=2, channels=("email",))
    await dead_letter(pool, [*sms, *email])
    await relay(pool, environment.amqp_url)
    assert await dlq_depth(environment.amqp_url) == 1800

    # When the requeue process is killed (-9) half way
    command = [
        sys.executable,
        "-m",
        "services.dlq",
        "--batch-size",
        "10",
        "requeue",
        "--channel",
        "sms",
        "--yes",
    ]
    process = await asyncio.to_thread(
        subprocess.Popen,
        command,
        cwd=ROOT,
        env={**os.environ, **environment.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            done = await pool.fetchval("SELECT count(*) FROM communication_logs WHERE status = 'PENDING'")
            if done >= 300 or process.poll() is not None:
                break
            await asyncio.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    reset_before = await pool.fetchval("SELECT count(*) FROM communication_logs WHERE status = 'PENDING'")
    assert 0 < reset_before < 1500, "the kill should land in the middle of the run"

    # ... and then run again
    again = run_dlq(environment, "requeue", "--channel", "sms", "--yes")

    # Then every sms log was reset exactly once and its letter removed
    assert again.returncode == 0, again.stderr
    rows = await log_rows(pool, [*sms, *email])
    assert {(rows[i]["status"], rows[i]["max_attempts"]) for i in sms} == {("PENDING", 2 + BUDGET)}
    assert {(rows[i]["status"], rows[i]["max_attempts"]) for i in email} == {("FAILED", 2)}
    # And the email letters are all still there, in order
    assert letter_ids(await drain_queue(environment.amqp_url, DEAD_LETTER_QUEUE)) == email


async def test_purge_removes_what_it_selects_after_confirmation(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    # Given six dead letters on three channels and two poison messages
    ids = await failed_logs(pool, 6)
    await dead_letter(pool, ids)
    await relay(pool, environment.amqp_url)
    await publish_poison_copy(environment.amqp_url, b"x")
    await publish_poison_copy(environment.amqp_url, b"y")

    # When poison is purged without confirmation, email letters with a declined one, sms with a dry run
    poison = run_dlq(environment, "purge", "--kind", "poison", "--yes")
    declined = run_dlq(environment, "purge", "--channel", "email", answer="n\n")
    dry = run_dlq(environment, "purge", "--channel", "sms", "--dry-run")

    # Then only the poison is gone, and the logs were not touched
    assert poison.returncode == 0 and "purged 2 messages" in poison.stdout
    assert declined.returncode == 1 and "Purge 2 messages" in declined.stderr
    assert dry.returncode == 0 and "2 of 6 messages match" in dry.stderr
    assert letter_ids(await drain_queue(environment.amqp_url, DEAD_LETTER_QUEUE)) == ids
    assert {r["status"] for r in (await log_rows(pool, ids)).values()} == {"FAILED"}


@pytest.mark.e2e
async def test_requeued_logs_are_delivered_once_each(
    stack: Stack, pool: asyncpg.Pool, environment: Environment
) -> None:
    # Given a pipeline whose provider rejects every send permanently
    fast = {
        "backoff_base_s": "0.2",
        "backoff_cap_s": "1",
        "mock_latency_ms": "2",
        "mock_latency_jitter_ms": "1",
        "poll_interval_s": "0.05",
        "mock_transient_rate": "0",
        "mock_rate_limit_rate": "0",
        "mock_permanent_rate": "1",
    }
    mock = stack.add("mock_provider", **fast)
    for service in ("poller", "sender", "responder"):
        stack.add(service, **fast, provider_url=f"http://127.0.0.1:{mock.port}")
    await stack.start()
    rows = [{"channel": "sms", "recipient": f"+1415555{i:04d}"} for i in range(4)]
    rows += [{"channel": "email", "recipient": f"user{i}@example.com"} for i in range(4)]
    ids = await insert_logs(pool, rows)

    async def dead_lettered() -> bool:
        failed = await pool.fetchval(
            "SELECT count(*) FROM communication_logs WHERE status IN ('FAILED','BOUNCED')"
        )
        return failed == len(ids) and await dlq_depth(environment.amqp_url) == len(ids)

    await wait_until(dead_lettered, timeout=60, what="every log dead-lettered")

    # When the provider recovers and an operator requeues every dead letter
    async with httpx.AsyncClient() as client:
        await client.post(f"{stack.url('mock_provider')}/admin/config", json={"permanent_rate": 0})
    result = run_dlq(environment, "requeue", "--all", "--yes")
    assert result.returncode == 0, result.stderr

    # Then every log is sent, by a second attempt the provider accepted exactly once
    async def all_sent() -> bool:
        sent: int = await pool.fetchval("SELECT count(*) FROM communication_logs WHERE status = 'SENT'")
        return sent == len(ids)

    await wait_until(all_sent, timeout=60, what="every requeued log sent")
    sends = [r for r in await ledger(stack.url("mock_provider")) if not r["replay"]]
    assert sorted((r["log_id"], r["attempt"]) for r in sends) == sorted((i, 2) for i in ids)
    attempts = await pool.fetch(
        "SELECT log_id, attempt, outcome FROM delivery_attempts ORDER BY log_id, attempt"
    )
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "permanent"), (2, "success")] * len(ids)
    # And the DLQ is empty
    assert await dlq_depth(environment.amqp_url) == 0
