"""Turning claimed rows into dispatch messages (pure)."""

from __future__ import annotations

from datetime import datetime

import aio_pika

from services.poller.claims import ClaimedLog
from shared.amqp import make_message
from shared.models import DispatchMessage, encode
from shared.recipients import routing_key
from shared.topology import MESSAGE_TYPE_DISPATCH


def to_dispatch(row: ClaimedLog, claimed_at: datetime) -> DispatchMessage:
    return DispatchMessage(
        log_id=row.id,
        attempt=row.attempt,
        tenant=row.tenant,
        campaign_id=row.campaign_id,
        channel=row.channel,
        recipient=row.recipient,
        recipient_key=row.recipient_key,
        payload=row.payload,
        priority=row.priority,
        provider=row.provider,
        created_at=row.created_at,
        claimed_at=claimed_at,
    )


def to_amqp(message: DispatchMessage) -> tuple[aio_pika.Message, str]:
    amqp_message = make_message(
        encode(message),
        message_id=message.idempotency_key,
        correlation_id=str(message.log_id),
        message_type=MESSAGE_TYPE_DISPATCH,
    )
    return amqp_message, routing_key(message.ordering_key)


def publish_order(rows: list[ClaimedLog]) -> list[ClaimedLog]:
    """Creation order, so that one recipient's messages enter its shard in the order they were made."""
    return sorted(rows, key=lambda r: r.id)
