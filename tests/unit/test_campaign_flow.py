"""Pure parts of the campaign flow: JSON contact rows, pacing schedules, stats, the DRAFT transitions."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.campaign_pacing import schedule, sender_identity
from services.api.contacts_json import ContactRow, check_rows
from services.api.routers.campaigns import stats_of
from services.api.schedule import Action, CampaignStatus, TransitionError, transition
from shared.core.routing import PACING_RANGES_S, Pacing, pacing_gap

START = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def test_rows_are_checked_one_by_one_and_good_ones_kept_normalised() -> None:
    rows = [
        ContactRow(phone="+44 7911 000001", name="Ada"),
        ContactRow(email="a@example.com", name="Bob"),
        ContactRow(phone="+447911000002"),
        ContactRow(phone="+447911000001", name="again"),
        ContactRow(phone="+447911000003", recipient="+447911000004", name="two"),
        ContactRow(recipient="+447911000005", variables={"name": "Eve", "bad-name": "x"}),
        ContactRow(recipient="+447911000006", name="A", variables={"name": "B"}),
        ContactRow(recipient="+447911000007", variables={"name": "Gus", "code": " 7 "}),
    ]
    result = check_rows(rows, "sms", required=["name"], existing={"+447911000007"})
    assert [(c.row, c.recipient, c.variables) for c in result.contacts] == [
        (0, "+447911000001", {"name": "Ada"})
    ]
    reasons = {r.row: r.reason for r in result.rejected}
    assert "needs a phone" in reasons[1]
    assert "missing template variables: name" in reasons[2]
    assert "first at index 0" in reasons[3]
    assert "exactly one" in reasons[4]
    assert "letters, digits and underscores" in reasons[5]
    assert "given twice" in reasons[6]
    assert "already in the campaign" in reasons[7]


def test_email_rows_need_an_email_and_columns_are_the_union_of_variables() -> None:
    result = check_rows(
        [ContactRow(email="Ada@Example.COM", variables={"a": "1"}), ContactRow(phone="+447911000001")],
        "email",
        required=[],
        existing=(),
    )
    assert [c.recipient for c in result.contacts] == ["Ada@example.com"]
    assert result.columns == ["a"] and "needs an email" in result.rejected[0].reason


@given(
    preset=st.sampled_from([Pacing.FAST, Pacing.BALANCED, Pacing.SAFE]),
    count=st.integers(min_value=1, max_value=50),
    seed=st.integers(),
)
def test_a_paced_schedule_keeps_every_gap_inside_the_preset_range(
    preset: Pacing, count: int, seed: int
) -> None:
    low, high = PACING_RANGES_S[preset]
    planned = schedule(START, count, preset, random.Random(seed))
    assert len(planned.due) == count and planned.due[0] == START
    for a, b in pairwise([*planned.due, planned.next_slot]):
        assert low <= (b - a).total_seconds() <= high


def test_presets_are_the_documented_ranges_and_none_is_no_gap() -> None:
    assert PACING_RANGES_S == {
        Pacing.NONE: (0.0, 0.0),
        Pacing.FAST: (2.0, 5.0),
        Pacing.BALANCED: (5.0, 10.0),
        Pacing.SAFE: (10.0, 30.0),
    }
    assert schedule(START, 3, Pacing.NONE, random.Random(1)).due == [START] * 3
    assert pacing_gap(0.25, 0.25, random.Random(1)) == 0.25


def test_the_sender_identity_is_the_templates_from_or_the_channels_default() -> None:
    assert sender_identity("sms", {"body": "x", "from": " +15550001 "}) == "sms:+15550001"
    assert sender_identity("whatsapp", {"sender": "shop"}) == "whatsapp:shop"
    assert sender_identity("sms", {"body": "x", "from": 5}) == "sms:default"


def test_stats_count_as_users_do() -> None:
    counts = {
        "PENDING": 2,
        "PROCESSING": 1,
        "SENT": 3,
        "DELIVERED": 4,
        "FAILED": 2,
        "BOUNCED": 1,
        "CANCELLED": 5,
    }
    stats = stats_of(counts)
    assert (stats.total, stats.pending, stats.sent, stats.delivered, stats.failed) == (18, 3, 7, 4, 3)
    assert stats.success_rate == 0.7
    assert stats.model_dump(by_alias=True)["successRate"] == 0.7
    assert stats_of({}).success_rate == 0.0


def test_only_a_draft_is_sent_and_a_draft_may_be_cancelled_but_not_paused() -> None:
    transition(CampaignStatus.DRAFT, Action.SEND)
    transition(CampaignStatus.DRAFT, Action.CANCEL)
    for status in CampaignStatus:
        if status is not CampaignStatus.DRAFT:
            with pytest.raises(TransitionError):
                transition(status, Action.SEND)
    with pytest.raises(TransitionError):
        transition(CampaignStatus.DRAFT, Action.PAUSE)
