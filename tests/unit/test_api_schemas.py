"""services/api/schemas: what the API refuses before anything reaches PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.api.campaign_runs import build_logs, run_key
from services.api.schemas.campaigns import CampaignCreate
from services.api.schemas.messages import SendBatch, SendMessage
from services.api.templating import parse


def test_a_message_is_normalised_and_defaults_apply() -> None:
    message = SendMessage(channel="sms", recipient="+44 7911 123456", payload={"body": "hi"})
    assert message.recipient == "+447911123456"
    assert message.priority == 1 and message.send_at is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"channel": "fax", "recipient": "+447911123456"}, "channel"),
        ({"channel": "sms", "recipient": "12"}, "E.164"),
        ({"channel": "email", "recipient": "nobody"}, "email"),
        ({"channel": "sms", "recipient": "+447911123456", "payload": {"body": "x" * 70_000}}, "exceeds"),
        ({"channel": "sms", "recipient": "+447911123456", "payload": {"body": "a\x00b"}}, "NUL"),
        ({"channel": "sms", "recipient": "+447911123456", "payload": {"\ud800": "x"}}, "surrogate"),
        ({"channel": "sms", "recipient": "+447911123456", "payload": {"n": float("nan")}}, "finite"),
        ({"channel": "sms", "recipient": "+447911123456", "priority": 3}, "priority"),
        ({"channel": "sms", "recipient": "+447911123456", "send_at": "2024-01-01T00:00:00"}, "offset"),
        ({"channel": "sms", "recipient": "+447911123456", "send_at": 1700000000}, "RFC 3339"),
        ({"channel": "sms", "recipient": "+447911123456", "send_at": "0001-01-01T00:00:00+05:00"}, "range"),
        ({"channel": "sms", "recipient": "+447911123456", "extra": 1}, "extra"),
    ],
)
def test_invalid_messages_are_refused_with_a_reason(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        SendMessage.model_validate(fields)


def test_send_at_is_kept_in_utc() -> None:
    local = datetime(2030, 1, 1, 9, tzinfo=timezone(timedelta(hours=2)))
    message = SendMessage(channel="sms", recipient="+447911123456", send_at=local)
    assert message.send_at == datetime(2030, 1, 1, 7, tzinfo=UTC)


def test_a_batch_holds_one_to_a_thousand_messages() -> None:
    one = {"channel": "sms", "recipient": "+447911123456"}
    assert len(SendBatch.model_validate({"messages": [one] * 1000}).messages) == 1000
    for size in (0, 1001):
        with pytest.raises(ValidationError):
            SendBatch.model_validate({"messages": [one] * size})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=5), json_values))
def test_any_json_payload_is_either_accepted_and_encodable_or_refused(payload: dict[str, object]) -> None:
    # Whatever the payload, validation accepts it (and it can be encoded for jsonb) or refuses it cleanly
    try:
        message = SendMessage(channel="sms", recipient="+447911123456", payload=payload)
    except ValidationError:
        return
    assert orjson.loads(orjson.dumps(message.payload)) == message.payload


def test_campaign_schedules_are_checked() -> None:
    base = {"name": "c", "template_id": 1, "contact_list_id": 1}
    assert CampaignCreate.model_validate({**base, "cron": "0  9 * * 1"}).cron == "0 9 * * 1"
    for extra, problem in [
        ({"cron": "every day"}, "five fields"),
        ({"timezone": "Nowhere/City"}, "time zone"),
        ({"end_at": "2030-01-01T00:00:00Z"}, "cron campaigns only"),
        (
            {"cron": "0 9 * * *", "start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"},
            "after",
        ),
    ]:
        with pytest.raises(ValidationError, match=problem):
            CampaignCreate.model_validate({**base, **extra})


def test_a_run_renders_each_contact_with_a_stable_idempotency_key() -> None:
    # Given a campaign, a template and two contacts
    campaign = {"id": 7, "channel": "sms", "priority": 2, "max_attempts": None}
    template = parse({"body": "Hi {{name}}"})
    contacts = [
        {"position": 0, "recipient": "+447911123456", "variables": {"name": "Ada"}},
        {"position": 1, "recipient": "+447911123457", "variables": {"name": "Bob"}},
    ]
    run_at = datetime(2030, 1, 1, tzinfo=UTC)
    # When the run's logs are built
    logs = list(build_logs(campaign, template, contacts, run_at, max_attempts=5))
    # Then each is rendered, due at the run time, keyed by campaign, run and contact
    assert [x.payload for x in logs] == [{"body": "Hi Ada"}, {"body": "Hi Bob"}]
    assert all(x.send_at == run_at and x.campaign_id == 7 and x.max_attempts == 5 for x in logs)
    assert [x.idempotency_key for x in logs] == [run_key(7, run_at, 0), run_key(7, run_at, 1)]
    assert run_key(7, run_at, 0) == "campaign:7:1893456000:0"
