"""shared/core/models.py: wire encoding round trips, and decode's refusal of anything else."""

from __future__ import annotations

import contextlib
from datetime import UTC, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from shared.core.errors import MalformedMessage, MessageError, PayloadTooLarge
from shared.core.models import (
    DeadLetter,
    DeadLetterReason,
    DispatchMessage,
    OutcomeClass,
    OutcomeMessage,
    Status,
    decode,
    encode,
    idempotency_key,
)

MODELS: list[type[BaseModel]] = [DispatchMessage, OutcomeMessage, DeadLetter]

ids = st.integers(1, 2**63 - 1)
attempts = st.integers(1, 1_000)
text = st.text(max_size=40)
datetimes = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]))
amounts = st.floats(0, 1e12, allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=10,
)

dispatches = st.builds(
    DispatchMessage,
    log_id=ids,
    attempt=attempts,
    tenant=text,
    campaign_id=st.none() | ids,
    channel=text,
    recipient=st.text(min_size=1, max_size=320),
    payload=st.dictionaries(text, json_values, max_size=5),
    priority=st.integers(0, 2),
    provider=st.none() | text,
    created_at=datetimes,
    claimed_at=datetimes,
)
outcomes = st.builds(
    OutcomeMessage,
    log_id=ids,
    attempt=attempts,
    recipient=text,
    channel=text,
    provider=st.none() | text,
    outcome=st.sampled_from(list(OutcomeClass)),
    error_code=st.none() | text,
    error_message=st.none() | text,
    retry_after_s=st.none() | amounts,
    bounced=st.booleans(),
    vendor_ref=st.none() | text,
    latency_ms=amounts,
    cost=amounts,
    replay=st.booleans(),
    finished_at=datetimes,
)
dead_letters = st.builds(
    DeadLetter,
    log_id=ids,
    attempt=attempts,
    max_attempts=attempts,
    tenant=text,
    campaign_id=st.none() | ids,
    channel=text,
    recipient=text,
    provider=st.none() | text,
    status=st.sampled_from([Status.FAILED, Status.BOUNCED]),
    reason=st.sampled_from(list(DeadLetterReason)),
    error_class=st.sampled_from(list(OutcomeClass)),
    error_code=st.none() | text,
    error_message=st.none() | text,
    created_at=datetimes,
    dead_lettered_at=datetimes,
)


@given(message=dispatches)
def test_dispatch_round_trip(message: DispatchMessage) -> None:
    assert decode(DispatchMessage, encode(message)) == message


@given(message=outcomes)
def test_outcome_round_trip(message: OutcomeMessage) -> None:
    assert decode(OutcomeMessage, encode(message)) == message


@given(message=dead_letters)
def test_dead_letter_round_trip(message: DeadLetter) -> None:
    assert decode(DeadLetter, encode(message)) == message


@given(message=dispatches)
def test_dispatch_idempotency_key_is_log_id_dash_attempt(message: DispatchMessage) -> None:
    assert message.idempotency_key == idempotency_key(message.log_id, message.attempt)
    assert message.idempotency_key == f"{message.log_id}-{message.attempt}"


def test_dispatch_ordering_key_falls_back_to_the_recipient() -> None:
    # a message published before recipient_key existed still routes and orders by its recipient
    old = DispatchMessage.model_validate(_valid(DispatchMessage))
    assert old.recipient_key is None
    assert old.ordering_key == old.recipient
    new = old.model_copy(update={"recipient_key": "+447911123456", "recipient": "+44 7911 123456"})
    assert new.ordering_key == "+447911123456"


@pytest.mark.parametrize("field", ["cost", "latency_ms", "retry_after_s"])
def test_outcome_with_infinite_number_is_refused_or_survives_the_wire(field: str) -> None:
    base = _valid(OutcomeMessage)
    try:
        message = OutcomeMessage.model_validate({**base, field: float("inf")})
    except ValueError:
        return  # refused when built: fine
    assert decode(OutcomeMessage, encode(message)) == message


def _valid(model: type[BaseModel]) -> dict[str, Any]:
    now = "2024-05-01T12:00:00Z"
    common = {"log_id": 7, "attempt": 2, "channel": "sms", "recipient": "+447911123456", "provider": "p"}
    if model is DispatchMessage:
        return {
            **common,
            "tenant": "t",
            "payload": {"body": "hi"},
            "priority": 1,
            "created_at": now,
            "claimed_at": now,
        }
    if model is OutcomeMessage:
        return {**common, "outcome": "transient"}
    return {
        **common,
        "max_attempts": 5,
        "tenant": "t",
        "campaign_id": None,
        "status": "FAILED",
        "reason": "permanent_error",
        "error_class": "permanent",
        "error_code": "X",
        "error_message": None,
        "created_at": now,
        "dead_lettered_at": now,
    }


@pytest.mark.parametrize("model", MODELS)
def test_valid_minimal_bodies_decode(model: type[BaseModel]) -> None:
    assert isinstance(decode(model, orjson.dumps(_valid(model))), model)


@pytest.mark.parametrize("model", MODELS)
def test_unknown_fields_are_ignored(model: type[BaseModel]) -> None:
    assert isinstance(decode(model, orjson.dumps({**_valid(model), "future_field": 1})), model)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    "body", [b"", b"{", b"not json", b"\xff\xfe", b'{"a":1}x', b"[" * 2000 + b"]" * 2000]
)
def test_non_json_is_malformed(model: type[BaseModel], body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode(model, body)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("body", [b"[]", b"[{}]", b"1", b"null", b'"text"', b"true"])
def test_json_that_is_not_an_object_is_malformed(model: type[BaseModel], body: bytes) -> None:
    with pytest.raises(MalformedMessage, match="expected a JSON object"):
        decode(model, body)


@pytest.mark.parametrize("model", MODELS)
def test_each_missing_required_field_is_named(model: type[BaseModel]) -> None:
    body = _valid(model)
    required = [name for name, f in model.model_fields.items() if f.is_required()]
    assert required
    for name in required:
        broken = {k: v for k, v in body.items() if k != name}
        with pytest.raises(MalformedMessage, match=name):
            decode(model, orjson.dumps(broken))


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (DispatchMessage, "log_id", "seven"),
        (DispatchMessage, "log_id", 0),
        (DispatchMessage, "attempt", 0),
        (DispatchMessage, "priority", 3),
        (DispatchMessage, "payload", [1, 2]),
        (DispatchMessage, "recipient", ""),
        (DispatchMessage, "recipient", "x" * 321),
        (DispatchMessage, "created_at", "yesterday"),
        (OutcomeMessage, "outcome", "maybe"),
        (OutcomeMessage, "retry_after_s", -1),
        (OutcomeMessage, "latency_ms", -0.5),
        (OutcomeMessage, "cost", "free"),
        (OutcomeMessage, "log_id", {"id": 1}),
        (DeadLetter, "status", "LOST"),
        (DeadLetter, "reason", "boredom"),
        (DeadLetter, "attempt", None),
    ],
)
def test_wrong_types_and_ranges_are_malformed(model: type[BaseModel], field: str, value: object) -> None:
    with pytest.raises(MalformedMessage, match=field):
        decode(model, orjson.dumps({**_valid(model), field: value}))


def test_payload_over_max_bytes_is_too_large() -> None:
    body = encode(DispatchMessage.model_validate(_valid(DispatchMessage)))
    assert decode(DispatchMessage, body, max_bytes=len(body)).log_id == 7
    with pytest.raises(PayloadTooLarge, match=str(len(body))):
        decode(DispatchMessage, body, max_bytes=len(body) - 1)


def test_size_is_checked_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge):
        decode(DispatchMessage, b"x" * 101, max_bytes=100)


@given(model=st.sampled_from(MODELS), body=st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_message_errors(model: type[BaseModel], body: bytes) -> None:
    with contextlib.suppress(MessageError):
        decode(model, body, max_bytes=200)


field_names = st.sampled_from(sorted({name for model in MODELS for name in model.model_fields} | {"v", "x"}))


@given(
    model=st.sampled_from(MODELS),
    data=st.dictionaries(field_names, json_values | st.integers() | st.floats(), max_size=12),
)
def test_arbitrary_json_objects_only_raise_message_errors(
    model: type[BaseModel], data: dict[str, Any]
) -> None:
    try:
        body = orjson.dumps(data)
    except orjson.JSONEncodeError:
        body = repr(data).encode()
    with contextlib.suppress(MessageError):
        decode(model, body)


@given(model=st.sampled_from(MODELS), data=st.data())
def test_whatever_decodes_survives_another_round_trip(model: type[BaseModel], data: Any) -> None:
    body = _valid(model)
    field = data.draw(st.sampled_from(sorted(body)))
    body[field] = data.draw(json_values)
    try:
        decoded = decode(model, orjson.dumps(body))
    except MalformedMessage:
        return
    assert decode(model, encode(decoded)) == decoded
