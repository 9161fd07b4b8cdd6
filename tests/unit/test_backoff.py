"""shared/core/backoff.py via RetryPolicy.exponential: exponential ceiling, jitter band, Retry-After."""

from __future__ import annotations

import random

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.core.retry import RetryPolicy

policies = st.builds(
    RetryPolicy.exponential,
    base_s=st.floats(0.001, 1_000),
    cap_s=st.floats(0.001, 10_000),
    jitter=st.floats(0, 1),
)
attempts = st.integers(1, 500)
seeds = st.integers(0, 2**32)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0), (6, 160.0), (7, 300.0), (10_000, 300.0)],
)
def test_ceiling_doubles_from_base_until_the_cap(attempt: int, expected: float) -> None:
    assert RetryPolicy.exponential(base_s=5, cap_s=300).ceiling(attempt) == expected


@given(policy=policies, attempt=st.integers(1, 60))
def test_ceiling_is_min_of_exponential_and_cap(policy: RetryPolicy, attempt: int) -> None:
    assert policy.ceiling(attempt) == min(policy.initial_s * 2 ** (attempt - 1), policy.max_s)


@given(policy=policies, attempt=attempts)
def test_ceiling_never_decreases_and_never_exceeds_cap(policy: RetryPolicy, attempt: int) -> None:
    assert policy.ceiling(attempt) <= policy.ceiling(attempt + 1) <= policy.max_s


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_attempt_below_one_is_rejected(attempt: int) -> None:
    policy = RetryPolicy.exponential()
    with pytest.raises(ValueError, match="start at 1"):
        policy.ceiling(attempt)
    with pytest.raises(ValueError, match="start at 1"):
        policy.delay(attempt)


@given(policy=policies, attempt=attempts, seed=seeds)
def test_delay_lies_in_the_jitter_band_below_the_ceiling(
    policy: RetryPolicy, attempt: int, seed: int
) -> None:
    top = policy.ceiling(attempt)
    delay = policy.delay(attempt, rng=random.Random(seed))
    assert (1 - policy.jitter) * top <= delay <= top


def test_zero_jitter_gives_exactly_the_ceiling() -> None:
    policy = RetryPolicy.exponential(base_s=2, cap_s=100, jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3, 8)] == [2.0, 4.0, 8.0, 100.0]


def test_jitter_spreads_delays_over_the_band() -> None:
    policy = RetryPolicy.exponential(base_s=10, cap_s=100, jitter=0.5)
    rng = random.Random(7)
    delays = [policy.delay(1, rng=rng) for _ in range(2_000)]
    assert min(delays) < 5.5
    assert max(delays) > 9.5
    assert len(set(delays)) > 1_900


@given(policy=policies, attempt=attempts, seed=seeds)
def test_same_seed_gives_same_delay(policy: RetryPolicy, attempt: int, seed: int) -> None:
    assert policy.delay(attempt, rng=random.Random(seed)) == policy.delay(attempt, rng=random.Random(seed))


@given(policy=policies, attempt=attempts, seed=seeds, retry_after=st.floats(0, 1e7))
def test_retry_after_is_honoured_up_to_its_limit(
    policy: RetryPolicy, attempt: int, seed: int, retry_after: float
) -> None:
    assume(policy.max_s <= policy.retry_after_limit_s)  # the other case: see the xfail below
    delay = policy.delay(attempt, retry_after, rng=random.Random(seed))
    assert delay >= min(retry_after, policy.retry_after_limit_s)
    assert delay <= max(policy.max_s, policy.retry_after_limit_s)
    assert delay >= policy.delay(attempt, rng=random.Random(seed))


@given(policy=policies, attempt=attempts, seed=seeds)
def test_short_retry_after_does_not_change_the_delay(policy: RetryPolicy, attempt: int, seed: int) -> None:
    plain = policy.delay(attempt, rng=random.Random(seed))
    assert policy.delay(attempt, plain / 2, rng=random.Random(seed)) == plain
    assert policy.delay(attempt, 0.0, rng=random.Random(seed)) == plain


def test_retry_after_longer_than_backoff_is_used_exactly() -> None:
    assert RetryPolicy.exponential(base_s=5, cap_s=300, jitter=0.2).delay(1, 60.0) == 60.0


def test_retry_after_beyond_the_cap_is_honoured_up_to_the_limit() -> None:
    policy = RetryPolicy.exponential(base_s=5, cap_s=300, retry_after_limit_s=3600)
    assert policy.delay(1, 900.0) == 900.0
    assert policy.delay(1, 10_000.0) == 3600.0


@given(policy=policies, attempt=attempts, seed=seeds)
def test_without_retry_after_the_delay_never_exceeds_the_cap(
    policy: RetryPolicy, attempt: int, seed: int
) -> None:
    assert policy.delay(attempt, None, rng=random.Random(seed)) <= policy.max_s


def test_retry_after_never_shortens_the_delay_when_cap_exceeds_the_limit() -> None:
    policy = RetryPolicy.exponential(base_s=1000, cap_s=7200, jitter=0, retry_after_limit_s=3600)
    assert policy.delay(4) == 7200
    assert policy.delay(4, 8000.0) >= 7200
