"""shared/bus/wire.py: one envelope per message kind, read back by its AMQP type only."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.bus import wire
from shared.bus.topology import HEADER_ERROR, HEADER_LOG_ID, HEADER_REASON, HEADER_SOURCE, HEADER_SOURCE_QUEUE
from shared.core.circuit import CircuitEvent, CircuitState
from shared.core.errors import MalformedMessage, PayloadTooLarge
from shared.core.models import (
    DeadLetter,
    DeadLetterReason,
    DispatchMessage,
    OutcomeClass,
    OutcomeMessage,
    ReceiptMessage,
    ReceiptStatus,
    Status,
)
from shared.core.recipients import routing_key
from tests.helpers import dead_letter

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def dispatch(log_id: int = 7, attempt: int = 2) -> DispatchMessage:
    return DispatchMessage(
        log_id=log_id,
        attempt=attempt,
        tenant="acme",
        channel="sms",
        recipient="+44 7911 123456",
        recipient_key="+447911123456",
        payload={"body": "hi"},
        priority=1,
        created_at=AT,
        claimed_at=AT,
    )


def outcome(log_id: int = 7, attempt: int = 2) -> OutcomeMessage:
    return OutcomeMessage(
        log_id=log_id,
        attempt=attempt,
        recipient="+447911123456",
        channel="sms",
        provider="mocksms",
        outcome=OutcomeClass.SUCCESS,
        finished_at=AT,
    )


def receipt() -> ReceiptMessage:
    return ReceiptMessage(
        log_id=7,
        attempt=2,
        recipient="+447911123456",
        provider="mocksms",
        status=ReceiptStatus.DELIVERED,
        occurred_at=AT,
    )


def letter() -> DeadLetter:
    return dead_letter(
        log_id=7,
        attempt=2,
        campaign_id=None,
        recipient="+447911123456",
        reason=DeadLetterReason.PERMANENT_ERROR,
        error_class=OutcomeClass.PERMANENT,
        error_code="INVALID_NUMBER",
        error_message="no such number",
        created_at=AT,
        dead_lettered_at=AT,
    )


def event() -> CircuitEvent:
    return CircuitEvent(
        provider="mocksms", state=CircuitState.OPEN, origin="r1", owner="r1", open_until=12.5, at=10.25
    )


def arrived(envelope: wire.Envelope) -> wire.Received:
    return wire.Received(
        envelope.body,
        message_id=envelope.message_id,
        type=envelope.type,
        routing_key=envelope.routing_key,
        headers=dict(envelope.headers),
        content_type=envelope.content_type,
    )


@pytest.mark.parametrize(
    ("envelope", "model", "message_id", "message_type"),
    [
        (wire.dispatch(dispatch()), dispatch(), "7-2", wire.MESSAGE_TYPE_DISPATCH),
        (wire.outcome(outcome()), outcome(), "7-2", wire.MESSAGE_TYPE_OUTCOME),
        (wire.receipt(receipt()), receipt(), "r-7-2-DELIVERED", wire.MESSAGE_TYPE_RECEIPT),
        (wire.dead_letter(letter()), letter(), "dl-7-2", wire.MESSAGE_TYPE_DEAD_LETTER),
        (wire.circuit_event(event()), event(), "r1-10.25", wire.MESSAGE_TYPE_CIRCUIT),
    ],
)
def test_every_kind_is_read_back_by_its_type(
    envelope: wire.Envelope, model: object, message_id: str, message_type: str
) -> None:
    assert (envelope.message_id, envelope.type, envelope.content_type) == (
        message_id,
        message_type,
        wire.CONTENT_TYPE,
    )
    assert wire.decode_incoming(arrived(envelope)) == model


def test_routing_keys_keep_one_recipient_on_one_shard() -> None:
    assert wire.dispatch(dispatch()).routing_key == routing_key("+447911123456")
    assert wire.outcome(outcome()).routing_key == routing_key("+447911123456")
    assert wire.receipt(receipt()).routing_key == wire.outcome(outcome()).routing_key
    assert wire.circuit_event(event()).routing_key == ""


def test_a_dead_letter_carries_its_context_in_headers() -> None:
    headers = wire.dead_letter(letter()).headers
    assert headers[HEADER_LOG_ID] == 7
    assert headers[HEADER_REASON] == "permanent_error"
    assert headers[HEADER_SOURCE] == "responder"


def test_the_body_is_never_sniffed_a_receipt_body_under_the_outcome_type_is_malformed() -> None:
    envelope = wire.receipt(receipt())
    mislabelled = wire.Received(envelope.body, type=wire.MESSAGE_TYPE_OUTCOME)
    with pytest.raises(MalformedMessage, match="OutcomeMessage"):
        wire.decode_incoming(mislabelled)


@pytest.mark.parametrize("message_type", [None, "", "switchboard.unknown.v9"])
def test_a_message_without_a_known_type_is_malformed(message_type: str | None) -> None:
    body = wire.outcome(outcome()).body
    with pytest.raises(MalformedMessage, match="type"):
        wire.decode_incoming(wire.Received(body, type=message_type))


def test_a_queue_gets_only_its_own_kinds() -> None:
    with pytest.raises(MalformedMessage, match="where a dispatch was expected"):
        wire.decode_dispatch(arrived(wire.outcome(outcome())))
    with pytest.raises(MalformedMessage, match="where an outcome or a receipt was expected"):
        wire.decode_response(arrived(wire.dispatch(dispatch())))
    with pytest.raises(MalformedMessage, match="where a circuit event was expected"):
        wire.decode_circuit_event(arrived(wire.dead_letter(letter())))
    assert wire.decode_response(arrived(wire.receipt(receipt()))) == receipt()


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge):
        wire.decode_incoming(arrived(wire.outcome(outcome())), max_bytes=10)
    with pytest.raises(PayloadTooLarge):
        wire.decode_incoming(arrived(wire.circuit_event(event())), max_bytes=10)


@given(st.binary(max_size=300))
def test_any_bytes_under_any_known_type_decode_or_raise_a_message_error(body: bytes) -> None:
    for message_type in wire.DECODERS:
        with contextlib.suppress(MalformedMessage):  # anything else fails the test
            wire.decode_incoming(wire.Received(body, type=message_type))


def test_a_broken_circuit_event_is_malformed() -> None:
    wrong_state = orjson.dumps({**asdict(event()), "state": 9})
    for body in (b"not json", b"[]", orjson.dumps({"provider": "x"}), wrong_state):
        with pytest.raises(MalformedMessage):
            wire.decode_incoming(wire.Received(body, type=wire.MESSAGE_TYPE_CIRCUIT))


def test_a_poison_copy_keeps_the_message_and_says_why_and_where() -> None:
    original = wire.Received(
        b"\x00garbage",
        message_id="bad-1",
        type=None,
        routing_key="key-1",
        headers={"x-custom": "kept"},
        content_type=None,
    )
    copy = wire.poison_copy(original, "MalformedMessage: not JSON", "sender", "dispatch.2")
    assert (copy.body, copy.message_id, copy.type, copy.routing_key) == (
        b"\x00garbage",
        "bad-1",
        "unknown",
        "key-1",
    )
    assert copy.content_type == "application/octet-stream"
    assert copy.timestamp is not None
    assert copy.headers == {
        "x-custom": "kept",
        HEADER_REASON: wire.POISON_REASON,
        HEADER_ERROR: "MalformedMessage: not JSON",
        HEADER_SOURCE: "sender",
        HEADER_SOURCE_QUEUE: "dispatch.2",
    }


@given(log_id=st.integers(1, 2**62), attempt=st.integers(1, 1000))
def test_message_id_schemes(log_id: int, attempt: int) -> None:
    assert wire.dispatch(dispatch(log_id, attempt)).message_id == f"{log_id}-{attempt}"
    assert wire.outcome(outcome(log_id, attempt)).message_id == f"{log_id}-{attempt}"
    assert wire.letter_id(log_id, attempt) == f"dl-{log_id}-{attempt}"


def test_a_letter_in_the_dlq_is_told_from_poison_by_its_type_or_headers_never_its_body() -> None:
    letter = DeadLetter(
        log_id=9,
        attempt=1,
        max_attempts=1,
        tenant="t",
        campaign_id=None,
        channel="sms",
        recipient="+14155550123",
        provider=None,
        status=Status.FAILED,
        reason=DeadLetterReason.PERMANENT_ERROR,
        error_class=OutcomeClass.PERMANENT,
        error_code="INVALID_NUMBER",
        error_message=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        dead_lettered_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    envelope = wire.dead_letter(letter)
    published = wire.Received(
        envelope.body, message_id=envelope.message_id, type=envelope.type, headers=envelope.headers
    )
    untyped = wire.Received(envelope.body, headers=envelope.headers)
    moved_by_the_broker = wire.Received(
        envelope.body, type=envelope.type, headers={"x-death": [{"reason": "rejected"}]}
    )
    dispatch_with_a_letter_body = wire.Received(envelope.body, type=wire.MESSAGE_TYPE_DISPATCH)
    assert wire.is_dead_letter(published) and wire.decode_dead_letter(published) == letter
    assert wire.is_dead_letter(untyped)
    assert not wire.is_dead_letter(moved_by_the_broker)
    assert not wire.is_dead_letter(dispatch_with_a_letter_body)
    with pytest.raises(MalformedMessage):
        wire.decode_dead_letter(wire.Received(b'{"log_id": 9', type=wire.MESSAGE_TYPE_DEAD_LETTER))
