"""Unusable messages: dead-lettered with the reason in plain words, never requeued, never crash-looping."""

from __future__ import annotations

from datetime import UTC, datetime

from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from shared.amqp import make_message, publish_confirmed
from shared.logs import get_logger
from shared.metrics import POISON
from shared.topology import HEADER_REASON, HEADER_SOURCE

log = get_logger("poison")
HEADER_ERROR = "x-switchboard-error"
HEADER_SOURCE_QUEUE = "x-switchboard-source-queue"
POISON_REASON = "poison_message"


async def reject_poison(
    message: AbstractIncomingMessage,
    error: Exception,
    stage: str,
    dlx: AbstractExchange | None,
    queue: str | None = None,
) -> None:
    """Publish ``message`` to the DLX with why it is unusable, then ack it.

    If that publish is not confirmed, the message is rejected instead and the queue's own
    dead-letter policy moves it to the DLQ (with ``x-death`` reason ``rejected``): either way it
    leaves the work queue exactly once and nothing is lost.
    """
    POISON.labels(stage=stage, error=type(error).__name__).inc()
    reason = f"{type(error).__name__}: {error}"[:1000]
    log.error(
        "poison_message",
        stage=stage,
        queue=queue,
        message_id=message.message_id,
        error=reason,
        action="dead-lettered",
    )
    if dlx is not None:
        headers = dict(message.headers or {})
        headers.update(
            {
                HEADER_REASON: POISON_REASON,
                HEADER_ERROR: reason,
                HEADER_SOURCE: stage,
                HEADER_SOURCE_QUEUE: queue or "",
            }
        )
        copy = make_message(
            message.body,
            message_id=message.message_id or "",
            message_type=message.type or "unknown",
            headers=headers,
        )
        copy.content_type = message.content_type or "application/octet-stream"
        copy.timestamp = datetime.now(UTC)
        (failure,) = await publish_confirmed(dlx, [(copy, message.routing_key or "")])
        if failure is None:
            await message.ack()
            return
        log.warning("poison_dead_letter_failed", error=repr(failure))
    await message.reject(requeue=False)
