"""services/poller/gate.py: strict order within an ordering group, by due time then id."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.poller.gate import PAUSED, OpenLog, OpenStatus, claimable, ordering_group

NOW = 1_000.0

statuses = st.sampled_from([OpenStatus.PENDING, OpenStatus.PENDING, OpenStatus.PROCESSING])
# due times around NOW; next_attempt_at: due, later (scheduled or backoff), or paused
times = st.sampled_from([NOW - 30, NOW - 10, NOW - 1, NOW, NOW + 5, NOW + 3600])


@st.composite
def open_logs(draw: st.DrawFn) -> list[OpenLog]:
    count = draw(st.integers(0, 14))
    ids = draw(st.lists(st.integers(1, 500), min_size=count, max_size=count, unique=True))
    logs = []
    for log_id in ids:
        due = draw(times)
        later = draw(st.sampled_from(["due", "later", "paused"]))
        next_attempt = {
            "due": due,
            "later": max(due, NOW) + draw(st.sampled_from([1.0, 60.0])),
            "paused": PAUSED,
        }
        status = draw(statuses)
        logs.append(
            OpenLog(
                id=log_id,
                group=draw(st.sampled_from(["+31600000001", "+31600000002", "urgent:+31600000001"])),
                status=status,
                due_at=due,
                next_attempt_at=due if status is OpenStatus.PROCESSING else next_attempt[later],
            )
        )
    return logs


def log(
    log_id: int,
    due: float = NOW - 1,
    group: str = "g",
    status: OpenStatus = OpenStatus.PENDING,
    next_attempt: float | None = None,
) -> OpenLog:
    return OpenLog(log_id, group, status, due, due if next_attempt is None else next_attempt)


@given(logs=open_logs())
def test_at_most_one_log_per_group_passes_and_none_while_one_is_in_flight(logs: list[OpenLog]) -> None:
    passed = claimable(logs, NOW)
    groups = [log.group for log in logs if log.id in passed]
    assert len(groups) == len(set(groups))
    in_flight = {log.group for log in logs if log.status is OpenStatus.PROCESSING}
    assert not in_flight & set(groups)


@given(logs=open_logs())
def test_a_passed_log_is_due_pending_and_first_of_its_group_by_due_time_then_id(logs: list[OpenLog]) -> None:
    for passed in claimable(logs, NOW):
        (chosen,) = [log for log in logs if log.id == passed]
        assert chosen.status is OpenStatus.PENDING and chosen.next_attempt_at <= NOW
        earlier = [
            other
            for other in logs
            if other.group == chosen.group and other.id != chosen.id and not other.paused
            if (other.due_at, other.id) < (chosen.due_at, chosen.id)
        ]
        assert earlier == []


@given(logs=open_logs())
def test_a_group_with_due_work_and_nothing_in_flight_always_makes_progress(logs: list[OpenLog]) -> None:
    # the first unpaused log of a group (due time, id), when it is due and nothing is in flight, passes
    passed = claimable(logs, NOW)
    for group in {log.group for log in logs}:
        members = [log for log in logs if log.group == group]
        if any(log.status is OpenStatus.PROCESSING for log in members):
            continue
        waiting = sorted((log for log in members if not log.paused), key=lambda log: (log.due_at, log.id))
        if waiting and waiting[0].next_attempt_at <= NOW:
            assert waiting[0].id in passed


@given(logs=open_logs(), extra=st.sampled_from(["scheduled", "paused"]))
def test_scheduled_and_paused_logs_never_block_a_log_due_now(logs: list[OpenLog], extra: str) -> None:
    # Given any open logs, when a log scheduled for later or held by a paused campaign is added to a group
    before = claimable(logs, NOW)
    added = (
        log(10_000, due=NOW + 3600, group="+31600000001")
        if extra == "scheduled"
        else log(10_000, due=NOW - 3600, group="+31600000001", next_attempt=PAUSED)
    )
    # Then what was claimable stays claimable, and the added log itself is not
    assert claimable([*logs, added], NOW) == before


def test_examples_due_time_before_id_and_retry_backoff_keeps_its_place() -> None:
    # a log created later but due earlier (send_at in the past) goes first
    assert claimable([log(1, due=NOW - 1), log(2, due=NOW - 5)], NOW) == {2}
    # equal due times: by id
    assert claimable([log(2), log(1)], NOW) == {1}
    # a log in retry backoff (due earlier, next attempt later) blocks the rest of its group
    assert claimable([log(1, due=NOW - 10, next_attempt=NOW + 30), log(2)], NOW) == set()
    # ...a paused one does not; a scheduled one comes after a due one
    assert claimable([log(1, due=NOW - 10, next_attempt=PAUSED), log(2)], NOW) == {2}
    assert claimable([log(1, due=NOW + 60), log(2)], NOW) == {2}
    # one in flight holds its whole group, even a log placed before it
    assert claimable([log(5, status=OpenStatus.PROCESSING), log(1, due=NOW - 100)], NOW) == set()


def test_urgent_messages_form_their_own_group_unless_the_user_names_one() -> None:
    bulk = ordering_group("acme", None, 1, "+31600000001")
    urgent = ordering_group("acme", None, 0, "+31600000001")
    assert bulk == "+31600000001" and urgent == "urgent:+31600000001"
    # an OTP is not held by the marketing message queued before it for the same person
    logs = [log(1, group=bulk, status=OpenStatus.PROCESSING), log(2, group=bulk), log(3, group=urgent)]
    assert claimable(logs, NOW) == {3}
    # a key given by the user is one group whatever the priority, and scoped to the tenant
    assert ordering_group("acme", "order-7", 0, "+1") == ordering_group("acme", "order-7", 2, "+2")
    assert ordering_group("acme", "order-7", 1, "+1") != ordering_group("globex", "order-7", 1, "+1")
