"""services/sender/bucket.py and ratelimit.py: the shared token bucket's arithmetic and its local use."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sender.bucket import FETCH_INTERVAL_S, Grant, Limit, take, wait_s
from services.sender.ratelimit import RateLimiter, SharedBucket

LEASE = 0.02


def test_a_full_bucket_grants_up_to_its_burst() -> None:
    limit = Limit(rate=100, burst=20)
    grant = take(20, 0, limit, want_high=0, want_other=50)
    assert (grant.high, grant.other, grant.tokens_left) == (0, 20, 0)


def test_refill_is_rate_times_elapsed_capped_at_the_burst() -> None:
    limit = Limit(rate=100, burst=20)
    assert take(0, 0.05, limit, 0, 50).other == 5
    assert take(0, 10, limit, 0, 50).other == 20


def test_high_priority_may_use_the_reserve_the_others_may_not() -> None:
    limit = Limit(rate=10, burst=10, reserved_share=0.5)
    others = take(10, 0, limit, 0, 100)
    assert (others.other, others.tokens_left) == (5, 5)
    high = take(others.tokens_left, 0, limit, 100, 100)
    assert (high.high, high.other) == (5, 0)


def test_a_dry_bucket_is_asked_again_once_a_batch_has_refilled() -> None:
    limit = Limit(rate=1000, burst=100, reserved_share=0.1)
    dry = Grant(0, 0, 0.0)
    assert wait_s(dry, limit, high=True, wanted=1) == pytest.approx(0.001)
    assert wait_s(dry, limit, high=True, wanted=500) == pytest.approx(FETCH_INTERVAL_S)
    assert wait_s(dry, limit, high=False, wanted=1) == pytest.approx((1 + 10) / 1000)


def test_capacity_is_at_least_one_token() -> None:
    assert Limit(rate=1000, burst=0).capacity == 1


calls = st.lists(st.tuples(st.floats(0, 0.3), st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=60)


@given(rate=st.floats(1, 500), burst=st.integers(1, 100), share=st.floats(0, 0.9), calls=calls)
def test_grants_never_exceed_burst_plus_rate_times_time(
    rate: float, burst: int, share: float, calls: list[tuple[float, int, int]]
) -> None:
    # Any sequence of takes: over every span of them, what was granted is at most what the bucket
    # held at the start plus what it refilled since (the bound the ledger test checks end to end).
    limit = Limit(rate, burst, share)
    tokens, clock, history = limit.capacity, 0.0, []
    for elapsed, high, other in calls:
        grant = take(tokens, elapsed, limit, high, other)
        clock += elapsed
        tokens = grant.tokens_left
        assert grant.high >= 0 and grant.other >= 0 and tokens >= -1e-9
        history.append((clock, grant.total))
    for i, (start, _) in enumerate(history):
        for end, _ in history[i:]:
            granted = sum(n for t, n in history if start <= t <= end)
            assert granted <= limit.capacity + rate * (end - start) + 1e-6


class MemoryStore:
    """The bucket row of provider_buckets, in memory (what TAKE_SQL does, with the pure arithmetic)."""

    def __init__(self) -> None:
        self.tokens: float | None = None
        self.at = time.monotonic()
        self.calls = 0

    async def take(self, provider: str, limit: Limit, want_high: int, want_other: int) -> Grant:
        self.calls += 1
        now = time.monotonic()
        if self.tokens is None:
            self.tokens = limit.capacity
        grant = take(self.tokens, now - self.at, limit, want_high, want_other)
        self.tokens, self.at = grant.tokens_left, now
        await asyncio.sleep(0.001)  # a round trip
        return grant


async def test_two_replicas_sharing_one_bucket_stay_within_the_limit() -> None:
    # Given two replicas' buckets drawing on one store at 400 tokens/s, burst 20
    store = MemoryStore()
    limit = Limit(rate=400, burst=20)
    replicas = [SharedBucket("p", store, LEASE), SharedBucket("p", store, LEASE)]
    for bucket in replicas:
        bucket.limit = limit
    sent: list[float] = []

    async def send(bucket: SharedBucket) -> None:
        assert await bucket.acquire(high=False, max_wait_s=10)
        sent.append(time.monotonic())

    # When 400 messages want to go at once, 200 through each replica
    started = time.monotonic()
    await asyncio.gather(*(send(replicas[i % 2]) for i in range(400)))
    elapsed = time.monotonic() - started
    # Then they took about a second, and no window held more than burst + rate * its length
    assert 0.8 <= elapsed <= 2.0
    sent.sort()
    for window in (0.05, 0.25, 0.5):
        busiest = max(sum(1 for t in sent[i:] if t < start + window) for i, start in enumerate(sent))
        assert busiest <= limit.burst + limit.rate * (window + LEASE), (window, busiest)
    # ... fetching tokens in batches, not one round trip per message
    assert store.calls < 200


async def test_acquire_gives_up_after_max_wait_and_a_zero_wait_only_tries_once() -> None:
    store = MemoryStore()
    bucket = SharedBucket("p", store, LEASE)
    bucket.limit = Limit(rate=2, burst=1)
    assert await bucket.acquire(False, 0) is True
    calls = store.calls
    started = time.monotonic()
    assert await bucket.acquire(False, 0.1) is False
    assert time.monotonic() - started < 0.2
    assert await bucket.acquire(False, 0) is False
    assert store.calls <= calls + 1  # dry until it can have refilled: not asked again meanwhile
    await asyncio.sleep(0.5)
    assert await bucket.acquire(False, 0) is True


async def test_no_limit_means_no_waiting_and_no_store() -> None:
    store = MemoryStore()
    limiter = RateLimiter(store, LEASE)
    assert all([await limiter.acquire("p", None, False, 0) for _ in range(100)])
    assert store.calls == 0


async def test_high_priority_gets_the_reserve_when_the_others_are_starved() -> None:
    store = MemoryStore()
    bucket = SharedBucket("p", store, LEASE)
    bucket.limit = Limit(rate=0.1, burst=10, reserved_share=0.5)
    normal = [await bucket.acquire(False, 0) for _ in range(10)]
    high = [await bucket.acquire(True, 0) for _ in range(10)]
    assert sum(normal) == 5  # the last 5 tokens are kept for high priority
    assert sum(high) == 5


class BrokenStore:
    async def take(self, *_: object) -> Grant:  # same signature as BucketStore.take
        raise OSError("database unreachable")


async def test_an_unreachable_store_means_no_tokens_not_an_error() -> None:
    bucket = SharedBucket("p", BrokenStore(), LEASE)
    bucket.limit = Limit(rate=10, burst=10)
    assert await bucket.acquire(False, 0.05) is False
