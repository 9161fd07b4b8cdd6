"""The strict gate in SQL (services/poller/claims.py) agrees with its pure form (services/poller/gate.py),
and migration 0011 stamps due times and ordering groups as docs/ordering.md says."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from services.poller.claims import claim, claim_sql
from services.poller.gate import PAUSED, OpenLog, OpenStatus, claimable, ordering_group
from services.poller.settings import Ordering
from shared.bus.topology import LANES
from tests.helpers import rolled_back, selection_plan
from tools.stack import Environment

RECIPIENTS = ["+31600000001", "+31600000002", "+31600000003"]


async def build_scenario(conn: asyncpg.Connection, rng: random.Random) -> None:
    """Open logs in every state the gate knows: due, scheduled, in backoff, paused, in flight."""
    for n in range(rng.randint(1, 16)):
        due_offset = rng.choice([-30, -10, -1, 0, 5, 3600])
        key = rng.choice([None, None, None, "order-1"])
        log_id = await conn.fetchval(
            """INSERT INTO communication_logs (channel, recipient, priority, ordering_key, next_attempt_at)
               VALUES ('sms', $1, $2, $3, now() + make_interval(secs => $4)) RETURNING id""",
            rng.choice(RECIPIENTS),
            rng.choice([0, 1, 1, 2]),
            key,
            float(due_offset),
        )
        state = rng.choice(["due", "due", "backoff", "paused", "processing", "sent"])
        if state == "backoff":
            await conn.execute(
                "UPDATE communication_logs SET attempts = 1, next_attempt_at = due_at + interval '60 s'"
                " WHERE id = $1",
                log_id,
            )
        elif state == "paused":
            await conn.execute(
                "UPDATE communication_logs SET next_attempt_at = 'infinity' WHERE id = $1", log_id
            )
        elif state == "processing":
            await conn.execute(
                "UPDATE communication_logs SET status = 'PROCESSING', attempts = 1,"
                " lease_until = now() + interval '60 s' WHERE id = $1",
                log_id,
            )
        elif state == "sent":
            await conn.execute("UPDATE communication_logs SET status = 'SENT' WHERE id = $1", log_id)
        del n


async def gate_in_python(conn: asyncpg.Connection) -> set[int]:
    """The pure gate over the same rows, times in seconds from the transaction's now()."""
    rows = await conn.fetch(
        """SELECT id, ordering_group, status, extract(epoch FROM due_at - now())::float8 AS due,
                  next_attempt_at = 'infinity' AS paused,
                  CASE WHEN next_attempt_at < 'infinity'
                       THEN extract(epoch FROM next_attempt_at - now())::float8 END AS next_attempt
           FROM communication_logs WHERE status IN ('PENDING', 'PROCESSING')"""
    )
    logs = [
        OpenLog(
            id=r["id"],
            group=r["ordering_group"],
            status=OpenStatus(r["status"]),
            due_at=r["due"],
            next_attempt_at=PAUSED if r["paused"] else r["next_attempt"],
        )
        for r in rows
    ]
    return claimable(logs, 0.0)


async def gate_in_sql(conn: asyncpg.Connection) -> set[int]:
    claimed = []
    for lane in LANES:
        claimed += await claim(
            conn,
            lane=lane,
            batch_size=100,
            lease_s=60,
            ordering=Ordering.STRICT,
            starvation_after_s=0,
            starvation_share=0,
        )
    return {row.id for row in claimed}


@pytest.mark.parametrize("seed", range(12))
async def test_the_claim_statement_lets_through_exactly_what_the_pure_gate_does(
    pool: asyncpg.Pool, seed: int
) -> None:
    rng = random.Random(seed)
    async with rolled_back(pool) as conn:
        # Given open logs of three recipients (some with a user's ordering key) in every state
        await build_scenario(conn, rng)
        expected = await gate_in_python(conn)
        # When the poller claims every lane, Then it takes exactly what the pure gate lets through
        assert await gate_in_sql(conn) == expected


async def test_migration_stamps_due_time_and_ordering_group(pool: asyncpg.Pool) -> None:
    # Given logs inserted with and without send_at, an ordering key, and an urgent priority
    rows = await pool.fetch(
        """INSERT INTO communication_logs
               (tenant, channel, recipient, priority, ordering_key, next_attempt_at)
           VALUES ('acme', 'sms', '+31 6 1234 5678', 1, NULL, now()),
                  ('acme', 'sms', '+31612345678', 0, NULL, now() + interval '1 day'),
                  ('acme', 'email', ' Ann@Example.org', 2, 'thread-9', now())
           RETURNING id, ordering_group, due_at, next_attempt_at, recipient_key, tenant, ordering_key,
                     priority"""
    )
    # Then due_at is the due time at creation and the group is the one gate.ordering_group computes
    for row in rows:
        assert row["due_at"] == row["next_attempt_at"]
        assert row["ordering_group"] == ordering_group(
            row["tenant"], row["ordering_key"], row["priority"], row["recipient_key"]
        )
    assert [r["ordering_group"] for r in rows] == ["+31612345678", "urgent:+31612345678", "key:acme:thread-9"]
    # ...and a retry moves next_attempt_at, never due_at
    first = rows[0]["id"]
    await pool.execute(
        "UPDATE communication_logs SET next_attempt_at = now() + interval '1 h' WHERE id = $1", first
    )
    assert (
        await pool.fetchval("SELECT due_at FROM communication_logs WHERE id = $1", first) == rows[0]["due_at"]
    )


async def test_inserting_due_logs_notifies_the_pollers(environment: Environment, pool: asyncpg.Pool) -> None:
    # Given a connection listening on switchboard_due
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(environment.database_url)
    try:
        await listener.add_listener("switchboard_due", lambda *args: heard.put_nowait(args[3]))
        # When a scheduled log is inserted, nothing is announced; when due ones are, their most urgent
        # priority is
        await pool.execute(
            "INSERT INTO communication_logs (channel, recipient, next_attempt_at)"
            " VALUES ('sms', '+31600000009', now() + interval '1 h')"
        )
        await pool.execute(
            "INSERT INTO communication_logs (channel, recipient, priority) VALUES ('sms', '+31600000009', 2),"
            " ('sms', '+31600000008', 0)"
        )
        assert await asyncio.wait_for(heard.get(), 10) == "0"
        assert heard.empty()
    finally:
        await listener.close()


@pytest.mark.parametrize("aged", [False, True])
async def test_the_strict_claim_probes_one_index_per_candidate_even_on_stale_statistics(
    pool: asyncpg.Pool, aged: bool
) -> None:
    async with rolled_back(pool) as conn:
        # Given 20 000 due logs, each its own group, analysed while none was in flight...
        await conn.execute(
            """INSERT INTO communication_logs (channel, recipient, priority, next_attempt_at)
               SELECT 'sms', '+3162' || lpad(i::text, 7, '0'), 1, now() - interval '1 hour'
               FROM generate_series(1, 20000) AS i"""
        )
        await conn.execute("ANALYZE communication_logs")
        # ...and then 1 500 of them claimed, which the statistics do not know yet
        await conn.execute(
            """UPDATE communication_logs SET status = 'PROCESSING', attempts = 1,
                      lease_until = now() + interval '60 s'
               WHERE id IN (SELECT id FROM communication_logs ORDER BY id LIMIT 1500)"""
        )
        # When the planner plans a strict claim of 500
        nodes = await selection_plan(conn, claim_sql(Ordering.STRICT, aged), 500, 30.0, 60.0 if aged else 1)
    # Then each candidate is checked by one probe of its group's open logs, never against a set of
    # every in-flight row (a Materialize or a hash of them, compared with each of 500 candidates)
    assert not [n["Node Type"] for n in nodes if n["Node Type"] in ("Materialize", "Hash", "Seq Scan")]
    indexes = {n.get("Index Name") for n in nodes if n.get("Relation Name") == "communication_logs"}
    assert indexes <= {"logs_due_idx", "logs_claim_idx", "logs_open_group_idx", "communication_logs_pkey"}
    assert "logs_open_group_idx" in indexes
