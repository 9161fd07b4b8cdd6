"""services/responder/plan.py: a batch of outcomes turned into the writes of one transaction."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.responder.plan import Defaults, LogRow, WritePlan, plan_writes, unique_outcomes
from shared.core.models import DeadLetterReason, FallbackReason, OutcomeClass, OutcomeMessage, Status
from shared.core.retry import RetryPolicy

POLICY = Defaults(RetryPolicy.exponential(base_s=5, cap_s=300, jitter=0.2))
CHAINS = {"sms": ["alpha", "beta"]}
CREATED = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def row(
    log_id: int = 1,
    status: Status = Status.PROCESSING,
    attempts: int = 1,
    max_attempts: int = 3,
    campaign_id: int | None = 77,
) -> LogRow:
    return LogRow(
        log_id, status, attempts, max_attempts, "alpha", "acme", campaign_id, "sms", "+447911123456", CREATED
    )


def outcome(
    klass: OutcomeClass,
    log_id: int = 1,
    attempt: int = 1,
    provider: str | None = "alpha",
    bounced: bool = False,
    retry_after_s: float | None = None,
) -> OutcomeMessage:
    failed = klass != OutcomeClass.SUCCESS
    return OutcomeMessage(
        log_id=log_id,
        attempt=attempt,
        recipient="+447911123456",
        channel="sms",
        provider=provider,
        outcome=klass,
        error_code="E" if failed else None,
        error_message="went wrong" if failed else None,
        vendor_ref=None if failed else "ref-1",
        bounced=bounced,
        retry_after_s=retry_after_s,
        finished_at=CREATED + timedelta(seconds=3),
    )


def plan(outcomes: list[OutcomeMessage], *rows: LogRow) -> WritePlan:
    return plan_writes(outcomes, {r.id: r for r in rows}, POLICY, CHAINS, random.Random(0))


def test_success_writes_sent_attempt_receipt_counter_and_latency() -> None:
    ok = outcome(OutcomeClass.SUCCESS)
    p = plan([ok], row())
    assert [(u.log_id, u.status, u.provider, u.vendor_ref, u.error_code) for u in p.updates] == [
        (1, Status.SENT, "alpha", "ref-1", None)
    ]
    assert [(a.outcome, a.fallback_reason) for a in p.attempts] == [(ok, None)]
    assert p.receipts == [ok]
    assert p.campaign_deltas == {77: [1, 0, 0, 0]}
    assert p.send_latencies == [("sms", 3.0)]
    assert (p.dead_letters, p.ignored, p.retries) == ([], [], [])
    # sent_at is when the provider accepted it (stamped by the sender), not when the responder applies it
    assert [(u.sent, u.accepted_at) for u in p.updates] == [(True, ok.finished_at)]


def test_transient_goes_back_to_pending_with_backoff() -> None:
    failure = outcome(OutcomeClass.TRANSIENT, retry_after_s=30)
    p = plan([failure], row())
    (update,) = p.updates
    assert (update.status, update.provider, update.error_code, update.error_message) == (
        Status.PENDING,
        "alpha",
        "E",
        "went wrong",
    )
    assert update.delay_s == 30
    assert [(a.outcome, a.fallback_reason) for a in p.attempts] == [(failure, None)]
    assert len(p.retries) == 1
    assert p.campaign_deltas == {77: [0, 0, 0, 1]}
    assert (p.receipts, p.dead_letters) == ([], [])


def test_recoverable_switches_to_the_next_provider() -> None:
    p = plan([outcome(OutcomeClass.RECOVERABLE)], row())
    (update,) = p.updates
    assert (update.status, update.provider) == (Status.PENDING, "beta")
    assert p.retries[0][1].switched_provider is True
    assert p.campaign_deltas == {77: [0, 0, 0, 1]}


def test_attempt_on_a_fallback_provider_records_why() -> None:
    fallback = outcome(OutcomeClass.SUCCESS).model_copy(
        update={"provider": "beta", "fallback_reason": FallbackReason.PROVIDER_UNAVAILABLE}
    )
    p = plan([fallback], row())
    assert [a.fallback_reason for a in p.attempts] == ["provider_unavailable"]


def test_attempt_after_a_failed_primary_is_marked_primary_failed() -> None:
    second = outcome(OutcomeClass.SUCCESS, attempt=2, provider="beta")
    p = plan([second], replace(row(attempts=2), prev_provider="alpha", prev_outcome="recoverable"))
    assert [a.fallback_reason for a in p.attempts] == ["primary_failed"]
    assert [a.fallback_reason for a in plan([outcome(OutcomeClass.SUCCESS)], row()).attempts] == [None]


@pytest.mark.parametrize(
    ("bounced", "status", "index"), [(False, Status.FAILED, 1), (True, Status.BOUNCED, 2)]
)
def test_permanent_gives_up_with_one_dead_letter(bounced: bool, status: Status, index: int) -> None:
    failure = outcome(OutcomeClass.PERMANENT, bounced=bounced)
    p = plan([failure], row())
    assert [(u.status, u.error_code) for u in p.updates] == [(status, "E")]
    (letter,) = p.dead_letters
    assert (letter.log_id, letter.attempt, letter.max_attempts, letter.status, letter.reason) == (
        1,
        1,
        3,
        status,
        DeadLetterReason.PERMANENT_ERROR,
    )
    assert (letter.tenant, letter.campaign_id, letter.recipient, letter.provider) == (
        "acme",
        77,
        "+447911123456",
        "alpha",
    )
    assert (letter.error_class, letter.error_code, letter.error_message) == (
        OutcomeClass.PERMANENT,
        "E",
        "went wrong",
    )
    assert letter.created_at == CREATED
    expected = [0, 0, 0, 0]
    expected[index] = 1
    assert p.campaign_deltas == {77: expected}
    assert p.receipts == []


def test_exhausted_attempts_give_up_as_failed() -> None:
    p = plan([outcome(OutcomeClass.TRANSIENT, attempt=3)], row(attempts=3, max_attempts=3))
    assert [u.status for u in p.updates] == [Status.FAILED]
    assert [d.reason for d in p.dead_letters] == [DeadLetterReason.ATTEMPTS_EXHAUSTED]
    assert p.campaign_deltas == {77: [0, 1, 0, 0]}


def test_duplicates_in_one_batch_are_applied_once() -> None:
    failure = outcome(OutcomeClass.PERMANENT)
    p = plan([failure, failure, failure], row())
    assert (len(p.updates), len(p.attempts), len(p.dead_letters)) == (1, 1, 1)
    assert p.campaign_deltas == {77: [0, 1, 0, 0]}


def test_unique_outcomes_keeps_first_of_each_log_and_attempt() -> None:
    a1, a2, b1 = (
        outcome(OutcomeClass.TRANSIENT),
        outcome(OutcomeClass.TRANSIENT, attempt=2),
        outcome(OutcomeClass.SUCCESS, log_id=2),
    )
    assert unique_outcomes([a1, b1, a1, a2, b1]) == [a1, b1, a2]


def test_success_for_a_log_already_back_to_pending_at_that_attempt_marks_it_sent() -> None:
    p = plan([outcome(OutcomeClass.SUCCESS, attempt=2)], row(status=Status.PENDING, attempts=2))
    assert [u.status for u in p.updates] == [Status.SENT]
    assert len(p.receipts) == 1
    assert p.ignored == []


def test_success_for_pending_log_at_another_attempt_is_ignored() -> None:
    p = plan([outcome(OutcomeClass.SUCCESS, attempt=1)], row(status=Status.PENDING, attempts=2))
    assert p.updates == []
    assert len(p.ignored) == 1


@pytest.mark.parametrize("klass", [OutcomeClass.TRANSIENT, OutcomeClass.PERMANENT, OutcomeClass.RECOVERABLE])
def test_failure_for_pending_log_is_ignored(klass: OutcomeClass) -> None:
    p = plan([outcome(klass)], row(status=Status.PENDING))
    assert p.updates == []
    assert len(p.ignored) == 1


def test_unknown_log_is_ignored() -> None:
    lost = outcome(OutcomeClass.SUCCESS, log_id=404)
    p = plan([lost], row())
    assert p.ignored == [(lost, "unknown log")]
    assert (p.updates, p.attempts, p.receipts) == ([], [], [])


def test_log_without_campaign_has_no_counter_delta() -> None:
    assert plan([outcome(OutcomeClass.SUCCESS)], row(campaign_id=None)).campaign_deltas == {}


def test_outcomes_for_several_logs_sum_per_campaign() -> None:
    p = plan(
        [
            outcome(OutcomeClass.SUCCESS, log_id=1),
            outcome(OutcomeClass.SUCCESS, log_id=2),
            outcome(OutcomeClass.PERMANENT, log_id=3),
        ],
        row(1),
        row(2),
        row(3),
    )
    assert p.campaign_deltas == {77: [2, 1, 0, 0]}


@pytest.mark.parametrize("success_first", [False, True])
def test_success_and_failure_of_one_attempt_in_one_batch_mark_the_log_sent(success_first: bool) -> None:
    # a lease expiry re-published attempt 1: one copy timed out, the other was sent
    copies = [outcome(OutcomeClass.TRANSIENT), outcome(OutcomeClass.SUCCESS)]
    p = plan(copies[::-1] if success_first else copies, row())
    assert [u.status for u in p.updates] == [Status.SENT]
    assert p.retries == []


def applied(p: WritePlan, logs: dict[int, LogRow]) -> dict[int, LogRow]:
    after = dict(logs)
    for update in p.updates:
        current = after[update.log_id]
        after[update.log_id] = replace(
            current,
            status=update.status,
            provider=update.provider or current.provider,
            attempts=current.attempts if update.attempts is None else update.attempts,
            deferrals=current.deferrals + update.deferred,
        )
    return after


log_rows = st.builds(
    row,
    log_id=st.integers(1, 4),
    status=st.sampled_from(
        [Status.PROCESSING, Status.PROCESSING, Status.PENDING, Status.SENT, Status.FAILED]
    ),
    attempts=st.integers(1, 4),
    max_attempts=st.integers(1, 4),
    campaign_id=st.sampled_from([None, 1, 2]),
)
outcome_lists = st.lists(
    st.builds(
        outcome,
        klass=st.sampled_from(list(OutcomeClass)),
        log_id=st.integers(1, 5),
        attempt=st.integers(1, 4),
        provider=st.sampled_from([None, "alpha", "beta"]),
        bounced=st.booleans(),
        retry_after_s=st.none() | st.floats(0, 100),
    ),
    max_size=12,
)


@given(rows=st.lists(log_rows, max_size=4, unique_by=lambda r: r.id), outcomes=outcome_lists)
def test_applying_the_same_batch_twice_changes_nothing_the_second_time(
    rows: list[LogRow], outcomes: list[OutcomeMessage]
) -> None:
    # (A deferral hands the attempt number back, so a stale success of the attempt before it is then
    # applied, rightly: the provider did send it. Deferrals are left out of this property.)
    outcomes = [o for o in outcomes if o.outcome != OutcomeClass.DEFERRED]
    logs = {r.id: r for r in rows}
    first = plan_writes(outcomes, logs, POLICY, CHAINS, random.Random(1))
    second = plan_writes(outcomes, applied(first, logs), POLICY, CHAINS, random.Random(1))
    assert (second.updates, second.attempts, second.receipts, second.dead_letters) == ([], [], [], [])
    assert second.campaign_deltas == {}
    assert len(second.ignored) == len(unique_outcomes(outcomes))


@given(rows=st.lists(log_rows, max_size=4, unique_by=lambda r: r.id), outcomes=outcome_lists)
def test_plan_is_consistent(rows: list[LogRow], outcomes: list[OutcomeMessage]) -> None:
    logs = {r.id: r for r in rows}
    p = plan_writes(outcomes, logs, POLICY, CHAINS, random.Random(2))
    updated = [u.log_id for u in p.updates]
    assert len(updated) == len(set(updated))  # at most one write per log per batch
    assert len(p.updates) + len(p.ignored) == len(unique_outcomes(outcomes))
    deferred = {o.log_id for o, _ in p.deferrals}
    assert len(p.attempts) == len(p.updates) - len(deferred)  # a deferral is no attempt
    given_up = [u for u in p.updates if u.status in (Status.FAILED, Status.BOUNCED, Status.IN_DOUBT)]
    assert sorted(d.log_id for d in p.dead_letters) == sorted(u.log_id for u in given_up)
    assert len(p.receipts) == sum(u.status == Status.SENT for u in p.updates)
    assert len(p.retries) == sum(u.status == Status.PENDING and not u.deferred for u in p.updates)
    for update in p.updates:
        if update.deferred:
            assert update.attempts == logs[update.log_id].attempts - 1
        elif update.status == Status.PENDING:
            assert logs[update.log_id].attempts < logs[update.log_id].max_attempts
            assert 0 <= update.delay_s <= POLICY.retry.max_s
    for campaign, (sent, failed, bounced, retries) in p.campaign_deltas.items():
        mine = [u for u in p.updates if logs[u.log_id].campaign_id == campaign]
        assert sent == sum(u.status == Status.SENT for u in mine)
        assert failed == sum(u.status in (Status.FAILED, Status.IN_DOUBT) for u in mine)  # held: failed
        assert bounced == sum(u.status == Status.BOUNCED for u in mine)
        assert retries == sum(u.status == Status.PENDING and not u.deferred for u in mine)


def test_deferral_puts_the_log_back_with_its_attempt_count_unchanged_and_no_attempt_row() -> None:
    deferred = outcome(OutcomeClass.DEFERRED, attempt=2, retry_after_s=4.0).model_copy(
        update={"error_code": "RATE_LIMITED_LOCALLY"}
    )
    p = plan([deferred], row(attempts=2))
    (update,) = p.updates
    assert (update.status, update.delay_s, update.attempts, update.deferred) == (Status.PENDING, 4.0, 1, True)
    assert (p.attempts, p.retries, p.dead_letters, p.campaign_deltas) == ([], [], [], {})
    assert [(o.log_id, d.code) for o, d in p.deferrals] == [(1, "RATE_LIMITED_LOCALLY")]


def test_success_of_a_copy_after_a_deferral_waits_for_the_repeated_attempt() -> None:
    p = plan([outcome(OutcomeClass.SUCCESS, attempt=2)], row(status=Status.PENDING, attempts=1))
    assert (p.updates, [why for _, why in p.ignored]) == ([], ["log is PENDING"])


def test_unknown_outcome_keeps_the_key_and_records_an_unknown_attempt() -> None:
    unknown = outcome(OutcomeClass.UNKNOWN).model_copy(update={"error_code": "TIMEOUT"})
    p = plan([unknown], row())
    (update,) = p.updates
    assert (update.status, update.provider, update.key_attempt) == (Status.PENDING, "alpha", 1)
    assert [a.outcome.outcome for a in p.attempts] == [OutcomeClass.UNKNOWN]
    success = plan([outcome(OutcomeClass.SUCCESS, attempt=2)], replace(row(attempts=2), key_attempt=1))
    assert success.updates[0].key_attempt == 0  # cleared


def test_refusal_on_whatsapp_moves_the_log_to_its_fallback_channel() -> None:
    wa = replace(row(), channel="whatsapp", fallback_channels=("sms",))
    refused = outcome(OutcomeClass.PERMANENT, bounced=True).model_copy(
        update={"error_code": "UNDELIVERABLE", "channel": "whatsapp"}
    )
    p = plan([refused], wa)
    (update,) = p.updates
    assert (update.status, update.delivery_channel, update.channel_attempts_from) == (
        Status.PENDING,
        "sms",
        1,
    )
    assert p.dead_letters == []
    # the next attempt, on sms, says why it is there
    moved = replace(wa, attempts=2, delivery_channel="sms", channel_attempts_from=1, prev_channel="whatsapp")
    sent = plan([outcome(OutcomeClass.SUCCESS, attempt=2)], moved)
    assert [a.fallback_reason for a in sent.attempts] == ["channel_fallback"]
