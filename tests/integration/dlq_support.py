"""Putting real dead letters in a test's DLQ, and running the dlq admin as operators do."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import aio_pika
import asyncpg
import orjson

from services.responder.relay import relay_dead_letters
from services.responder.store import INSERT_OUTBOX_SQL
from shared.bus import wire
from shared.bus.amqp import AmqpChannel
from shared.bus.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE
from shared.core.models import DeadLetter, DeadLetterReason, OutcomeClass, Status, utcnow
from tests.helpers import insert_logs, publish_envelopes
from tools.stack import ROOT, Environment

CHANNELS = ("sms", "email", "whatsapp")


def recipient(channel: str, i: int) -> str:
    return f"user{i}@example.com" if channel == "email" else f"+1415555{i:04d}"


async def failed_logs(
    pool: asyncpg.Pool,
    count: int,
    *,
    attempts: int = 2,
    status: Status = Status.FAILED,
    channels: tuple[str, ...] = CHANNELS,
    campaign_id: int | None = None,
) -> list[int]:
    """Logs as the responder leaves them when it gives up: FAILED/BOUNCED after ``attempts`` attempts."""
    rows = [
        {
            "channel": channels[i % len(channels)],
            "recipient": recipient(channels[i % len(channels)], i),
            "campaign_id": campaign_id,
        }
        for i in range(count)
    ]
    ids = await insert_logs(pool, rows)
    await pool.execute(
        "UPDATE communication_logs SET status = $2, attempts = $3, max_attempts = $3, provider = 'mocksms',"
        " last_error_code = 'INVALID_NUMBER', last_error = 'rejected by provider'"
        " WHERE id = ANY($1::bigint[])",
        ids,
        status.value,
        attempts,
    )
    return ids


async def dead_letter(pool: asyncpg.Pool, ids: list[int]) -> None:
    """Write each log's dead letter to the outbox and let the responder's own relay publish them."""
    rows = await pool.fetch(
        "SELECT id, attempts, max_attempts, tenant, campaign_id, channel, recipient, provider, status,"
        " last_error_code, last_error, created_at FROM communication_logs"
        " WHERE id = ANY($1::bigint[]) ORDER BY id",
        ids,
    )
    letters = [
        DeadLetter(
            log_id=r["id"],
            attempt=r["attempts"],
            max_attempts=r["max_attempts"],
            tenant=r["tenant"],
            campaign_id=r["campaign_id"],
            channel=r["channel"],
            recipient=r["recipient"],
            provider=r["provider"],
            status=Status(r["status"]),
            reason=DeadLetterReason.PERMANENT_ERROR,
            error_class=OutcomeClass.PERMANENT,
            error_code=r["last_error_code"],
            error_message=r["last_error"],
            created_at=r["created_at"],
            dead_lettered_at=utcnow(),
        )
        for r in rows
    ]
    await pool.execute(
        INSERT_OUTBOX_SQL,
        [x.log_id for x in letters],
        [x.attempt for x in letters],
        [x.model_dump(mode="json") for x in letters],
    )


async def relay(pool: asyncpg.Pool, amqp_url: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    relayed = 0
    try:
        channel = AmqpChannel(await connection.channel(publisher_confirms=True, on_return_raises=True))
        while count := await relay_dead_letters(pool, channel):
            relayed += count
    finally:
        await connection.close()
    return relayed


async def reject_into_dlq(amqp_url: str, body: bytes, queue: str = "dispatch.bulk.1") -> None:
    """A message that a service rejects: the broker dead-letters it with an ``x-death`` header."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        before = await wait_depth(channel, DEAD_LETTER_QUEUE, at_least=0)
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
        target = await channel.get_queue(queue, ensure=False)
        taken: asyncio.Future[aio_pika.abc.AbstractIncomingMessage] = (
            asyncio.get_running_loop().create_future()
        )

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if not taken.done():
                taken.set_result(message)

        tag = await target.consume(take)
        message = await asyncio.wait_for(taken, 10)
        await target.cancel(tag)
        await message.reject(requeue=False)
        # The broker dead-letters it on its own time: wait until the DLQ holds one more than before.
        await wait_depth(channel, DEAD_LETTER_QUEUE, at_least=before + 1)
    finally:
        await connection.close()


async def publish_poison_copy(amqp_url: str, body: bytes, source_queue: str = "dispatch.bulk.0") -> None:
    """A poison message a service copied to ``dlx`` itself, with the reason in plain words."""
    arrived = wire.Received(body, message_id="poison-1", type=wire.MESSAGE_TYPE_DISPATCH)
    copy = wire.poison_copy(arrived, "MalformedMessage: not JSON", "sender", source_queue)
    await publish_envelopes(amqp_url, DEAD_LETTER_EXCHANGE, [copy])


async def wait_depth(
    channel: aio_pika.abc.AbstractChannel, queue: str, at_least: int, timeout: float = 10
) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count or 0
        if count >= at_least:
            return count
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{queue} holds {count} messages after {timeout}s, not {at_least}")
        await asyncio.sleep(0.1)


async def dlq_depth(amqp_url: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        return await wait_depth(channel, DEAD_LETTER_QUEUE, 0)
    finally:
        await connection.close()


def run_dlq(
    environment: Environment, *args: str, answer: str | None = None, timeout: float = 120, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m services.dlq ARGS`` as an operator runs it, against the test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "services.dlq", *args],
        cwd=ROOT,
        env={**os.environ, **environment.env, **extra_env},
        input=answer,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


async def log_rows(pool: asyncpg.Pool, ids: list[int]) -> dict[int, asyncpg.Record]:
    rows = await pool.fetch(
        "SELECT id, status, attempts, max_attempts, lease_until, next_attempt_at <= now() AS due"
        " FROM communication_logs WHERE id = ANY($1::bigint[])",
        ids,
    )
    return {r["id"]: r for r in rows}
