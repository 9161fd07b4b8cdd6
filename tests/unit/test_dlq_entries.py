"""services/dlq/entries.py: the three shapes of DLQ message, read from body and headers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.dlq.entries import EntryKind, body_fields, parse_entry
from shared.bus import wire
from shared.bus.wire import MESSAGE_TYPE_DEAD_LETTER, MESSAGE_TYPE_DISPATCH
from shared.core.models import encode
from shared.core.recipients import mask
from tests.helpers import dead_letter

WHEN = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_a_responder_dead_letter_is_read_with_its_whole_context() -> None:
    dead = dead_letter()
    entry = parse_entry(
        encode(dead),
        dict(wire.dead_letter(dead).headers),
        message_id="dl-42-3",
        message_type=MESSAGE_TYPE_DEAD_LETTER,
        content_type="application/json",
    )
    assert entry.kind == EntryKind.DEAD_LETTER
    assert (entry.key, entry.log_id, entry.attempt, entry.campaign_id) == ("dl-42-3", 42, 3, 7)
    assert (entry.reason, entry.error_class, entry.error_code) == (
        "attempts_exhausted",
        "transient",
        "SERVER_ERROR",
    )
    assert entry.dead_lettered_at == WHEN and entry.source == "responder" and entry.letter == dead
    assert entry.masked_recipient == mask("+14155550123") != "+14155550123"
    assert entry.public()["recipient"] == entry.masked_recipient
    assert entry.public(reveal=True)["recipient"] == "+14155550123"


def test_a_message_rejected_by_a_service_carries_the_brokers_x_death() -> None:
    headers = {
        "x-death": [
            {
                "count": 1,
                "reason": "rejected",
                "queue": "dispatch.2",
                "time": WHEN,
                "exchange": "dispatch",
                "routing-keys": ["+1415"],
            }
        ],
        "x-first-death-reason": "rejected",
        "x-first-death-queue": "dispatch.2",
        "x-delivery-count": 2,
    }
    entry = parse_entry(b"\xff\x00 not json", headers, message_id=None)
    assert entry.kind == EntryKind.POISON
    assert (entry.reason, entry.source_queue, entry.source) == ("rejected", "dispatch.2", "broker")
    assert entry.dead_lettered_at == WHEN and entry.delivery_count == 2
    assert entry.key.startswith("sha-") and entry.log_id is None


def test_a_message_past_the_delivery_limit_says_so() -> None:
    body = orjson.dumps({"log_id": 9, "attempt": 1, "channel": "email", "recipient": "jo@example.com"})
    headers = {"x-death": [{"reason": "delivery_limit", "queue": "responses.1", "time": WHEN}]}
    entry = parse_entry(body, headers, message_id="9-1", message_type="switchboard.outcome.v1")
    assert (entry.kind, entry.reason, entry.source_queue) == (
        EntryKind.POISON,
        "delivery_limit",
        "responses.1",
    )
    assert (entry.log_id, entry.attempt, entry.channel) == (9, 1, "email")  # read from the original body
    assert entry.masked_recipient == mask("jo@example.com")


def test_a_poison_copy_keeps_the_reason_and_the_error_in_headers() -> None:
    headers = {
        "x-switchboard-reason": "poison_message",
        "x-switchboard-error": "MalformedMessage: not JSON",
        "x-switchboard-source": "sender",
        "x-switchboard-source-queue": "dispatch.0",
    }
    entry = parse_entry(b'{"log_id": 5', headers, message_id="5-1", message_type=MESSAGE_TYPE_DISPATCH)
    assert (entry.kind, entry.reason, entry.source) == (EntryKind.POISON, "poison_message", "sender")
    assert entry.error_message == "MalformedMessage: not JSON" and entry.source_queue == "dispatch.0"
    assert entry.dead_lettered_at is None


def test_a_dead_letter_whose_body_does_not_parse_is_shown_as_poison() -> None:
    entry = parse_entry(b'{"log_id": "x"}', {}, message_id="dl-1-1", message_type=MESSAGE_TYPE_DEAD_LETTER)
    assert (entry.kind, entry.reason) == (EntryKind.POISON, "malformed_dead_letter")
    assert entry.error_message and "DeadLetter" in entry.error_message


def test_bodies_are_text_when_they_can_be_and_base64_otherwise() -> None:
    assert body_fields(b'{"a": 1}') == {"body": '{"a": 1}', "body_encoding": "utf-8"}
    raw = b"\xff\xfe\x00"
    assert body_fields(raw) == {"body": base64.b64encode(raw).decode(), "body_encoding": "base64"}


header_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)


@given(
    body=st.binary(max_size=200),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "x-death",
                "x-delivery-count",
                "x-switchboard-reason",
                "x-switchboard-log-id",
                "x-switchboard-source-queue",
                "x-first-death-queue",
                "other",
            ]
        ),
        header_values,
        max_size=5,
    ),
    message_type=st.sampled_from([None, MESSAGE_TYPE_DEAD_LETTER, MESSAGE_TYPE_DISPATCH]),
)
def test_any_message_is_described_without_raising(
    body: bytes, headers: dict[str, Any], message_type: str | None
) -> None:
    entry = parse_entry(body, headers, message_id=None, message_type=message_type)
    assert entry.body_size == len(body) and entry.reason
