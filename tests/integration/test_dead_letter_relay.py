"""The dead-letter relay's two phases: a relay that dies between publishing and deleting its rows
leaves them marked; once the mark runs out they are resolved against the DLQ, so each log ends with
exactly one letter there (never none, never two)."""

from __future__ import annotations

import functools

import aio_pika
import asyncpg
import pytest

from services.responder.relay import (
    CLAIM_OUTBOX_SQL,
    letters_in_dlq,
    refused_outright,
    relay_dead_letters,
    resolve_in_doubt,
)
from shared.bus.amqp import AmqpBroker, AmqpChannel, confirming_channel
from shared.bus.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE
from shared.core.errors import InDoubtUnresolved, PublishRefused, PublishUnconfirmed
from shared.core.models import DeadLetter
from tests.helpers import drain_queue
from tests.integration.dlq_support import dead_letter, failed_logs
from tools.stack import Environment


async def dlq_letters(amqp_url: str) -> list[str]:
    return sorted(str(m.message_id) for m in await drain_queue(amqp_url, DEAD_LETTER_QUEUE, timeout=1.0))


@pytest.mark.e2e
async def test_rows_of_a_relay_that_died_end_with_exactly_one_letter_each(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    # Given six dead letters whose relay published three and died before deleting any row
    ids = await failed_logs(pool, 6)
    await dead_letter(pool, ids)
    connection = await aio_pika.connect_robust(environment.amqp_url)
    try:
        channel = await confirming_channel(connection)
        exchange = await channel.get_exchange(DEAD_LETTER_EXCHANGE)
        publisher = AmqpChannel(channel)
        rows = await pool.fetch(CLAIM_OUTBOX_SQL, 500, 60.0, False)
        letters = [DeadLetter.model_validate(r["body"]) for r in rows]
        published_first = letters[:3]
        for letter in published_first:  # the broker took these; the row DELETE never committed
            await exchange.publish(
                aio_pika.Message(b"{}", message_id=f"dl-{letter.log_id}-{letter.attempt}"),
                routing_key=letter.channel,
                mandatory=True,
            )
        in_dlq = functools.partial(letters_in_dlq, AmqpBroker(connection))
        # When another relay runs while the marks hold, it leaves the rows alone
        assert await relay_dead_letters(pool, publisher) == 0
        assert await resolve_in_doubt(pool, publisher, in_dlq) == 0
        # And once the marks have run out, the rows are resolved against the DLQ
        await pool.execute("UPDATE dead_letter_outbox SET relaying_until = now() - interval '1 s'")
        assert await resolve_in_doubt(pool, publisher, in_dlq) == 6
    finally:
        await connection.close()
    # Then each log has exactly one letter in the DLQ and the outbox is empty
    expected = sorted(f"dl-{i}-2" for i in ids)
    assert await dlq_letters(environment.amqp_url) == expected
    assert await pool.fetchval("SELECT count(*) FROM dead_letter_outbox") == 0


@pytest.mark.e2e
async def test_in_doubt_rows_wait_while_another_reader_hides_part_of_the_dlq(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    # Given two in-doubt rows and an operator's reader holding a DLQ message unacked
    ids = await failed_logs(pool, 2)
    await dead_letter(pool, ids)
    await pool.execute("UPDATE dead_letter_outbox SET relaying_until = now() - interval '1 s'")
    connection = await aio_pika.connect_robust(environment.amqp_url)
    try:
        publisher = AmqpChannel(await confirming_channel(connection))
        reader = await connection.channel()
        await reader.set_qos(prefetch_count=1)
        queue = await reader.get_queue(DEAD_LETTER_QUEUE, ensure=False)

        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            return None  # never acked: the broker keeps it from everyone else

        tag = await queue.consume(hold)
        in_dlq = functools.partial(letters_in_dlq, AmqpBroker(connection))
        # When the relay tries to resolve them, it refuses to guess
        with pytest.raises(InDoubtUnresolved):
            await resolve_in_doubt(pool, publisher, in_dlq, lease_s=1.0)
        assert await pool.fetchval("SELECT count(*) FROM dead_letter_outbox") == 2
        # And once the reader has gone and the new mark has run out, they are published once
        await queue.cancel(tag)
        await reader.close()
        await pool.execute("UPDATE dead_letter_outbox SET relaying_until = now() - interval '1 s'")
        assert await resolve_in_doubt(pool, publisher, in_dlq) == 2
    finally:
        await connection.close()
    assert await dlq_letters(environment.amqp_url) == sorted(f"dl-{i}-2" for i in ids)


def test_only_an_answer_from_the_broker_counts_as_refused_outright() -> None:
    assert refused_outright(PublishRefused("broker refused message dl-1-1: nack"))
    assert not refused_outright(PublishUnconfirmed("no confirm within 20s"))
    assert not refused_outright(ConnectionError("connection lost"))
