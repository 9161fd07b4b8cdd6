"""services/api/ratelimit.py: token buckets, Retry-After, the high-priority reserve."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.ratelimit import KeyLimit, RateLimiter, TokenBucket


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    # Given a bucket of 10 tokens refilling at 5 per second
    bucket = TokenBucket.full(rate=5, capacity=10, now=0.0)
    # When 10 requests come at once, then an 11th
    assert all(bucket.take(0.0) for _ in range(10))
    assert not bucket.take(0.0)
    # Then the wait is 1/5 s, and after it one more request passes
    assert bucket.wait_s() == pytest.approx(0.2)
    assert bucket.take(0.2)
    assert not bucket.take(0.2)


def test_refused_requests_learn_how_long_to_wait() -> None:
    limiter = RateLimiter(rate=2, burst=2, share=0.0)
    assert limiter.check("k", 0.0).allowed
    assert limiter.check("k", 0.0).allowed
    refused = limiter.check("k", 0.0)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(0.5)


def test_high_priority_sends_may_exceed_the_limit_by_the_reserved_share() -> None:
    # Given a key limited to a burst of 10 with a 20 % reserve for high priority
    limit = KeyLimit.create(rate=10, burst=10, share=0.2, now=0.0)
    for _ in range(10):
        assert limit.check(0.0, high_priority=False).allowed
    # When the main budget is spent
    # Then normal sends are refused but high-priority ones pass, up to the reserve (2)
    assert not limit.check(0.0, high_priority=False).allowed
    bypass = [limit.check(0.0, high_priority=True) for _ in range(3)]
    assert [d.allowed for d in bypass] == [True, True, False]
    assert bypass[0].reserve


def test_keys_have_separate_budgets_and_a_per_key_rate_overrides_the_default() -> None:
    limiter = RateLimiter(rate=1, burst=1, share=0.0)
    assert limiter.check("a", 0.0).allowed
    assert not limiter.check("a", 0.0).allowed
    assert limiter.check("b", 0.0).allowed
    # ... and a key with its own rate gets a burst scaled to it (here 3/1 of the default burst of 10)
    fast = RateLimiter(rate=1, burst=10, share=0.0)
    allowed = sum(fast.check("d", 0.0, rate=3).allowed for _ in range(100))
    assert allowed == 30


def test_the_limiter_forgets_the_least_recently_used_keys() -> None:
    limiter = RateLimiter(rate=1, burst=1, share=0.0, max_keys=2)
    for key in ("a", "b", "c"):
        limiter.check(key, 0.0)
    assert limiter.check("a", 0.0).allowed  # "a" was forgotten: a full bucket again


@given(
    rate=st.floats(0.5, 100),
    burst=st.integers(1, 50),
    times=st.lists(st.floats(0, 10), min_size=1, max_size=200).map(sorted),
)
def test_never_more_than_burst_plus_rate_times_elapsed(rate: float, burst: int, times: list[float]) -> None:
    limiter = RateLimiter(rate=rate, burst=burst, share=0.0)
    allowed = sum(limiter.check("k", t).allowed for t in times)
    assert allowed <= burst + rate * (times[-1] - times[0]) + 1e-6
