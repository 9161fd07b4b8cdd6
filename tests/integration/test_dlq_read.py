"""The dlq admin's reading commands (list, show, export, stats) against the real broker and database.

Reading must leave the DLQ exactly as it was: same messages, same bodies, same order.
"""

from __future__ import annotations

import csv
from pathlib import Path

import asyncpg
import orjson

from services.dlq.actions import ScanOptions, connect, scan
from services.dlq.filters import EntryFilter
from shared.bus.topology import DEAD_LETTER_QUEUE
from shared.core.recipients import mask
from shared.ops.management import Management
from tests.helpers import drain_queue
from tests.integration.dlq_support import (
    dead_letter,
    failed_logs,
    json_lines,
    publish_poison_copy,
    reject_into_dlq,
    relay,
    run_dlq,
)
from tools.dlq_scale import fill_dlq, run_measured
from tools.stack import Environment


async def test_list_shows_every_kind_of_dead_letter_and_leaves_the_dlq_intact(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    # Given three logs dead-lettered by the responder's relay, a dispatch a sender rejected (the broker
    # moves it with x-death) and a poison message copied to dlx with its reason in headers
    ids = await failed_logs(pool, 3)
    await dead_letter(pool, ids)
    assert await relay(pool, environment.amqp_url) == 3
    await reject_into_dlq(environment.amqp_url, b"\xff\x00 not a dispatch", queue="dispatch.bulk.1")
    await publish_poison_copy(environment.amqp_url, b'{"log_id": 77, "attempt": 1, "channel": "sms"')

    # When an operator lists the DLQ as JSON, then as a table
    listed = run_dlq(environment, "list", "--json")
    table = run_dlq(environment, "list")

    # Then every message is there, described
    assert listed.returncode == 0, listed.stderr
    rows = json_lines(listed.stdout)
    assert [r["kind"] for r in rows] == ["dead_letter"] * 3 + ["poison"] * 2
    assert [r["log_id"] for r in rows[:3]] == ids
    assert {r["reason"] for r in rows[:3]} == {"permanent_error"}
    assert all(r["error_code"] == "INVALID_NUMBER" and r["provider"] == "mocksms" for r in rows[:3])
    assert (rows[3]["reason"], rows[3]["source_queue"], rows[3]["source"]) == (
        "rejected",
        "dispatch.bulk.1",
        "broker",
    )
    assert (rows[4]["reason"], rows[4]["source_queue"], rows[4]["log_id"]) == (
        "poison_message",
        "dispatch.bulk.0",
        77,
    )
    # ... with recipients masked
    clear = await pool.fetchval("SELECT recipient FROM communication_logs WHERE id = $1", ids[0])
    assert rows[0]["recipient"] == mask(clear) != clear
    assert table.returncode == 0 and "5 matching of 5" in table.stdout and clear not in table.stdout
    # And the DLQ still holds the same five messages in the same order, marked as redelivered
    messages = await drain_queue(environment.amqp_url, DEAD_LETTER_QUEUE)
    assert [orjson.loads(m.body)["log_id"] for m in messages[:3]] == ids
    assert messages[3].body == b"\xff\x00 not a dispatch"
    assert messages[4].headers["x-switchboard-reason"] == "poison_message"
    assert all(m.redelivered for m in messages) and len(messages) == 5


async def test_filters_select_by_reason_channel_and_age(environment: Environment, pool: asyncpg.Pool) -> None:
    # Given dead letters on three channels and one rejected poison message
    ids = await failed_logs(pool, 6)
    await dead_letter(pool, ids)
    await relay(pool, environment.amqp_url)
    await reject_into_dlq(environment.amqp_url, b"garbage")

    # When listing with filters
    sms = json_lines(run_dlq(environment, "list", "--json", "--channel", "sms").stdout)
    rejected = json_lines(run_dlq(environment, "list", "--json", "--reason", "rejected").stdout)
    old = json_lines(run_dlq(environment, "list", "--json", "--older-than", "1h").stdout)
    recent = json_lines(
        run_dlq(environment, "list", "--json", "--newer-than", "1h", "--kind", "dead_letter").stdout
    )

    # Then each selects what it says
    assert [r["log_id"] for r in sms] == ids[0::3]
    assert len(rejected) == 1 and rejected[0]["kind"] == "poison"
    assert old == []
    assert [r["log_id"] for r in recent] == ids


async def test_show_prints_the_letter_with_its_log_and_attempt_history(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    # Given a log that failed twice (both attempts recorded) and its dead letter
    (log_id,) = await failed_logs(pool, 1, attempts=2)
    await pool.execute(
        "INSERT INTO delivery_attempts"
        " (log_id, attempt, provider, outcome, error_code, error_message, finished_at)"
        " VALUES ($1, 1, 'mocksms', 'transient', 'SERVER_ERROR', 'upstream', now()),"
        " ($1, 2, 'mocksms2', 'permanent', 'INVALID_NUMBER', 'rejected by provider', now())",
        log_id,
    )
    await dead_letter(pool, [log_id])
    await relay(pool, environment.amqp_url)

    # When an operator shows it, as JSON and as text
    shown = run_dlq(environment, "show", str(log_id), "--json")
    text = run_dlq(environment, "show", str(log_id))

    # Then the letter, the log and every attempt are there
    assert shown.returncode == 0, shown.stderr
    document = orjson.loads(shown.stdout)
    assert [(x["log_id"], x["attempt"], x["kind"]) for x in document["letters"]] == [
        (log_id, 2, "dead_letter")
    ]
    assert document["log"]["status"] == "FAILED" and document["log"]["attempts"] == 2
    assert [(a["attempt"], a["outcome"], a["error_code"]) for a in document["attempts"]] == [
        (1, "transient", "SERVER_ERROR"),
        (2, "permanent", "INVALID_NUMBER"),
    ]
    assert text.returncode == 0
    assert "delivery attempts" in text.stdout and "SERVER_ERROR" in text.stdout and "dl-" in text.stdout
    # And nothing left the DLQ
    assert len(await drain_queue(environment.amqp_url, DEAD_LETTER_QUEUE)) == 1


async def test_export_and_stats_cover_every_message(
    environment: Environment, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # Given 9 dead letters and 2 poison messages
    ids = await failed_logs(pool, 9)
    await dead_letter(pool, ids)
    await relay(pool, environment.amqp_url)
    await reject_into_dlq(environment.amqp_url, b"\xff\x01")
    await publish_poison_copy(environment.amqp_url, b'{"log_id": 5')

    # When exporting as JSON lines, as CSV, revealed, and counting
    jsonl, table, revealed = tmp_path / "dlq.jsonl", tmp_path / "dlq.csv", tmp_path / "revealed.jsonl"
    assert run_dlq(environment, "export", str(jsonl)).returncode == 0
    assert run_dlq(environment, "export", str(table), "--format", "csv").returncode == 0
    assert run_dlq(environment, "export", str(revealed), "--reveal").returncode == 0
    stats = run_dlq(environment, "stats", "--json")

    # Then every message is in each file, masked and without bodies unless revealed
    rows = json_lines(jsonl.read_text())
    assert len(rows) == 11 and "body" not in rows[0]
    clear = await pool.fetchval("SELECT recipient FROM communication_logs WHERE id = $1", ids[1])
    assert clear not in jsonl.read_text() and clear not in table.read_text()
    with table.open(newline="") as handle:
        assert [r["log_id"] for r in csv.DictReader(handle)][:9] == [str(i) for i in ids]
    full = json_lines(revealed.read_text())
    assert full[1]["recipient"] == clear and orjson.loads(full[1]["body"])["log_id"] == ids[1]
    assert full[9]["body_encoding"] == "base64"
    # ... and the counts add up
    counts = orjson.loads(stats.stdout)
    assert counts["total"] == 11
    assert counts["kind"] == {"dead_letter": 9, "poison": 2}
    assert counts["channel"] == {"sms": 3, "email": 3, "whatsapp": 3, "-": 2}
    assert counts["reason"] == {"permanent_error": 9, "rejected": 1, "poison_message": 1}
    assert len(await drain_queue(environment.amqp_url, DEAD_LETTER_QUEUE)) == 11


async def test_5000_messages_are_read_in_bounded_memory_and_keep_their_order(
    environment: Environment, tmp_path: Path
) -> None:
    # Given a DLQ of 5 000 dead letters and 50 poison messages
    await fill_dlq(environment.amqp_url, 5000, poison=50)

    # When it is read with a window of 100 messages
    connection = await connect(environment.settings)
    try:
        report = await scan(connection, EntryFilter(), lambda d: None, ScanOptions(window=100))
    finally:
        await connection.close()
    # ... and listed and exported by the CLI
    listed = run_measured(environment.env, tmp_path, "list", "--limit", "5")
    exported = run_measured(environment.env, tmp_path, "export", str(tmp_path / "all.jsonl"))
    baseline = run_measured(environment.env, tmp_path, "--help")

    # Then every message was seen while at most one window waited in memory
    assert report.seen == report.expected == 5050 and report.incomplete == 0
    assert 0 < report.peak_buffered <= 100
    assert listed.returncode == 0 and "5,050 matching" in listed.stdout
    assert exported.returncode == 0 and len((tmp_path / "all.jsonl").read_text().splitlines()) == 5050
    assert exported.peak_rss_mb - baseline.peak_rss_mb < 40, (exported, baseline)
    # And the DLQ still holds them all, in their order
    messages = await drain_queue(environment.amqp_url, DEAD_LETTER_QUEUE)
    assert [orjson.loads(m.body)["log_id"] for m in messages[:5000]] == list(range(1, 5001))
    assert len(messages) == 5050


async def test_reading_is_refused_when_the_dlq_would_drop_what_it_gives_back(
    environment: Environment,
) -> None:
    # Given a policy that puts a delivery limit on the dlq (each read counts as a delivery)
    async with Management(environment.settings) as management:
        await management.put_policy(
            environment.vhost,
            {
                "name": "ops-dlq-limit",
                "pattern": "^dlq$",
                "apply-to": "queues",
                "priority": 5,
                "definition": {"delivery-limit": 2},
            },
        )
    await fill_dlq(environment.amqp_url, 3)

    # When an operator lists it
    listed = run_dlq(environment, "list")

    # Then the tool refuses, and says why, and the DLQ keeps its messages
    assert listed.returncode == 3
    assert "delivery-limit=2" in listed.stderr
    assert len(await drain_queue(environment.amqp_url, DEAD_LETTER_QUEUE)) == 3
