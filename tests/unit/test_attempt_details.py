"""Attempt metadata and visibility (issue 16 item 9, issue 14 item 8): provider details kept small, the
adapters' details, the mock gateway's segments, stats figures, and the payload a dead letter carries."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.statistics import merge
from services.dlq.render import letter_payload
from services.mock_provider.apis import segments
from services.sender.adapters import SendRequest
from services.sender.adapters.base import MAX_DETAIL_KEYS, MAX_DETAIL_TEXT, details
from services.sender.adapters.sms import SmsGatewayAdapter
from services.sender.adapters.transport import HttpResponse, MockTransport
from services.sender.adapters.whatsapp import WhatsAppCloudAdapter
from services.sender.outcomes import to_outcome
from shared.core.models import DispatchMessage, OutcomeMessage


def test_details_drop_empty_values_and_keep_scalars() -> None:
    assert details(a=None, b="", c=0, d=False, e="queued", f=2.5) == {
        "c": 0,
        "d": False,
        "e": "queued",
        "f": 2.5,
    }
    assert details() is None


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10), st.none() | st.integers() | st.text() | st.lists(st.integers())
    )
)
def test_details_stay_small_whatever_a_provider_answers(fields: dict[str, object]) -> None:
    kept = details(**fields) or {}
    assert len(kept) <= MAX_DETAIL_KEYS
    assert all(len(v) <= MAX_DETAIL_TEXT for v in kept.values() if isinstance(v, str))
    OutcomeMessage(  # and they always fit the outcome message
        log_id=1,
        attempt=1,
        recipient="+1",
        channel="sms",
        provider="p",
        outcome="success",
        details=kept or None,
    )


async def test_the_sms_gateways_status_and_segments_reach_the_outcome() -> None:
    answer = {"sid": "SM1", "status": "queued", "num_segments": "2", "num_media": "0", "price_unit": "USD"}
    adapter = SmsGatewayAdapter(
        "http://gw", {"account_sid": "AC1"}, MockTransport(lambda _: HttpResponse(201, orjson.dumps(answer)))
    )
    result = await adapter.send(SendRequest("gw", "sms", "+447911123456", {"body": "hi"}, "4-1", 4, 1))
    assert result.details == {"provider_status": "queued", "segments": 2, "media": 0, "price_unit": "USD"}
    message = DispatchMessage.model_validate(
        {
            "log_id": 4,
            "attempt": 1,
            "tenant": "t",
            "channel": "sms",
            "recipient": "+447911123456",
            "payload": {},
            "priority": 1,
            "created_at": "2024-01-01T00:00:00Z",
            "claimed_at": "2024-01-01T00:00:00Z",
        }
    )
    assert to_outcome(message, "gw", result).details == result.details


async def test_a_whatsapp_error_keeps_metas_codes_in_the_details() -> None:
    body = {
        "error": {"code": 131026, "error_subcode": 2494010, "message": "undeliverable", "fbtrace_id": "Ab"}
    }
    adapter = WhatsAppCloudAdapter(
        "http://wa",
        {"phone_number_id": "1000", "access_token": "t"},
        MockTransport(lambda _: HttpResponse(400, orjson.dumps(body))),
    )
    result = await adapter.send(SendRequest("wa", "whatsapp", "+447911123456", {"body": "hi"}, "5-1", 5, 1))
    assert result.details == {
        "http_status": 400,
        "provider_code": 131026,
        "error_subcode": 2494010,
        "fbtrace_id": "Ab",
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [("", 1), ("x" * 160, 1), ("x" * 161, 2), ("x" * 306, 2), ("x" * 307, 3), ("é" * 70, 1), ("é" * 71, 2)],
)
def test_the_mock_gateway_counts_segments_as_gateways_do(body: str, expected: int) -> None:
    assert segments(body) == expected


def test_stats_rows_carry_attempt_success_fallbacks_in_doubt_and_overdue_receipts() -> None:
    outcomes = [{"key": "sms", "total": 10, "sent": 7, "in_doubt": 1, "receipts_overdue": 3}]
    attempts = [{"key": "sms", "attempts": 12, "attempts_succeeded": 9, "fallbacks": 4, "retries": 2}]
    (row,) = merge(outcomes, attempts)
    assert (row.attempts, row.attempts_succeeded, row.attempts_failed, row.success_rate) == (12, 9, 3, 0.75)
    assert (row.fallbacks, row.in_doubt, row.receipts_overdue) == (4, 1, 3)
    (empty,) = merge([{"key": "email", "total": 1}], [])
    assert (empty.success_rate, empty.attempts_failed) == (0.0, 0)


def test_a_dead_letters_payload_is_read_from_its_body() -> None:
    assert letter_payload(orjson.dumps({"log_id": 1, "payload": {"body": "hi"}})) == {"body": "hi"}
    assert letter_payload(orjson.dumps({"log_id": 1})) is None
    assert letter_payload(b"\xff not json") is None
