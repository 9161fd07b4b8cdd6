"""services/dlq/requeue.py: which letters reset their log, which are stale, which stay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.dlq.requeue import LogState, Tally, Verdict, decide, plan_requeue
from shared.core.models import Status


def log(status: Status = Status.FAILED, attempts: int = 3) -> LogState:
    return LogState(id=1, status=status, attempts=attempts, max_attempts=5, campaign_id=None)


@pytest.mark.parametrize(
    ("state", "attempt", "verdict"),
    [
        (log(Status.FAILED, 3), 3, Verdict.REQUEUED),
        (log(Status.BOUNCED, 3), 3, Verdict.REQUEUED),
        (log(Status.PENDING, 3), 3, Verdict.STALE),  # already requeued (crash after commit, before ack)
        (log(Status.SENT, 4), 3, Verdict.STALE),  # requeued and delivered since
        (log(Status.FAILED, 8), 3, Verdict.STALE),  # requeued, failed again: a newer letter exists
        (log(Status.CANCELLED, 3), 3, Verdict.STALE),
        (log(Status.FAILED, 2), 3, Verdict.INCONSISTENT),  # a database behind the DLQ: left for a human
        (None, 3, Verdict.MISSING),
    ],
)
def test_decide(state: LogState | None, attempt: int, verdict: Verdict) -> None:
    assert decide(attempt, state) == verdict


def test_a_duplicate_letter_in_the_same_batch_is_stale() -> None:
    verdicts = plan_requeue([(1, 3), (1, 3), (2, 1)], {1: log()})
    assert verdicts == [Verdict.REQUEUED, Verdict.STALE, Verdict.MISSING]


def test_only_requeued_and_stale_letters_are_removed() -> None:
    assert {v for v in Verdict if v.removes_letter} == {Verdict.REQUEUED, Verdict.STALE}
    tally = Tally.empty()
    for verdict in (Verdict.REQUEUED, Verdict.STALE, Verdict.POISON, Verdict.MISSING):
        tally.add(verdict)
    assert tally.removed == 2


statuses = st.sampled_from(list(Status))


@given(
    logs=st.dictionaries(st.integers(1, 5), st.tuples(statuses, st.integers(0, 6)), max_size=5),
    letters=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), max_size=12),
)
def test_a_log_is_reset_at_most_once_and_only_from_failed_bounced_or_in_doubt(
    logs: dict[int, tuple[Status, int]], letters: list[tuple[int, int]]
) -> None:
    states = {i: LogState(i, s, a, 5, None) for i, (s, a) in logs.items()}
    verdicts = plan_requeue(letters, states)
    reset = [log_id for (log_id, _), v in zip(letters, verdicts, strict=True) if v == Verdict.REQUEUED]
    assert len(reset) == len(set(reset))
    for (log_id, attempt), verdict in zip(letters, verdicts, strict=True):
        if verdict == Verdict.REQUEUED:
            assert states[log_id].status in (Status.FAILED, Status.BOUNCED, Status.IN_DOUBT)
            assert states[log_id].attempts == attempt
