"""The dashboard's pure decisions: counting, rates, queue grouping, circuit states, failure rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.dashboard import snapshot
from shared.core.recipients import recipient_hash


def test_status_counts_total_by_status_and_by_channel() -> None:
    # Given (channel, status, n) rows
    rows = [
        {"channel": "sms", "status": "SENT", "n": 5},
        {"channel": "sms", "status": "PENDING", "n": 2},
        {"channel": "email", "status": "FAILED", "n": 1},
        {"channel": "email", "status": "PROCESSING", "n": 3},
    ]
    # When they are summarised
    counts = snapshot.status_counts(rows)
    # Then every status is present (zero when absent), channels are sorted, and open = pending + processing
    assert counts["by_status"]["SENT"] == 5 and counts["by_status"]["DELIVERED"] == 0
    assert list(counts["by_channel"]) == ["email", "sms"]
    assert counts["by_channel"]["email"]["PROCESSING"] == 3
    assert counts["total"] == 11 and counts["open"] == 5


def test_status_counts_of_an_empty_table() -> None:
    counts = snapshot.status_counts([])
    assert (
        counts["total"] == 0
        and counts["by_channel"] == {}
        and set(counts["by_status"]) >= {"PENDING", "SENT"}
    )


def test_throughput_fills_missing_buckets_and_rates_the_last_minute() -> None:
    # Given finished logs in buckets of 10 s, bucket 0 the newest, one outside the window
    rows = [
        {"bucket": 0, "status": "SENT", "n": 30},
        {"bucket": 5, "status": "FAILED", "n": 6},
        {"bucket": 6, "status": "DELIVERED", "n": 100},  # older than a minute
        {"bucket": 29, "status": "SENT", "n": 1},
        {"bucket": 30, "status": "SENT", "n": 999},  # outside a 300 s window
    ]
    # When the rate is computed
    rate = snapshot.throughput(rows, window_s=300, bucket_s=10)
    # Then the series runs oldest to newest with zeros, and the last minute's rate counts buckets 0-5
    assert len(rate.series) == 30
    assert rate.series[-1] == 30 and rate.series[-6] == 6 and rate.series[-7] == 100 and rate.series[0] == 1
    assert sum(rate.series) == 137
    assert (rate.sent_last_minute, rate.failed_last_minute) == (30, 6)
    assert rate.per_second == 0.6


def test_queue_depths_group_and_order_lanes_urgent_first_shards_numerically_with_the_dlq_last() -> None:
    queues: list[dict[str, Any]] = [
        {"name": "dlq", "messages_ready": 4},
        {"name": "responses.bulk.10", "messages_ready": 1, "messages_unacknowledged": 2, "consumers": 1},
        {"name": "dispatch.bulk.2", "messages_ready": 7, "consumers": 2},
        {"name": "responses.bulk.2"},
        {"name": "dispatch.bulk.10", "messages_ready": None},
        {"name": "dispatch.urgent.3", "messages_ready": 1},
        {"name": "something-else", "messages_ready": 3},
    ]
    depths = snapshot.queue_depths(queues)
    assert [d.name for d in depths] == [
        "dispatch.urgent.3",
        "dispatch.bulk.2",
        "dispatch.bulk.10",
        "responses.bulk.2",
        "responses.bulk.10",
        "something-else",
        "dlq",
    ]
    assert depths[1].ready == 7 and depths[1].consumers == 2 and depths[2].ready == 0
    assert snapshot.queue_totals(depths) == {"dispatch": 8, "responses": 3, "dlq": 4}


def test_queue_group_needs_the_shard_separator() -> None:
    assert snapshot.queue_group("dispatch.bulk.0") == "dispatch"
    assert snapshot.queue_group("dispatcher") == "other"
    assert snapshot.queue_group("dlq") == "dlq"


def test_circuits_read_whatever_columns_a_table_has() -> None:
    # Given no table / Then nothing to show ("n/a" on the page)
    assert snapshot.circuits(None) is None
    # Given rows naming the provider and state in different ways
    since = datetime(2025, 1, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = [
        {"provider": "mocksms", "state": "OPEN", "updated_at": since},
        {"name": "mockmail", "status": 0},
        {"provider_name": "mockwa", "state": "half-open"},
        {"state": "open"},  # no provider: skipped
        {"provider": "weird", "state": "tripping"},
    ]
    # Then states are normalised and sorted by provider
    assert snapshot.circuits(rows) == [
        {"provider": "mockmail", "state": "closed", "since": None},
        {"provider": "mocksms", "state": "open", "since": since.isoformat()},
        {"provider": "mockwa", "state": "half_open", "since": None},
        {"provider": "weird", "state": "tripping", "since": None},
    ]


def test_circuit_state_codes_match_the_metric() -> None:
    # switchboard_circuit_state: 0 closed, 1 half-open, 2 open (shared/core/circuit.py, docs/metrics.md)
    codes = [snapshot.circuit_state(v) for v in (0, 1, 2, 2.0, None)]
    assert codes == ["closed", "half_open", "open", "open", "unknown"]


def test_circuits_from_a_senders_metrics() -> None:
    # Given a sender's exposition with two providers' gauges among other metrics
    text = (
        "# HELP switchboard_circuit_state Circuit breaker per provider\n"
        "# TYPE switchboard_circuit_state gauge\n"
        'switchboard_circuit_state{provider="mocksms"} 2.0\n'
        'switchboard_circuit_state{provider="mockmail"} 0.0\n'
        "# TYPE switchboard_ready gauge\n"
        "switchboard_ready 1.0\n"
    )
    # When it is read / Then each provider's state is named
    assert snapshot.circuits_from_metrics(text) == [
        {"provider": "mockmail", "state": "closed", "since": None},
        {"provider": "mocksms", "state": "open", "since": None},
    ]
    # ... and a sender that has called no provider yet has none
    assert snapshot.circuits_from_metrics("switchboard_ready 1.0\n") == []


def test_failures_never_show_a_recipient_in_clear() -> None:
    at = datetime(2025, 1, 1, 12, tzinfo=UTC)
    rows = [
        {
            "id": 7,
            "channel": "sms",
            "recipient": "+14155550100",
            "status": "FAILED",
            "attempts": 5,
            "provider": "mocksms",
            "last_error_code": "TIMEOUT",
            "last_error": "x" * 500,
            "updated_at": at,
        }
    ]
    (row,) = snapshot.failures(rows)
    assert row["recipient"] == recipient_hash("+14155550100")
    assert "+1415" not in str(row)
    assert len(row["error"]) == 200 and row["at"] == at.isoformat() and row["log_id"] == 7
