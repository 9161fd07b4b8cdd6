"""Helpers for tests that run against the real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import httpx
import orjson

from services.poller.__main__ import Poller
from services.poller.settings import PollerSettings
from shared.bus.memory import MemoryBroker
from shared.bus.topology import DISPATCH, Lane, lane_queue
from shared.core.models import DeadLetter, DeadLetterReason, OutcomeClass, Status

INSERT_SQL = """
INSERT INTO communication_logs (tenant, campaign_id, channel, recipient, payload, priority, max_attempts,
                                next_attempt_at)
SELECT t, c, ch, r, p, pr, m, COALESCE(n, now())
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::jsonb[], $6::smallint[], $7::int[],
            $8::timestamptz[]) AS x(t, c, ch, r, p, pr, m, n)
RETURNING id
"""


async def insert_logs(conn: asyncpg.Connection | asyncpg.Pool, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert logs (keys: channel, recipient; optional tenant, campaign_id, payload, priority, max_attempts,
    next_attempt_at) in one statement; returns their ids in order."""
    records = await conn.fetch(
        INSERT_SQL,
        [r.get("tenant", "default") for r in rows],
        [r.get("campaign_id") for r in rows],
        [r["channel"] for r in rows],
        [r["recipient"] for r in rows],
        [r.get("payload", {"body": "hello"}) for r in rows],
        [r.get("priority", 1) for r in rows],
        [r.get("max_attempts", 5) for r in rows],
        [r.get("next_attempt_at") for r in rows],
    )
    return [r["id"] for r in records]


async def wait_until(
    predicate: Callable[[], Awaitable[bool]],
    timeout: float = 60.0,
    interval: float = 0.25,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def all_terminal(pool: asyncpg.Pool) -> bool:
    open_count = await pool.fetchval(
        "SELECT count(*) FROM communication_logs WHERE status IN ('PENDING', 'PROCESSING')"
    )
    return bool(open_count == 0)


async def status_counts(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT status, count(*) AS n FROM communication_logs GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def ledger(mock_url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{mock_url}/ledger")
        response.raise_for_status()
        rows: list[dict[str, Any]] = orjson.loads(response.content)
        return rows


async def drain_queue(amqp_url: str, queue: str, timeout: float = 2.0) -> list[Any]:
    """Take every message off ``queue`` (acking them) and return the aio-pika messages."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    messages = []
    try:
        channel = await connection.channel()
        q = await channel.get_queue(queue, ensure=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = await q.get(fail=False, timeout=5)
            if message is None:
                await asyncio.sleep(0.1)
                continue
            messages.append(message)
            await message.ack()
            deadline = time.monotonic() + timeout
    finally:
        await connection.close()
    return messages


async def publish_envelopes(amqp_url: str, exchange: str, envelopes: list[Any]) -> None:
    """Publish ``shared.bus.wire`` envelopes with confirms, as the services do; raises on any refusal."""
    import aio_pika

    from shared.bus.amqp import AmqpChannel

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = AmqpChannel(await connection.channel(publisher_confirms=True, on_return_raises=True))
        errors = [e for e in await channel.publish(exchange, envelopes) if e is not None]
        if errors:
            raise errors[0]
    finally:
        await connection.close()


DEAD_LETTERED_AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def dead_letter(**changes: object) -> DeadLetter:
    """A responder's dead letter of an SMS whose attempts ran out; ``changes`` replace fields."""
    fields: dict[str, object] = dict(
        log_id=42,
        attempt=3,
        max_attempts=5,
        tenant="acme",
        campaign_id=7,
        channel="sms",
        recipient="+14155550123",
        provider="mocksms",
        status=Status.FAILED,
        reason=DeadLetterReason.ATTEMPTS_EXHAUSTED,
        error_class=OutcomeClass.TRANSIENT,
        error_code="SERVER_ERROR",
        error_message="upstream carrier error",
        created_at=DEAD_LETTERED_AT,
        dead_lettered_at=DEAD_LETTERED_AT,
    )
    fields.update(changes)
    return DeadLetter.model_validate(fields)


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A plan node of ``EXPLAIN (FORMAT JSON)`` and every node under it."""
    return [node, *(n for child in node.get("Plans") or [] for n in plan_nodes(child))]


async def selection_plan(conn: asyncpg.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    """The plan nodes of a claim or reclaim statement's selection (its ``picked`` subquery): how the
    rows are found, apart from how the update then reaches them."""
    (plan,) = orjson.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args))
    (picked,) = [n for n in plan_nodes(plan["Plan"]) if n.get("Alias") == "picked"]
    return plan_nodes(picked)


@contextlib.asynccontextmanager
async def rolled_back(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction that is rolled back at the end: rows, updates and ANALYZE
    statistics of a test leave nothing behind for the next one."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield conn
        finally:
            await transaction.rollback()


async def poller_on_memory_broker(
    settings: PollerSettings, pool: asyncpg.Pool | None = None
) -> tuple[Poller, MemoryBroker]:
    """A poller whose broker is the in-memory double, its topology declared and its channels open."""
    broker = MemoryBroker()
    poller = Poller(settings, cast(asyncpg.Pool, pool), broker)
    broker.declare(poller.topology)
    await poller.open_channels()
    return poller, broker


def ready_dispatches(broker: MemoryBroker, lane: Lane, shards: int) -> int:
    """Dispatches waiting in ``lane``'s shard queues of the memory broker."""
    return sum(len(broker.queues[lane_queue(DISPATCH, lane, shard)].ready) for shard in range(shards))
