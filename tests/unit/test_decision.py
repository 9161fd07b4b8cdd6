"""services/responder/decision.py: the responder's decision for one outcome, and the fallback chain."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.responder.decision import (
    Decision,
    Defer,
    GiveUp,
    Ignore,
    LogState,
    MarkSent,
    Rules,
    ScheduleRetry,
    decide_outcome,
    next_channel,
    next_provider,
)
from shared.core.models import DeadLetterReason, OutcomeClass, OutcomeMessage, Status
from shared.core.recipients import reachable_on
from shared.core.retry import RetryPolicy

POLICY = RetryPolicy.exponential(base_s=5, cap_s=300, jitter=0.2)
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


def decide(
    message: OutcomeMessage,
    log: LogState,
    policy: RetryPolicy,
    chain: list[str],
    rng: random.Random | None = None,
    tolerance_s: float = 30.0,
) -> Decision:
    return decide_outcome(message, log, Rules(policy, chain, retry_after_tolerance_s=tolerance_s), rng)


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


def test_transient_honours_retry_after_within_the_tolerance() -> None:
    decision = decide(
        outcome(OutcomeClass.TRANSIENT, retry_after_s=120), processing(), POLICY, CHAIN, tolerance_s=120
    )
    assert isinstance(decision, ScheduleRetry)
    assert (decision.delay_s, decision.provider) == (120, "alpha")


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
    if klass == OutcomeClass.SUCCESS and status == Status.PENDING:
        # a copy of this attempt failed (or was deferred) first; this one reached the provider
        assert decision == MarkSent("alpha")
    else:
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
        assert klass in (OutcomeClass.TRANSIENT, OutcomeClass.RECOVERABLE, OutcomeClass.UNKNOWN)
        # capped, except that a provider's Retry-After is honoured in full (RetryPolicy.retry_after_limit_s)
        assert 0 <= decision.delay_s <= max(POLICY.max_s, min(retry_after or 0, POLICY.retry_after_limit_s))
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
    late_success = klass == OutcomeClass.SUCCESS and status == Status.PENDING and log_attempts == attempt
    ignored = (attempt != log_attempts or status != Status.PROCESSING) and not late_success
    assert isinstance(decision, Ignore) == ignored


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
        tolerance_s=float("inf"),
    )
    assert isinstance(decision, ScheduleRetry)
    assert decision.delay_s >= min(retry_after, POLICY.max_s)


# ---- deferral, unknown outcomes, failover on health, channel fallback --------------------------------


def coded(
    klass: OutcomeClass, code: str, attempt: int = 1, provider: str | None = "alpha", **extra: object
) -> OutcomeMessage:
    return outcome(klass, attempt, provider).model_copy(update={"error_code": code, **extra})


def test_deferral_goes_back_at_the_expected_slot_without_an_attempt() -> None:
    deferred = coded(OutcomeClass.DEFERRED, "RATE_LIMITED_LOCALLY", retry_after_s=2.5)
    assert decide(deferred, processing(1, 1), POLICY, CHAIN) == Defer(2.5, "RATE_LIMITED_LOCALLY")


def test_deferral_past_the_limit_counts_as_a_failed_attempt() -> None:
    deferred = coded(OutcomeClass.DEFERRED, "ALL_PROVIDERS_UNAVAILABLE", retry_after_s=2.5)
    log = replace(processing(1, 1), deferrals=3)
    assert decide_outcome(deferred, log, Rules(POLICY, CHAIN, max_deferrals=3)) == GiveUp(
        Status.FAILED, DeadLetterReason.ATTEMPTS_EXHAUSTED
    )
    assert isinstance(decide_outcome(deferred, log, Rules(POLICY, CHAIN, max_deferrals=4)), Defer)


def test_unknown_outcome_retries_the_same_provider_under_the_same_key() -> None:
    first = decide(coded(OutcomeClass.UNKNOWN, "TIMEOUT"), processing(1), POLICY, CHAIN)
    assert isinstance(first, ScheduleRetry)
    assert (first.provider, first.switched_provider, first.key_attempt) == ("alpha", False, 1)
    # a second unknown outcome keeps the key of the first attempt, not its own
    again = decide(
        coded(OutcomeClass.UNKNOWN, "TIMEOUT", attempt=2),
        replace(processing(2), key_attempt=1, provider_failures=5),
        POLICY,
        CHAIN,
    )
    assert isinstance(again, ScheduleRetry)
    assert (again.provider, again.key_attempt) == ("alpha", 1)


def test_a_definitive_answer_after_an_unknown_one_gets_a_new_key() -> None:
    log = replace(processing(2), key_attempt=1)
    decision = decide(coded(OutcomeClass.TRANSIENT, "SERVER_ERROR", attempt=2), log, POLICY, CHAIN)
    assert isinstance(decision, ScheduleRetry)
    assert decision.key_attempt is None


def test_transient_failures_move_to_the_next_provider_after_failover_after_in_a_row() -> None:
    rules = Rules(POLICY, CHAIN, failover_after=2)
    first = decide_outcome(coded(OutcomeClass.TRANSIENT, "SERVER_ERROR"), processing(1), rules)
    assert isinstance(first, ScheduleRetry)
    assert (first.provider, first.provider_failures) == ("alpha", 1)
    log = replace(processing(2), provider_failures=first.provider_failures)
    second = decide_outcome(coded(OutcomeClass.TRANSIENT, "SERVER_ERROR", attempt=2), log, rules)
    assert isinstance(second, ScheduleRetry)
    assert (second.provider, second.switched_provider, second.provider_failures) == ("beta", True, 0)
    assert second.delay_s <= POLICY.initial_s


def test_rate_limits_within_the_tolerance_wait_on_the_same_provider_whatever_the_streak() -> None:
    limited = coded(OutcomeClass.TRANSIENT, "RATE_LIMITED", attempt=3, retry_after_s=2.0)
    decision = decide(limited, replace(processing(3), provider_failures=4), POLICY, CHAIN)
    assert isinstance(decision, ScheduleRetry)
    assert (decision.provider, decision.switched_provider) == ("alpha", False)
    assert decision.delay_s >= 2.0


def test_a_failure_on_another_provider_starts_a_new_streak() -> None:
    log = replace(processing(2), provider_failures=1)  # one failure on alpha so far
    decision = decide(coded(OutcomeClass.TRANSIENT, "SERVER_ERROR", 2, provider="beta"), log, POLICY, CHAIN)
    assert isinstance(decision, ScheduleRetry)
    assert (decision.provider, decision.provider_failures) == ("beta", 1)


def test_rate_limit_with_a_retry_after_beyond_the_tolerance_moves_on_at_once() -> None:
    limited = coded(OutcomeClass.TRANSIENT, "RATE_LIMITED", retry_after_s=600)
    decision = decide(limited, processing(1), POLICY, CHAIN, tolerance_s=30)
    assert isinstance(decision, ScheduleRetry)
    assert (decision.provider, decision.switched_provider) == ("beta", True)
    alone = decide(limited, processing(1), POLICY, ["alpha"], tolerance_s=30)
    assert isinstance(alone, ScheduleRetry)
    assert (alone.provider, alone.delay_s) == ("alpha", 600)  # nowhere else to go: wait as asked


def test_unreachable_on_the_channel_moves_to_the_fallback_channel() -> None:
    refused = coded(OutcomeClass.PERMANENT, "UNDELIVERABLE", bounced=True)
    log = replace(processing(1), channel="whatsapp")
    decision = decide_outcome(refused, log, Rules(POLICY, CHAIN, next_channel="sms"))
    assert isinstance(decision, ScheduleRetry)
    assert (decision.channel, decision.provider, decision.key_attempt) == ("sms", None, None)
    assert decide_outcome(refused, log, Rules(POLICY, CHAIN)) == GiveUp(
        Status.BOUNCED, DeadLetterReason.PERMANENT_ERROR
    )


def test_a_permanent_refusal_of_the_recipient_does_not_change_channel() -> None:
    invalid = coded(OutcomeClass.PERMANENT, "INVALID_NUMBER")
    decision = decide_outcome(invalid, processing(1), Rules(POLICY, CHAIN, next_channel="sms"))
    assert isinstance(decision, GiveUp)


def test_attempts_exhausted_on_a_channel_move_to_the_next_with_a_fresh_budget() -> None:
    rules = Rules(POLICY, CHAIN, next_channel="sms")
    failed = coded(OutcomeClass.TRANSIENT, "SERVER_ERROR", attempt=3)
    moved = decide_outcome(failed, processing(3, 3), rules)
    assert isinstance(moved, ScheduleRetry) and moved.channel == "sms"
    # on the new channel, attempts count from where it started
    on_sms = replace(processing(4, 3), channel="sms", channel_attempts_from=3)
    again = decide_outcome(
        coded(OutcomeClass.TRANSIENT, "SERVER_ERROR", attempt=4), on_sms, Rules(POLICY, CHAIN)
    )
    assert isinstance(again, ScheduleRetry) and again.channel is None


def test_an_unknown_outcome_never_moves_the_log_to_another_channel() -> None:
    unknown = coded(OutcomeClass.UNKNOWN, "TIMEOUT", attempt=3)
    decision = decide_outcome(unknown, processing(3, 3), Rules(POLICY, CHAIN, next_channel="sms"))
    assert decision == GiveUp(Status.FAILED, DeadLetterReason.ATTEMPTS_EXHAUSTED)


@pytest.mark.parametrize(
    ("requested", "current", "fallbacks", "routed", "expected"),
    [
        ("whatsapp", "whatsapp", ["sms"], {"sms"}, "sms"),
        ("whatsapp", "sms", ["sms"], {"sms"}, None),
        ("whatsapp", "whatsapp", ["email", "sms"], {"email", "sms"}, "sms"),  # a number is no address
        ("whatsapp", "whatsapp", ["mms", "sms"], {"sms"}, "sms"),  # mms has no provider
        ("email", "email", ["sms"], {"sms"}, None),
        ("whatsapp", "mms", ["mms", "sms"], {"mms", "sms"}, "sms"),
    ],
)
def test_next_channel(
    requested: str, current: str, fallbacks: list[str], routed: set[str], expected: str | None
) -> None:
    assert next_channel(requested, current, fallbacks, routed) == expected


channels = st.sampled_from(["sms", "mms", "whatsapp", "email", "webhook"])


@given(requested=channels, fallbacks=st.lists(channels, max_size=6), routed=st.sets(channels))
def test_channel_fallback_visits_each_channel_at_most_once_and_ends(
    requested: str, fallbacks: list[str], routed: set[str]
) -> None:
    visited = [requested]
    while (following := next_channel(requested, visited[-1], fallbacks, routed)) is not None:
        assert following not in visited
        assert following in routed and reachable_on(requested, following)
        visited.append(following)
    assert len(visited) <= 5


log_states = st.builds(
    LogState,
    status=st.just(Status.PROCESSING),
    attempts=st.integers(1, 12),
    max_attempts=st.integers(1, 12),
    provider=providers,
    channel=st.just("sms"),
    provider_failures=st.integers(0, 5),
    channel_attempts_from=st.integers(0, 3),
    key_attempt=st.none() | st.integers(1, 3),
    deferrals=st.integers(0, 5),
)


@given(
    log=log_states,
    klass=classes,
    provider=providers,
    retry_after=st.none() | st.floats(0, 1_000),
    failover_after=st.integers(1, 4),
    max_deferrals=st.integers(1, 6),
    next_ch=st.none() | st.just("whatsapp"),
    seed=st.integers(0, 1000),
)
def test_decision_invariants(
    log: LogState,
    klass: OutcomeClass,
    provider: str | None,
    retry_after: float | None,
    failover_after: int,
    max_deferrals: int,
    next_ch: str | None,
    seed: int,
) -> None:
    message = coded(klass, "UNDELIVERABLE", log.attempts, provider, retry_after_s=retry_after)
    rules = Rules(POLICY, CHAIN, next_ch, failover_after, 30.0, max_deferrals)
    decision = decide_outcome(message, log, rules, random.Random(seed))
    if isinstance(decision, Defer):  # only a local refusal, and only below the limit
        assert klass == OutcomeClass.DEFERRED and log.deferrals < max_deferrals
        assert 0 < decision.delay_s <= 3600
    if isinstance(decision, ScheduleRetry):
        # an unknown outcome stays where it was sent, under the key of the first unknown attempt
        if klass == OutcomeClass.UNKNOWN:
            assert (decision.provider, decision.key_attempt) == (provider, log.key_attempt or log.attempts)
            assert decision.channel is None
        else:
            assert decision.key_attempt is None
        if decision.channel is None:
            assert log.attempts - log.channel_attempts_from < log.max_attempts
        # the same provider again only below the streak limit, unless there is nowhere else to go
        if not decision.switched_provider and klass == OutcomeClass.TRANSIENT and retry_after is None:
            assert decision.provider_failures < failover_after or next_provider(CHAIN, provider) == provider
    if klass == OutcomeClass.SUCCESS:
        assert decision == MarkSent(provider)
