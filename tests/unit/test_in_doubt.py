"""In-doubt sends (issue 14 item 4): the start verdicts, the sender's resolution by the provider's declared
behaviour, the responder's hold, the DLQ requeue and the mock provider that ignores idempotency keys."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.dlq.requeue import LogState as DlqLog
from services.dlq.requeue import Verdict, plan_requeue
from services.mock_provider.app import MockProvider
from services.mock_provider.behaviour import FailureMix
from services.mock_provider.ledger import Ledger
from services.responder.plan import Defaults, LogRow, plan_writes
from services.sender.adapters import SendResult
from services.sender.circuits import CircuitBoard
from services.sender.indoubt import may_have_been_sent
from services.sender.ratelimit import RateLimiter
from services.sender.router import Router
from services.sender.starts import StartCheck, StartRow, StartVerdict, verdicts
from shared.core.circuit import CircuitPolicy
from shared.core.models import DeadLetterReason, DispatchMessage, OutcomeClass, OutcomeMessage, Status
from shared.core.retry import RetryPolicy
from shared.core.routing import InDoubtPolicy, ProviderSpec, Route, RoutingConfig
from tests.unit.test_routing_router import DryStore, FakeAdapters, NoPacing

NOW = datetime(2024, 1, 1, tzinfo=UTC)
T, P, S, D = OutcomeClass.TRANSIENT, OutcomeClass.PERMANENT, OutcomeClass.SUCCESS, OutcomeClass.IN_DOUBT


# ---- the provider's declaration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "declared", "honours"),
    [
        ("mock_json", None, True),
        ("sms_gateway", None, True),
        ("whatsapp_cloud", None, False),
        ("smtp", None, False),
        ("webhook", None, False),
        ("sms_gateway", False, False),
        ("smtp", True, True),
    ],
)
def test_a_provider_honours_keys_as_its_kind_does_unless_it_says_otherwise(
    kind: str, declared: bool | None, honours: bool
) -> None:
    assert ProviderSpec("p", kind, idempotency_keys=declared).honours_idempotency_keys is honours


@pytest.mark.parametrize(
    ("outcome", "code", "maybe"),
    [
        (T, "TIMEOUT", True),
        (T, "CONNECTION_LOST", True),
        (T, "CONNECTION_ERROR", False),  # no connection: nothing was sent
        (T, "SERVER_ERROR", False),  # an answer: the provider says it did not take it
        (P, "INVALID_NUMBER", False),
        (S, None, False),
    ],
)
def test_only_an_answerless_failure_after_connecting_may_have_sent(
    outcome: OutcomeClass, code: str | None, maybe: bool
) -> None:
    assert may_have_been_sent(SendResult(outcome, 1.0, error_code=code)) is maybe


# ---- start verdicts (pure) --------------------------------------------------------------------------------


def test_verdicts_first_in_doubt_stale_and_a_repeat_inside_one_batch() -> None:
    asked = [(1, 1, "a"), (2, 3, "a"), (3, 1, "a"), (1, 1, "a"), (4, 2, "b")]
    rows = [
        StartRow(1, 1, inserted=True, live=True, started_provider=None),
        StartRow(2, 3, inserted=False, live=True, started_provider="b"),
        StartRow(4, 2, inserted=True, live=True, started_provider=None),
    ]  # log 3 is not PROCESSING at attempt 1: no row
    assert verdicts(asked, rows) == [
        StartCheck(StartVerdict.FIRST),
        StartCheck(StartVerdict.IN_DOUBT, "b"),
        StartCheck(StartVerdict.STALE),
        StartCheck(StartVerdict.IN_DOUBT, "a"),
        StartCheck(StartVerdict.FIRST),
    ]


@given(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 3)), max_size=30), st.data())
def test_at_most_one_first_start_per_attempt_whatever_the_batch(
    asked_keys: list[tuple[int, int]], data: st.DataObject
) -> None:
    keys = sorted(set(asked_keys))
    rows = [
        StartRow(log, attempt, inserted=data.draw(st.booleans()), live=True, started_provider="x")
        for log, attempt in keys
        if data.draw(st.booleans())
    ]
    checks = verdicts([(log, attempt, "p") for log, attempt in asked_keys], rows)
    assert len(checks) == len(asked_keys)
    firsts = [k for k, c in zip(asked_keys, checks, strict=True) if c.verdict == StartVerdict.FIRST]
    assert len(firsts) == len(set(firsts))  # never two calls for one attempt
    inserted = {(r.log_id, r.attempt) for r in rows if r.inserted}
    assert set(firsts) == inserted & set(asked_keys)


# ---- the sender's resolution ------------------------------------------------------------------------------


class FakeStarts:
    def __init__(self, verdict: StartVerdict, started: str | None = None, fail: bool = False) -> None:
        self.check = StartCheck(verdict, started)
        self.fail = fail
        self.asked: list[tuple[int, int, str]] = []

    async def begin(self, log_id: int, attempt: int, provider: str) -> StartCheck:
        self.asked.append((log_id, attempt, provider))
        if self.fail:
            raise OSError("database gone")
        return self.check


def config(
    kind: str = "whatsapp_cloud", policy: InDoubtPolicy = InDoubtPolicy.HOLD, keys: bool | None = None
) -> RoutingConfig:
    spec = ProviderSpec("wa", kind, idempotency_keys=keys, in_doubt=policy)
    return RoutingConfig(1, {"wa": spec}, {"whatsapp": (Route("wa", 0),)}, {}, {})


def dispatch(attempt: int = 2) -> DispatchMessage:
    return DispatchMessage(
        log_id=7,
        attempt=attempt,
        tenant="t",
        channel="whatsapp",
        recipient="+14155550100",
        payload={"body": "hi"},
        priority=1,
        created_at=NOW,
        claimed_at=NOW,
    )


def sender_router(
    routing: RoutingConfig, starts: FakeStarts, answer: SendResult | None = None
) -> tuple[Router, FakeAdapters]:
    adapters = FakeAdapters({"wa": answer} if answer else None)
    router = Router(
        lambda: routing,
        lambda: {},
        CircuitBoard(CircuitPolicy(window=4, min_calls=4, open_s=60), "me"),
        RateLimiter(DryStore(), 0.02),
        NoPacing(),
        adapters,  # type: ignore[arg-type]
        max_payload_bytes=10_000,
        max_wait_s=0.05,
        rng=random.Random(1),
        starts=starts,
    )
    return router, adapters


async def test_first_start_is_recorded_then_the_provider_is_called() -> None:
    starts = FakeStarts(StartVerdict.FIRST)
    router, adapters = sender_router(config(), starts)
    outcome = await router.attempt(dispatch())
    assert starts.asked == [(7, 2, "wa")]
    assert (outcome.outcome, len(adapters.requests)) == (S, 1)


async def test_a_redelivered_started_attempt_is_held_without_calling_the_provider() -> None:
    starts = FakeStarts(StartVerdict.IN_DOUBT, "wa")
    router, adapters = sender_router(config(), starts)
    outcome = await router.attempt(dispatch())
    assert (outcome.outcome, outcome.error_code, outcome.provider) == (D, "IN_DOUBT", "wa")
    assert adapters.requests == []


async def test_with_in_doubt_resend_the_provider_is_called_again() -> None:
    router, adapters = sender_router(
        config(policy=InDoubtPolicy.RESEND), FakeStarts(StartVerdict.IN_DOUBT, "wa")
    )
    outcome = await router.attempt(dispatch())
    assert (outcome.outcome, len(adapters.requests)) == (S, 1)


async def test_a_stale_copy_is_not_sent() -> None:
    router, adapters = sender_router(config(), FakeStarts(StartVerdict.STALE))
    outcome = await router.attempt(dispatch())
    assert outcome.outcome == D and adapters.requests == []


async def test_a_provider_honouring_keys_records_no_start_and_is_called() -> None:
    starts = FakeStarts(StartVerdict.IN_DOUBT, "wa")
    router, adapters = sender_router(config(kind="sms_gateway"), starts)
    outcome = await router.attempt(dispatch())
    assert (outcome.outcome, starts.asked, len(adapters.requests)) == (S, [], 1)


async def test_without_a_recorded_start_nothing_is_sent_and_the_attempt_is_deferred() -> None:
    router, adapters = sender_router(config(), FakeStarts(StartVerdict.FIRST, fail=True))
    outcome = await router.attempt(dispatch())
    assert (outcome.outcome, outcome.error_code, adapters.requests) == (
        OutcomeClass.DEFERRED,
        "START_NOT_RECORDED",
        [],
    )


@pytest.mark.parametrize(
    ("policy", "code", "expected"),
    [
        (InDoubtPolicy.HOLD, "TIMEOUT", D),
        (InDoubtPolicy.HOLD, "CONNECTION_LOST", D),
        (InDoubtPolicy.HOLD, "CONNECTION_ERROR", T),
        (InDoubtPolicy.HOLD, "SERVER_ERROR", T),
        (InDoubtPolicy.RESEND, "TIMEOUT", T),
    ],
)
async def test_a_call_that_may_have_been_sent_is_held_on_a_provider_without_keys(
    policy: InDoubtPolicy, code: str, expected: OutcomeClass
) -> None:
    router, _ = sender_router(
        config(policy=policy), FakeStarts(StartVerdict.FIRST), SendResult(T, 5.0, error_code=code)
    )
    assert (await router.attempt(dispatch())).outcome == expected


async def test_a_timeout_on_a_provider_honouring_keys_stays_a_retry() -> None:
    router, _ = sender_router(
        config(kind="sms_gateway"), FakeStarts(StartVerdict.FIRST), SendResult(T, 5.0, error_code="TIMEOUT")
    )
    assert (await router.attempt(dispatch())).outcome == T


# ---- the responder's hold ---------------------------------------------------------------------------------


def row(status: Status = Status.PROCESSING, attempts: int = 2) -> LogRow:
    return LogRow(7, status, attempts, 5, "wa", "t", 3, "whatsapp", "+14155550100", NOW)


def held(attempt: int = 2) -> OutcomeMessage:
    return OutcomeMessage(
        log_id=7,
        attempt=attempt,
        recipient="+14155550100",
        channel="whatsapp",
        provider="wa",
        outcome=D,
        error_code="IN_DOUBT",
        error_message="held",
    )


def test_an_in_doubt_outcome_holds_the_log_with_one_in_doubt_dead_letter() -> None:
    plan = plan_writes([held(), held()], {7: row()}, Defaults(RetryPolicy.exponential(1, 10)), {})
    (update,) = plan.updates
    assert (update.status, update.error_code) == (Status.IN_DOUBT, "IN_DOUBT")
    (letter,) = plan.dead_letters
    assert (letter.reason, letter.error_class, letter.status) == (
        DeadLetterReason.IN_DOUBT,
        OutcomeClass.IN_DOUBT,
        Status.IN_DOUBT,
    )
    assert [a.outcome.outcome for a in plan.attempts] == [D]
    assert plan.campaign_deltas == {3: [0, 1, 0, 0]}  # counted with the failed


@pytest.mark.parametrize(
    "current", [row(Status.SENT), row(Status.IN_DOUBT), row(attempts=3), row(Status.PENDING)]
)
def test_a_stale_or_repeated_in_doubt_outcome_changes_nothing(current: LogRow) -> None:
    plan = plan_writes([held()], {7: current}, Defaults(RetryPolicy.exponential(1, 10)), {})
    assert (plan.updates, plan.dead_letters, plan.attempts) == ([], [], [])


def test_a_late_success_does_not_undo_a_hold() -> None:
    late = held().model_copy(update={"outcome": S, "error_code": None, "vendor_ref": "wamid.1"})
    plan = plan_writes([late], {7: row(Status.IN_DOUBT)}, Defaults(RetryPolicy.exponential(1, 10)), {})
    assert plan.updates == [] and plan.ignored[0][1] == "log is IN_DOUBT"


def test_an_operator_may_requeue_an_in_doubt_log() -> None:
    logs = {7: DlqLog(7, Status.IN_DOUBT, 2, 5, 3)}
    assert plan_requeue([(7, 2)], logs) == [Verdict.REQUEUED]


# ---- the mock provider that ignores keys ------------------------------------------------------------------


async def test_a_mock_provider_ignoring_keys_sends_a_repeated_key_again_and_the_ledger_counts_it() -> None:
    mock = MockProvider(FailureMix(0, 0, 0), 0, 0, Ledger(), ignore_keys=frozenset({"loose"}))
    first = await mock.submit("loose", "sms", "+1415", "9-1")
    again = await mock.submit("loose", "sms", "+1415", "9-1")
    kept = await mock.submit("strict", "sms", "+1415", "8-1")
    replay = await mock.submit("strict", "sms", "+1415", "8-1")
    assert [r.response["replay"] for r in (first, again, kept, replay)] == [False, False, False, True]  # type: ignore[union-attr]
    stats = mock.ledger.stats()
    assert (stats["accepted"], stats["replays"], stats["duplicate_logs"]) == (3, 1, 1)
