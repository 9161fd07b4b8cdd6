"""services/sender/outcomes.py: checks before any provider call, and turning results into outcomes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from services.sender.adapters import SendRequest, SendResult, result_from_http
from services.sender.outcomes import attempt, precheck, to_outcome
from shared.core.models import DispatchMessage, OutcomeClass, OutcomeMessage, decode, encode

CHAINS = {"sms": ["mocksms", "mocksms2"], "email": ["mockmail"], "whatsapp": []}
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def dispatch(**overrides: Any) -> DispatchMessage:
    fields: dict[str, Any] = {
        "log_id": 5,
        "attempt": 2,
        "tenant": "t",
        "channel": "sms",
        "recipient": "+44 7911 123456",
        "payload": {"body": "hi"},
        "priority": 1,
        "created_at": NOW,
        "claimed_at": NOW,
        **overrides,
    }
    return DispatchMessage(**fields)


class FakeAdapter:
    def __init__(self, result: SendResult) -> None:
        self.result = result
        self.requests: list[SendRequest] = []

    async def send(self, request: SendRequest) -> SendResult:
        self.requests.append(request)
        return self.result

    async def close(self) -> None:
        pass


def refused(message: DispatchMessage, limit: int = 1_000) -> OutcomeMessage:
    checked = precheck(message, CHAINS, limit)
    assert isinstance(checked, OutcomeMessage)
    assert (checked.log_id, checked.attempt, checked.recipient) == (
        message.log_id,
        message.attempt,
        message.recipient,
    )
    return checked


@pytest.mark.parametrize("channel", ["fax", "SMS", ""])
def test_unknown_channel_is_permanent(channel: str) -> None:
    outcome = refused(dispatch(channel=channel))
    assert (outcome.outcome, outcome.error_code) == (OutcomeClass.PERMANENT, "UNKNOWN_CHANNEL")


@pytest.mark.parametrize(
    ("channel", "recipient", "code"),
    [
        ("sms", "12", "INVALID_NUMBER"),
        ("whatsapp", "+0123456789", "INVALID_NUMBER"),
        ("email", "not-an-address", "INVALID_ADDRESS"),
        ("webhook", "ftp://example.com", "INVALID_URL"),
    ],
)
def test_invalid_recipient_is_permanent(channel: str, recipient: str, code: str) -> None:
    outcome = refused(dispatch(channel=channel, recipient=recipient))
    assert (outcome.outcome, outcome.error_code) == (OutcomeClass.PERMANENT, code)


async def test_invalid_recipient_never_reaches_the_provider() -> None:
    adapter = FakeAdapter(SendResult(OutcomeClass.SUCCESS, 1.0))
    outcome = await attempt(dispatch(recipient="+0123"), adapter, CHAINS, 1_000)
    assert outcome.outcome == OutcomeClass.PERMANENT
    assert adapter.requests == []


def test_payload_too_large_is_permanent_and_limit_is_inclusive() -> None:
    payload = {"body": "x" * 100}
    size = len(orjson.dumps(payload))
    assert precheck(dispatch(payload=payload), CHAINS, size) == ("mocksms", "+447911123456")
    outcome = refused(dispatch(payload=payload), size - 1)
    assert (outcome.outcome, outcome.error_code) == (OutcomeClass.PERMANENT, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    ("channel", "recipient"), [("whatsapp", "+447911123456"), ("webhook", "https://hooks.example.com/x")]
)
def test_no_provider_is_recoverable(channel: str, recipient: str) -> None:
    outcome = refused(dispatch(channel=channel, recipient=recipient))
    assert (outcome.outcome, outcome.error_code, outcome.provider) == (
        OutcomeClass.RECOVERABLE,
        "NO_PROVIDER",
        None,
    )


def test_provider_is_head_of_chain_by_default() -> None:
    assert precheck(dispatch(), CHAINS, 1_000) == ("mocksms", "+447911123456")


def test_provider_of_the_message_wins() -> None:
    assert precheck(dispatch(provider="mocksms2"), CHAINS, 1_000) == ("mocksms2", "+447911123456")
    assert precheck(dispatch(channel="whatsapp", provider="mockwa"), CHAINS, 1_000) == (
        "mockwa",
        "+447911123456",
    )


def test_email_recipient_is_normalised() -> None:
    assert precheck(dispatch(channel="email", recipient="Jo@Example.COM"), CHAINS, 1_000) == (
        "mockmail",
        "Jo@example.com",
    )


async def test_attempt_sends_normalised_recipient_with_idempotency_key() -> None:
    adapter = FakeAdapter(SendResult(OutcomeClass.SUCCESS, 7.0, vendor_ref="v1", cost=0.01, replay=True))
    message = dispatch()
    outcome = await attempt(message, adapter, CHAINS, 1_000)
    assert adapter.requests == [
        SendRequest("mocksms", "sms", "+447911123456", {"body": "hi"}, "5-2", 5, 2),
    ]
    assert (outcome.provider, outcome.outcome, outcome.vendor_ref, outcome.cost, outcome.replay) == (
        "mocksms",
        OutcomeClass.SUCCESS,
        "v1",
        0.01,
        True,
    )
    assert outcome.recipient == message.recipient  # the routing key on responses stays the original


def test_to_outcome_copies_every_result_field() -> None:
    result = SendResult(
        OutcomeClass.TRANSIENT,
        3.5,
        error_code="RATE_LIMITED",
        error_message="slow",
        retry_after_s=2.0,
        bounced=False,
    )
    outcome = to_outcome(dispatch(), "mocksms", result)
    assert (outcome.log_id, outcome.attempt, outcome.provider) == (5, 2, "mocksms")
    assert (outcome.outcome, outcome.error_code, outcome.error_message) == (
        OutcomeClass.TRANSIENT,
        "RATE_LIMITED",
        "slow",
    )
    assert (outcome.retry_after_s, outcome.latency_ms, outcome.bounced) == (2.0, 3.5, False)


@pytest.mark.parametrize("cost", ["Infinity", -1, "n/a", 1e300])
def test_outcome_of_odd_provider_cost_survives_the_wire(cost: object) -> None:
    result = result_from_http(200, orjson.dumps({"id": "r", "cost": cost}), None, 1.0)
    outcome = to_outcome(dispatch(), "mocksms", result)
    assert decode(OutcomeMessage, encode(outcome)) == outcome
