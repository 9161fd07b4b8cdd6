"""services/poller/dispatch.py and shared/bus/wire.py: publish order and the AMQP form of a claimed row."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import aio_pika
from hypothesis import given
from hypothesis import strategies as st

from services.poller.claims import ClaimedLog
from services.poller.dispatch import publish_order, to_dispatch
from shared.bus import wire
from shared.bus.amqp import to_message
from shared.core.models import DispatchMessage, decode
from shared.core.recipients import routing_key

CREATED = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
CLAIMED = datetime(2024, 1, 1, 8, 5, tzinfo=UTC)


def claimed(log_id: int = 41, attempt: int = 3, recipient: str = "+44 7911 123456") -> ClaimedLog:
    return ClaimedLog(
        id=log_id,
        attempt=attempt,
        tenant="acme",
        campaign_id=12,
        channel="sms",
        recipient=recipient,
        recipient_key="+447911123456",
        ordering_group="+447911123456",
        payload={"body": "hello"},
        priority=1,
        provider="mocksms",
        created_at=CREATED,
    )


@given(ids=st.lists(st.integers(1, 10**9), unique=True, max_size=30))
def test_publish_order_is_by_id(ids: list[int]) -> None:
    rows = [claimed(i) for i in ids]
    assert [r.id for r in publish_order(rows)] == sorted(ids)
    assert sorted(publish_order(rows), key=id) == sorted(rows, key=id)  # same objects, none lost


def test_to_dispatch_copies_every_column() -> None:
    message = to_dispatch(claimed(), CLAIMED)
    assert message == DispatchMessage(
        log_id=41,
        attempt=3,
        tenant="acme",
        campaign_id=12,
        channel="sms",
        recipient="+44 7911 123456",
        recipient_key="+447911123456",
        ordering_group="+447911123456",
        payload={"body": "hello"},
        priority=1,
        provider="mocksms",
        created_at=CREATED,
        claimed_at=CLAIMED,
    )


def test_a_dispatch_envelope_uses_idempotency_key_as_message_id_and_ordering_group_as_routing_key() -> None:
    message = to_dispatch(claimed(), CLAIMED)
    envelope = wire.dispatch(message)
    amqp_message = to_message(envelope)
    assert amqp_message.message_id == "41-3"
    assert amqp_message.correlation_id == "41"
    assert amqp_message.type == wire.MESSAGE_TYPE_DISPATCH
    assert amqp_message.content_type == wire.CONTENT_TYPE
    assert amqp_message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert envelope.routing_key == "+447911123456"  # the ordering group: the recipient's normalised spelling
    assert decode(DispatchMessage, amqp_message.body) == message


@given(
    log_id=st.integers(1, 2**62),
    attempt=st.integers(1, 100),
    recipient=st.text(min_size=1, max_size=320),
    ordering_group=st.text(min_size=1, max_size=600),
)
def test_dispatch_envelope_message_id_and_key_for_any_row(
    log_id: int, attempt: int, recipient: str, ordering_group: str
) -> None:
    # the ordering group is the shard key: a group's logs meet one consumer (best-effort mode serialises them)
    row = replace(claimed(), id=log_id, attempt=attempt, recipient=recipient, ordering_group=ordering_group)
    envelope = wire.dispatch(to_dispatch(row, CLAIMED))
    key = envelope.routing_key
    assert envelope.message_id == f"{log_id}-{attempt}"
    assert key == routing_key(ordering_group)
    assert len(key.encode()) <= 255
