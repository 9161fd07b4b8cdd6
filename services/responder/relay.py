"""The dead-letter outbox relay: rows committed with the FAILED status are published to ``dlx``.

A row is deleted in the same transaction that held its lock while the broker confirmed it, so a
crash can only repeat a publish (same ``message_id``), never lose one.
"""

from __future__ import annotations

import asyncpg
from aio_pika.abc import AbstractExchange

from shared import metrics
from shared.amqp import make_message, publish_confirmed
from shared.logs import get_logger
from shared.models import DeadLetter, encode
from shared.topology import (
    HEADER_ATTEMPT,
    HEADER_ERROR_CLASS,
    HEADER_ERROR_CODE,
    HEADER_LOG_ID,
    HEADER_PROVIDER,
    HEADER_REASON,
    HEADER_SOURCE,
    MESSAGE_TYPE_DEAD_LETTER,
)

log = get_logger("responder.relay")

CLAIM_OUTBOX_SQL = """
SELECT log_id, attempt, body FROM dead_letter_outbox ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED
"""
DELETE_OUTBOX_SQL = """
DELETE FROM dead_letter_outbox AS o USING unnest($1::bigint[], $2::int[]) AS d(log_id, attempt)
WHERE o.log_id = d.log_id AND o.attempt = d.attempt
"""


def dead_letter_headers(letter: DeadLetter) -> dict[str, str | int]:
    return {
        HEADER_REASON: letter.reason.value,
        HEADER_ERROR_CLASS: letter.error_class.value,
        HEADER_ERROR_CODE: letter.error_code or "",
        HEADER_LOG_ID: letter.log_id,
        HEADER_ATTEMPT: letter.attempt,
        HEADER_PROVIDER: letter.provider or "",
        HEADER_SOURCE: "responder",
    }


async def relay_dead_letters(pool: asyncpg.Pool, exchange: AbstractExchange, batch: int = 500) -> int:
    """Publish up to ``batch`` outbox rows with confirms; returns how many were relayed."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(CLAIM_OUTBOX_SQL, batch)
        if not rows:
            return 0
        letters = [DeadLetter.model_validate(r["body"]) for r in rows]
        items = [
            (
                make_message(
                    encode(letter),
                    message_id=f"dl-{letter.log_id}-{letter.attempt}",
                    correlation_id=str(letter.log_id),
                    message_type=MESSAGE_TYPE_DEAD_LETTER,
                    headers=dead_letter_headers(letter),
                ),
                letter.channel,
            )
            for letter in letters
        ]
        results = await publish_confirmed(exchange, items)
        done = [letter for letter, error in zip(letters, results, strict=True) if error is None]
        if len(done) < len(letters):
            log.warning("dead_letter_publish_failed", failed=len(letters) - len(done))
        await conn.execute(DELETE_OUTBOX_SQL, [x.log_id for x in done], [x.attempt for x in done])
    for letter in done:
        metrics.DEAD_LETTERS.labels(reason=letter.reason.value).inc()
        log.info(
            "dead_lettered",
            log_id=letter.log_id,
            attempt=letter.attempt,
            reason=letter.reason.value,
            error_code=letter.error_code,
            provider=letter.provider,
        )
    return len(done)
