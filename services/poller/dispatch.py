"""Turning claimed rows into dispatch messages (pure)."""

from __future__ import annotations

from datetime import datetime

from services.poller.claims import ClaimedLog
from shared.core.models import DispatchMessage


def to_dispatch(row: ClaimedLog, claimed_at: datetime) -> DispatchMessage:
    return DispatchMessage(
        log_id=row.id,
        attempt=row.attempt,
        tenant=row.tenant,
        campaign_id=row.campaign_id,
        channel=row.channel,
        recipient=row.recipient,
        recipient_key=row.recipient_key,
        ordering_group=row.ordering_group,
        payload=row.payload,
        priority=row.priority,
        provider=row.provider,
        created_at=row.created_at,
        claimed_at=claimed_at,
        key_attempt=row.key_attempt,
    )


def publish_order(rows: list[ClaimedLog]) -> list[ClaimedLog]:
    """Creation order, so that one recipient's messages enter its shard in the order they were made."""
    return sorted(rows, key=lambda r: r.id)
