"""services/api/statistics.py: the time range and the merge of outcome and attempt figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.api.statistics import merge, resolve_range

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_the_default_range_is_the_last_24_hours() -> None:
    assert resolve_range(None, None, NOW, 93) == (NOW - timedelta(hours=24), NOW)
    start = NOW - timedelta(days=3)
    assert resolve_range(start, None, NOW, 93) == (start, start + timedelta(hours=24))
    assert resolve_range(None, NOW - timedelta(days=1), NOW, 93) == (
        NOW - timedelta(days=2),
        NOW - timedelta(days=1),
    )


def test_empty_inverted_or_too_long_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="before"):
        resolve_range(NOW, NOW, NOW, 93)
    with pytest.raises(ValueError, match="at most 7 days"):
        resolve_range(NOW - timedelta(days=8), NOW, NOW, 7)


def test_outcomes_and_attempts_merge_by_key_with_a_retry_rate() -> None:
    # Given sms and email outcomes, and attempts for sms and for a key without outcomes
    outcomes = [
        {
            "key": "sms",
            "total": 10,
            "pending": 1,
            "sent": 7,
            "delivered": 2,
            "failed": 1,
            "bounced": 1,
            "cancelled": 0,
        },
        {
            "key": "email",
            "total": 2,
            "pending": 0,
            "sent": 2,
            "delivered": 0,
            "failed": 0,
            "bounced": 0,
            "cancelled": 0,
        },
    ]
    attempts = [
        {
            "key": "sms",
            "attempts": 12,
            "retries": 3,
            "latency_avg_ms": 20.12345,
            "latency_p95_ms": 40.0,
            "cost": 0.09,
        },
        {"key": "x", "attempts": 1, "retries": 0, "latency_avg_ms": 5.0, "latency_p95_ms": 5.0, "cost": 0},
    ]
    # When merged
    rows = {r.key: r for r in merge(outcomes, attempts)}
    # Then every key has one row, zero where a side is missing
    assert sorted(rows) == ["email", "sms", "x"]
    sms = rows["sms"]
    assert (sms.total, sms.sent, sms.attempts, sms.retry_rate) == (10, 7, 12, 0.25)
    assert sms.latency_avg_ms == 20.123 and sms.cost == 0.09
    assert (
        rows["email"].attempts == 0
        and rows["email"].retry_rate == 0.0
        and rows["email"].latency_p95_ms is None
    )
    assert rows["x"].total == 0
