"""Per-provider rate limits across sender replicas: the PostgreSQL bucket under concurrent replicas, and
the mock provider's ledger showing no window above the configured rate with two real senders."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime

import pytest

from services.sender.bucket import Limit
from services.sender.ratelimit import PostgresBucketStore, SharedBucket
from tests.helpers import all_terminal, insert_logs, ledger, wait_until
from tests.integration.test_providers import QUIET, configure, route, sms, start_stack
from tools.stack import Stack

LEASE_S = 0.05  # Settings.rate_limit_lease_s
JITTER_S = 0.01  # between a sender taking a token and its request reaching the provider


def busiest(times: list[float], window: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


def allowed(limit: Limit, window: float) -> float:
    """The configured limit over a window (the bucket's burst plus its rate over the window), with
    the transport's jitter between taking a token and reaching the provider."""
    return limit.burst + limit.rate * (window + JITTER_S)


async def test_three_replicas_drawing_on_the_postgres_bucket_stay_within_the_limit(pool) -> None:
    # Given three replicas' buckets for one provider, each with its own store connection
    limit = Limit(rate=150, burst=10, hold_s=LEASE_S)
    replicas = [SharedBucket("p1", PostgresBucketStore(pool), LEASE_S) for _ in range(3)]
    for bucket in replicas:
        bucket.limit = limit
    granted: list[float] = []

    async def send(bucket: SharedBucket) -> None:
        assert await bucket.acquire(high=False, max_wait_s=30)
        granted.append(time.monotonic())

    # When 300 messages want to go at once, spread over the three
    started = time.monotonic()
    await asyncio.gather(*(send(replicas[n % 3]) for n in range(300)))
    elapsed = time.monotonic() - started
    # Then it took about 300 / 150 s, and no window held more than burst + rate * its length
    assert 1.6 <= elapsed <= 4.0
    print(
        f"bucket: 300 tokens in {elapsed:.2f} s; busiest 0.1/0.5/1 s windows:",
        [busiest(granted, w) for w in (0.1, 0.5, 1.0)],
    )
    for window in (0.1, 0.5, 1.0):
        assert busiest(granted, window) <= limit.burst + limit.rate * window, window


async def test_high_priority_keeps_its_reserved_share_under_load(pool) -> None:
    limit = Limit(rate=0.1, burst=20, reserved_share=0.5)
    normal, high = (
        SharedBucket("p2", PostgresBucketStore(pool), LEASE_S),
        SharedBucket("p2", PostgresBucketStore(pool), LEASE_S),
    )
    normal.limit = high.limit = limit
    # Given the normal traffic has drained everything it may
    assert sum([await normal.acquire(False, 0) for _ in range(30)]) == 10
    # Then high priority still finds the reserve at once
    assert sum([await high.acquire(True, 0) for _ in range(10)]) == 10


def arrivals(rows: list[dict], provider: str) -> list[float]:
    return [
        datetime.fromisoformat(r["arrived_at"]).timestamp()
        for r in rows
        if r["provider"] == provider and not r["replay"]
    ]


@pytest.mark.e2e
async def test_two_senders_never_exceed_a_providers_rate_and_spill_over_says_why(stack: Stack, pool) -> None:
    # Given sms only through smsL at 40/s (burst 8), and mms through mmsL at 20/s (burst 4) falling
    # back to an unlimited mmsX; two senders, each active on its own shards
    sms_limit, mms_limit = Limit(40, 8), Limit(20, 4)
    await configure(
        pool,
        {
            "providers": [
                sms("smsL", rate_per_s=40, burst=8),
                sms("mmsL", rate_per_s=20, burst=4),
                sms("mmsX"),
            ],
            "routes": [route("sms", "smsL"), route("mms", "mmsL", 0), route("mms", "mmsX", 1)],
            "policies": [
                {"channel": "sms", "strategy": "primary"},
                {"channel": "mms", "strategy": "fallback"},
            ],
        },
    )
    start_stack(stack, senders=2, **QUIET, mock_latency_ms="5")
    await stack.start()
    # When 240 sms and 120 mms for distinct recipients are due at once
    await insert_logs(
        pool,
        [{"channel": "sms", "recipient": f"+1415555{n:04d}"} for n in range(240)]
        + [{"channel": "mms", "recipient": f"+1415666{n:04d}", "payload": {"body": "p"}} for n in range(120)],
    )
    await wait_until(lambda: all_terminal(pool), timeout=60, what="every log terminal")
    rows = await ledger(stack.url("mock_provider"))
    # Then both senders did send sms, the sms took about 240 / 40 s, and no window of the ledger holds
    # more than the provider's burst plus its rate over the window
    senders = Counter(
        r["provider"]
        for r in await pool.fetch(
            "SELECT provider FROM communication_logs WHERE channel = 'sms' AND status = 'SENT'"
        )
    )
    assert senders == {"smsL": 240}
    sms_times = arrivals(rows, "smsL")
    assert len(sms_times) == 240
    assert 5.0 <= max(sms_times) - min(sms_times) <= 9.0
    print(
        f"smsL: 240 in {max(sms_times) - min(sms_times):.2f} s; busiest vs allowed:",
        {w: (busiest(sms_times, w), round(allowed(sms_limit, w), 1)) for w in (0.25, 0.5, 1.0, 2.0)},
    )
    for window in (0.25, 0.5, 1.0, 2.0):
        assert busiest(sms_times, window) <= allowed(sms_limit, window), (window, busiest(sms_times, window))
        assert busiest(arrivals(rows, "mmsL"), window) <= allowed(mms_limit, window), window
    # ... and what mmsL had no room for went to mmsX, each saying so
    mms = Counter(
        (r["provider"], r["fallback_reason"])
        for r in await pool.fetch(
            "SELECT a.provider, a.fallback_reason FROM delivery_attempts a"
            " JOIN communication_logs l ON l.id = a.log_id WHERE l.channel = 'mms'"
        )
    )
    print("mms by (provider, fallback reason):", dict(mms))
    assert mms[("mmsX", "rate_limit_exceeded")] > 0
    assert mms[("mmsL", None)] > 0
    assert sum(mms.values()) == 120
    by_sender = [
        stack.processes[f"sender-{n}"].log_path.read_text().count('"provider":"smsL"') for n in (0, 1)
    ]
    assert all(count > 0 for count in by_sender), by_sender
