"""shared/retry.py: the responder's decision for one outcome, and the fallback chain."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.backoff import BackoffPolicy
from shared.models import DeadLetterReason, OutcomeClass, OutcomeMessage, Status
from shared.retry import GiveUp, Ignore, LogState, MarkSent, ScheduleRetry, decide, next_provider

POLICY = BackoffPolicy(base_s=5, cap_s=300, jitter=0.2)
CHAIN = ["alpha", "beta", "gamma"]


def outcome(
    klass: OutcomeClass,
    attempt: int = 1,
    provider: str | None = "alpha",
    retry_after_s: float | None = None,
    bounced: bool = False,
) -> OutcomeMessage:
    return OutcomeMessage(
        log_id=1,
        attempt=attempt,
        recipient="+447911123456",
        channel="sms",
        provider=provider,
        outcome=klass,
        error_code=None if klass == OutcomeClass.SUCCESS else "X",
        retry_after_s=retry_after_s,
        bounced=bounced,
    )


def processing(attempts: int = 1, max_attempts: int = 5) -> LogState:
    return LogState(Status.PROCESSING, attempts, max_attempts, "alpha")


def test_success_marks_sent_with_the_provider_that_sent() -> None:
    assert decide(outcome(OutcomeClass.SUCCESS, provider="beta"), processing(), POLICY, CHAIN) == MarkSent(
        "beta"
    )


def test_success_on_last_attempt_still_marks_sent() -> None:
    decision = decide(outcome(OutcomeClass.SUCCESS, attempt=5), processing(5, 5), POLICY, CHAIN)
    assert decision == MarkSent("alpha")


def test_permanent_gives_up_as_failed() -> None:
    decision = decide(outcome(OutcomeClass.PERMANENT), processing(), POLICY, CHAIN)
    assert decision == GiveUp(Status.FAILED, DeadLetterReason.PERMANENT_ERROR)


def test_permanent_bounce_gives_up_as_bounced() -> None:
    decision = decide(outcome(OutcomeClass.PERMANENT, bounced=True), processing(), POLICY, CHAIN)
    assert decision == GiveUp(Status.BOUNCED, DeadLetterReason.PERMANENT_ERROR)


@pytest.mark.parametrize("klass", [OutcomeClass.TRANSIENT, OutcomeClass.RECOVERABLE])
def test_retryable_error_on_last_attempt_is_exhausted(klass: OutcomeClass) -> None:
    decision = decide(outcome(klass, attempt=3), processing(3, 3), POLICY, CHAIN)
    assert decision == GiveUp(Status.FAILED, DeadLetterReason.ATTEMPTS_EXHAUSTED)


def test_recoverable_moves_to_next_provider_of_the_chain_soon() -> None:
    decision = decide(outcome(OutcomeClass.RECOVERABLE, provider="alpha"), processing(), POLICY, CHAIN)
    assert isinstance(decision, ScheduleRetry)
    assert decision.provider == "beta"
    assert decision.switched_provider is True
    assert 0 <= decision.delay_s <= 0.2 * POLICY.ceiling(1)


def test_recoverable_on_last_provider_wraps_round_to_the_first() -> None:
    decision = decide(outcome(OutcomeClass.RECOVERABLE, provider="gamma"), processing(), POLICY, CHAIN)
    assert isinstance(decision, ScheduleRetry)
    assert (decision.provider, decision.switched_provider) == ("alpha", True)


def test_recoverable_with_single_provider_stays_and_backs_off() -> None:
    decision = decide(outcome(OutcomeClass.RECOVERABLE, attempt=3), processing(3), POLICY, ["alpha"])
    assert isinstance(decision, ScheduleRetry)
    assert (decision.provider, decision.switched_provider) == ("alpha", False)
    assert 0.8 * POLICY.ceiling(3) <= decision.delay_s <= POLICY.ceiling(3)


def test_recoverable_without_provider_starts_the_chain() -> None:
    decision = decide(outcome(OutcomeClass.RECOVERABLE, provider=None), processing(), POLICY, CHAIN)
    assert isinstance(decision, ScheduleRetry)
    assert (decision.provider, decision.switched_provider) == ("alpha", True)


def test_transient_retries_same_provider_with_backoff() -> None:
    decision = decide(
        outcome(OutcomeClass.TRANSIENT, attempt=2, provider="beta"), processing(2), POLICY, CHAIN
    )
    assert isinstance(decision, ScheduleRetry)
    assert (decision.provider, decision.switched_provider) == ("beta", False)
    assert 0.8 * POLICY.ceiling(2) <= decision.delay_s <= POLICY.ceiling(2)


def test_transient_honours_retry_after() -> None:
    decision = decide(outcome(OutcomeClass.TRANSIENT, retry_after_s=120), processing(), POLICY, CHAIN)
    assert isinstance(decision, ScheduleRetry)
    assert decision.delay_s == 120


@pytest.mark.parametrize("klass", list(OutcomeClass))
@pytest.mark.parametrize("log_attempts", [1, 3])
def test_stale_attempt_is_ignored(klass: OutcomeClass, log_attempts: int) -> None:
    decision = decide(outcome(klass, attempt=2), processing(log_attempts), POLICY, CHAIN)
    assert isinstance(decision, Ignore)
    assert "attempt 2" in decision.why


@pytest.mark.parametrize("status", [s for s in Status if s != Status.PROCESSING])
@pytest.mark.parametrize("klass", list(OutcomeClass))
def test_log_not_processing_is_ignored(status: Status, klass: OutcomeClass) -> None:
    decision = decide(outcome(klass), LogState(status, 1, 5, "alpha"), POLICY, CHAIN)
    assert isinstance(decision, Ignore)
    assert status in decision.why


@pytest.mark.parametrize(
    ("chain", "current", "expected"),
    [
        (["a", "b", "c"], "a", "b"),
        (["a", "b", "c"], "b", "c"),
        (["a", "b", "c"], "c", "a"),
        (["a", "b"], "zzz", "a"),
        (["a", "b"], None, "a"),
        (["a"], "a", "a"),
        ([], "a", "a"),
        ([], None, None),
    ],
)
def test_next_provider(chain: list[str], current: str | None, expected: str | None) -> None:
    assert next_provider(chain, current) == expected


@given(chain=st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=6, unique=True))
def test_next_provider_cycles_through_the_whole_chain(chain: list[str]) -> None:
    seen: list[str | None] = []
    current: str | None = chain[0]
    for _ in chain:
        seen.append(current)
        current = next_provider(chain, current)
    assert current == chain[0]
    assert sorted(p for p in seen if p is not None) == sorted(chain)


classes = st.sampled_from(list(OutcomeClass))
providers = st.sampled_from([None, "alpha", "beta", "gamma", "other"])


@given(
    klass=classes,
    attempt=st.integers(1, 12),
    max_attempts=st.integers(1, 12),
    provider=providers,
    retry_after=st.none() | st.floats(0, 1_000),
    bounced=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_never_retries_past_max_attempts(
    klass: OutcomeClass,
    attempt: int,
    max_attempts: int,
    provider: str | None,
    retry_after: float | None,
    bounced: bool,
    seed: int,
) -> None:
    message = outcome(klass, attempt, provider, retry_after, bounced)
    decision = decide(message, processing(attempt, max_attempts), POLICY, CHAIN, random.Random(seed))
    if isinstance(decision, ScheduleRetry):
        assert attempt < max_attempts
        assert klass in (OutcomeClass.TRANSIENT, OutcomeClass.RECOVERABLE)
        # capped, except that a provider's Retry-After is honoured in full (BackoffPolicy.retry_after_limit_s)
        assert 0 <= decision.delay_s <= max(POLICY.cap_s, min(retry_after or 0, POLICY.retry_after_limit_s))
    else:
        assert not isinstance(decision, Ignore)


@given(
    klass=classes,
    attempt=st.integers(1, 12),
    log_attempts=st.integers(0, 12),
    status=st.sampled_from(list(Status)),
    provider=providers,
)
def test_ignored_whenever_attempt_differs_or_not_processing(
    klass: OutcomeClass, attempt: int, log_attempts: int, status: Status, provider: str | None
) -> None:
    decision = decide(
        outcome(klass, attempt, provider), LogState(status, log_attempts, 5, None), POLICY, CHAIN
    )
    assert isinstance(decision, Ignore) == (attempt != log_attempts or status != Status.PROCESSING)


@given(attempt=st.integers(1, 9), retry_after=st.floats(0, 10_000), seed=st.integers(0, 1000))
def test_transient_delay_is_never_shorter_than_retry_after_up_to_cap(
    attempt: int, retry_after: float, seed: int
) -> None:
    decision = decide(
        outcome(OutcomeClass.TRANSIENT, attempt, retry_after_s=retry_after),
        processing(attempt, 10),
        POLICY,
        CHAIN,
        random.Random(seed),
    )
    assert isinstance(decision, ScheduleRetry)
    assert decision.delay_s >= min(retry_after, POLICY.cap_s)
