"""services/dlq/filters.py and stats.py: selecting and counting DLQ entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.dlq.entries import DlqEntry, EntryKind
from services.dlq.filters import EntryFilter, parse_duration
from services.dlq.stats import DlqStats, age_bucket

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def entry(**changes: object) -> DlqEntry:
    fields: dict[str, object] = dict(
        kind=EntryKind.DEAD_LETTER,
        key="dl-1-2",
        message_id="dl-1-2",
        log_id=1,
        attempt=2,
        tenant="acme",
        campaign_id=7,
        channel="sms",
        recipient="+14155550123",
        provider="mocksms",
        status="FAILED",
        reason="permanent_error",
        error_class="permanent",
        error_code="INVALID_NUMBER",
        error_message=None,
        dead_lettered_at=NOW - timedelta(hours=3),
        source_queue=None,
        source="responder",
        message_type=None,
        content_type=None,
        body_size=10,
        delivery_count=0,
    )
    fields.update(changes)
    return DlqEntry.model_validate(fields)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("7d", 604800),
        ("1w", 604800),
        ("1d12h", 129600),
        ("1.5h", 5400),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "3", "2 weeks", "h", "1h-"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_an_empty_filter_matches_everything() -> None:
    assert EntryFilter().is_empty() and EntryFilter().matches(entry(), NOW)
    assert not EntryFilter.build(channels=["sms"]).is_empty()


@pytest.mark.parametrize(
    ("criteria", "matches"),
    [
        ({"ids": ["1"]}, True),
        ({"ids": ["2", "dl-1-2"]}, True),
        ({"ids": ["2"]}, False),
        ({"reasons": ["PERMANENT_ERROR"]}, True),
        ({"reasons": ["attempts_exhausted"]}, False),
        ({"error_classes": ["permanent", "transient"]}, True),
        ({"error_codes": ["invalid_number"]}, True),
        ({"channels": ["email"]}, False),
        ({"providers": ["MockSMS"]}, True),
        ({"tenants": ["acme"], "campaigns": [7]}, True),
        ({"tenants": ["acme"], "campaigns": [8]}, False),
        ({"kinds": ["poison"]}, False),
        ({"older_than": "2h"}, True),
        ({"older_than": "4h"}, False),
        ({"newer_than": "4h"}, True),
        ({"newer_than": "2h"}, False),
        ({"older_than": "1h", "newer_than": "1d"}, True),
    ],
)
def test_every_criterion_must_hold(criteria: dict[str, Any], matches: bool) -> None:
    assert EntryFilter.build(**criteria).matches(entry(), NOW) is matches


def test_an_undated_entry_never_matches_an_age_criterion() -> None:
    undated = entry(dead_lettered_at=None, kind=EntryKind.POISON)
    assert not EntryFilter.build(older_than="1s").matches(undated, NOW)
    assert not EntryFilter.build(newer_than="100w").matches(undated, NOW)
    assert EntryFilter.build(kinds=["poison"]).matches(undated, NOW)


def test_stats_count_each_dimension_and_age() -> None:
    stats = DlqStats()
    stats.add(entry(), NOW)
    stats.add(entry(channel="email", dead_lettered_at=NOW - timedelta(days=2)), NOW)
    stats.add(
        entry(
            kind=EntryKind.POISON,
            reason="rejected",
            channel=None,
            dead_lettered_at=None,
            provider=None,
            error_code=None,
        ),
        NOW,
    )
    data = stats.as_dict()
    assert data["total"] == 3
    assert data["kind"] == {"dead_letter": 2, "poison": 1}
    assert data["channel"] == {"sms": 1, "email": 1, "-": 1}
    assert data["age"] == {"1h - 24h": 1, "1d - 7d": 1, "unknown": 1}
    assert data["oldest"] == (NOW - timedelta(days=2)).isoformat()


@pytest.mark.parametrize(
    ("age", "bucket"),
    [
        (timedelta(minutes=5), "< 1h"),
        (timedelta(hours=30), "1d - 7d"),
        (timedelta(days=8), "7d - 30d"),
        (timedelta(days=90), "> 30d"),
    ],
)
def test_age_buckets(age: timedelta, bucket: str) -> None:
    assert age_bucket(NOW - age, NOW) == bucket
