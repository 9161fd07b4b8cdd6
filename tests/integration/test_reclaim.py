"""Expired leases are reclaimed by the pollers of their own lane, within the lane's room
(services/poller/__main__.py ``poll_once``, services/poller/claims.py ``RECLAIM_SQL``), against the real
PostgreSQL; the memory broker stands in for RabbitMQ."""

from __future__ import annotations

import asyncpg
import pytest

from services.poller.__main__ import Poller
from services.poller.claims import RECLAIM_SQL, lane_priorities, reclaim_expired
from services.poller.settings import PollerSettings
from shared.bus.memory import MemoryBroker
from shared.bus.topology import Lane
from tests.helpers import poller_on_memory_broker, ready_dispatches, rolled_back, selection_plan

SHARDS = 2
EXPIRED_PER_PRIORITY = 600  # 600 urgent, 1 200 bulk (priorities 1 and 2)
ROOM = 200  # an idle lane's allowance: SWITCHBOARD_DISPATCH_MIN_BACKLOG


async def add_logs(conn: asyncpg.Connection, priority: int, count: int, state: str, prefix: str) -> None:
    """``count`` logs of ``priority``: due PENDING, PROCESSING with a live lease, or with an expired one
    (expired 1..count seconds ago, so that the oldest lease is known)."""
    ids = await conn.fetch(
        """INSERT INTO communication_logs (channel, recipient, priority, next_attempt_at)
           SELECT 'sms', $1 || lpad(i::text, 6, '0'), $2, now() - interval '1 minute'
           FROM generate_series(1, $3) AS i RETURNING id""",
        f"+31{prefix}{priority}",
        priority,
        count,
    )
    if state == "pending":
        return
    lease = "now() + interval '60 s'" if state == "live" else "now() - make_interval(secs => id % 10000 + 1)"
    await conn.execute(
        f"UPDATE communication_logs SET status = 'PROCESSING', attempts = 1, lease_until = {lease}"
        " WHERE id = ANY($1::bigint[])",
        [r["id"] for r in ids],
    )


async def expired(pool: asyncpg.Pool) -> dict[int, int]:
    rows = await pool.fetch(
        """SELECT priority, count(*) AS n FROM communication_logs
           WHERE status = 'PROCESSING' AND lease_until < now() GROUP BY priority"""
    )
    return {r["priority"]: r["n"] for r in rows}


async def a_poller(pool: asyncpg.Pool, lanes: list[str]) -> tuple[Poller, MemoryBroker]:
    settings = PollerSettings(shards=SHARDS, batch_size=500, dispatch_min_backlog=ROOM, lanes=lanes)
    return await poller_on_memory_broker(settings, pool)


def published(broker: MemoryBroker, lane: Lane) -> int:
    return ready_dispatches(broker, lane, SHARDS)


async def test_each_lane_reclaims_only_its_own_expired_leases_and_at_most_its_room(
    pool: asyncpg.Pool,
) -> None:
    # Given many expired leases of both lanes, live leases of both, and due bulk logs waiting
    async with pool.acquire() as conn:
        for priority in (0, 1, 2):
            await add_logs(conn, priority, EXPIRED_PER_PRIORITY, "expired", "61")
            await add_logs(conn, priority, 50, "live", "62")
        await add_logs(conn, 1, 300, "pending", "63")
        oldest_bulk = {
            r["id"]
            for r in await conn.fetch(
                """SELECT id FROM communication_logs WHERE status = 'PROCESSING' AND lease_until < now()
                   AND priority > 0 ORDER BY lease_until LIMIT $1""",
                ROOM,
            )
        }
    before = await expired(pool)
    assert before == {0: 600, 1: 600, 2: 600}

    # When a poller of the bulk lane alone runs one cycle
    bulk_poller, bulk_broker = await a_poller(pool, ["bulk"])
    more = await bulk_poller.poll_once(Lane.BULK)

    # Then it reclaimed its room's worth of bulk leases, the oldest, and nothing of the urgent lane...
    after_bulk = await expired(pool)
    assert after_bulk[0] == 600
    assert before[1] + before[2] - after_bulk[1] - after_bulk[2] == ROOM
    renewed = await pool.fetch(
        """SELECT id, priority, attempts FROM communication_logs
           WHERE status = 'PROCESSING' AND lease_until > now() + interval '1 minute'"""
    )
    assert {r["id"] for r in renewed} == oldest_bulk
    assert all(r["priority"] > 0 and r["attempts"] == 1 for r in renewed)  # same attempt
    # ...published them into the bulk lane only, claimed no new log with the room they took, and polls
    # again at once (it filled its room)
    assert published(bulk_broker, Lane.BULK) == ROOM and published(bulk_broker, Lane.URGENT) == 0
    assert await pool.fetchval("SELECT count(*) FROM communication_logs WHERE status = 'PENDING'") == 300
    assert more
    # and a second cycle, the lane now full (nothing drains it), reclaims nothing and waits
    assert not await bulk_poller.poll_once(Lane.BULK)
    assert await expired(pool) == after_bulk

    # When a poller of the urgent lane alone runs one cycle
    urgent_poller, urgent_broker = await a_poller(pool, ["urgent"])
    await urgent_poller.poll_once(Lane.URGENT)

    # Then it reclaims urgent leases (up to its room) and no bulk one
    after_urgent = await expired(pool)
    assert after_urgent == {**after_bulk, 0: 600 - ROOM}
    assert published(urgent_broker, Lane.URGENT) == ROOM and published(urgent_broker, Lane.BULK) == 0


async def test_reclaim_takes_nothing_without_room_and_keeps_to_its_limit(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await add_logs(conn, 0, 20, "expired", "64")
        await add_logs(conn, 2, 20, "expired", "65")
        assert await reclaim_expired(conn, lane=Lane.BULK, limit=0, lease_s=60) == []
        rows = await reclaim_expired(conn, lane=Lane.URGENT, limit=15, lease_s=60)
        assert len(rows) == 15 and {r.priority for r in rows} == {0}
        rows = await reclaim_expired(conn, lane=Lane.URGENT, limit=15, lease_s=60)
        assert len(rows) == 5
    assert await expired(pool) == {2: 20}


@pytest.mark.parametrize("lane", [Lane.URGENT, Lane.BULK])
async def test_the_reclaim_statement_reads_only_expired_leases_through_the_lease_index(
    pool: asyncpg.Pool, lane: Lane
) -> None:
    async with rolled_back(pool) as conn:
        # Given 100 000 logs, most of them finished, 2 000 with live leases and 10 000 expired ones
        # of both lanes
        await conn.execute(
            """INSERT INTO communication_logs (channel, recipient, priority, status)
               SELECT 'sms', '+3166' || lpad(i::text, 7, '0'), (i % 3)::smallint, 'SENT'
               FROM generate_series(1, 100000) AS i"""
        )
        await conn.execute(
            """UPDATE communication_logs SET status = 'PROCESSING', attempts = 1,
                      lease_until = CASE WHEN id % 50 < 10 THEN now() - make_interval(secs => id % 600)
                                         ELSE now() + interval '60 s' END
               WHERE id % 50 < 12"""
        )
        await conn.execute("ANALYZE communication_logs")
        # When the planner plans a reclaim of 500 for the lane
        nodes = await selection_plan(conn, RECLAIM_SQL, 500, 60.0, list(lane_priorities(lane)))
    # Then it finds the candidates through logs_lease_idx (PROCESSING rows by lease_until), never by a
    # scan of the table
    assert not [n["Node Type"] for n in nodes if n["Node Type"] == "Seq Scan"]
    assert {n["Index Name"] for n in nodes if "Index Name" in n} == {"logs_lease_idx"}
    # (an index scan in lease order, or a bitmap of the expired leases sorted: both read only those)
    assert {n["Node Type"] for n in nodes if "Index Name" in n} <= {"Index Scan", "Bitmap Index Scan"}
