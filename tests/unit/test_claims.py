"""services/poller/claims.py: the claim plan and the text of the claim statements."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.poller.claims import (
    RECLAIM_SQL,
    STRICT_GATE,
    ClaimedLog,
    ClaimPlan,
    claim_sql,
    plan_claim,
)
from services.poller.settings import Ordering


@pytest.mark.parametrize(
    ("batch", "share", "enabled", "expected"),
    [
        (500, 0.1, True, ClaimPlan(aged=50, per_priority=500)),
        (500, 0.1, False, ClaimPlan(aged=0, per_priority=500)),
        (500, 0.0, True, ClaimPlan(aged=0, per_priority=500)),
        (5, 0.1, True, ClaimPlan(aged=1, per_priority=5)),
        (1, 1.0, True, ClaimPlan(aged=1, per_priority=1)),
        (10, 1.0, True, ClaimPlan(aged=10, per_priority=10)),
    ],
)
def test_plan_claim_examples(batch: int, share: float, enabled: bool, expected: ClaimPlan) -> None:
    assert plan_claim(batch, share, enabled) == expected


@given(batch=st.integers(1, 10_000), share=st.floats(0, 1), enabled=st.booleans())
def test_aged_share_is_bounded_by_the_batch(batch: int, share: float, enabled: bool) -> None:
    plan = plan_claim(batch, share, enabled)
    assert plan.per_priority == batch
    assert 0 <= plan.aged <= batch
    if enabled and share > 0:
        assert plan.aged == max(1, int(batch * share))
    else:
        assert plan.aged == 0


@pytest.mark.parametrize("aged", [False, True])
def test_strict_gate_only_in_strict_mode(aged: bool) -> None:
    strict = claim_sql(Ordering.STRICT, aged)
    best_effort = claim_sql(Ordering.BEST_EFFORT, aged)
    assert STRICT_GATE in strict
    assert "NOT EXISTS" in strict
    assert "NOT EXISTS" not in best_effort
    assert strict.replace(STRICT_GATE, "") == best_effort


def test_strict_gate_waits_for_earlier_open_logs_of_the_group_and_for_one_in_flight() -> None:
    gate = " ".join(STRICT_GATE.split())
    # one probe of the group's open logs (logs_open_group_idx; tests/integration/test_ordering_gate.py
    # checks the plan and, against the pure gate, what it lets through)
    assert gate.count("NOT EXISTS") == 1
    assert "e.ordering_group = c.ordering_group AND e.status IN ('PENDING', 'PROCESSING')" in gate
    assert (
        "(e.due_at, e.id) < (c.due_at, c.id) AND e.next_attempt_at < 'infinity'" in gate
    )  # paused: no block
    assert "e.status = 'PROCESSING' OR" in gate  # one in flight blocks wherever it stands


@pytest.mark.parametrize("ordering", list(Ordering))
@pytest.mark.parametrize("aged", [False, True])
def test_claim_takes_due_pending_rows_without_blocking_and_counts_an_attempt(
    ordering: Ordering, aged: bool
) -> None:
    sql = " ".join(claim_sql(ordering, aged).split())
    assert "FOR UPDATE SKIP LOCKED" in sql
    assert "c.status = 'PENDING'" in sql
    assert "SET status = 'PROCESSING', attempts = l.attempts + 1" in sql
    assert "LIMIT $1" in sql
    assert "make_interval(secs => $2)" in sql
    assert "next_attempt_at <= now()" in sql


def test_aged_claim_looks_only_at_lower_priorities_past_the_threshold() -> None:
    aged = " ".join(claim_sql(Ordering.STRICT, aged=True).split())
    fresh = " ".join(claim_sql(Ordering.STRICT, aged=False).split())
    assert "c.priority > 0 AND c.next_attempt_at <= now() - make_interval(secs => $3)" in aged
    assert "c.priority = $3 AND c.next_attempt_at <= now()" in fresh


def test_reclaim_keeps_the_attempt_number() -> None:
    sql = " ".join(RECLAIM_SQL.split())
    assert "attempts" not in sql.split("RETURNING")[0]
    assert "c.status = 'PROCESSING' AND c.lease_until < now() AND c.priority = ANY($3::smallint[])" in sql
    assert "ORDER BY c.lease_until LIMIT $1" in sql
    assert "FOR UPDATE SKIP LOCKED" in sql


def _record(payload: object) -> dict[str, object]:
    return {
        "id": 9,
        "attempts": 2,
        "tenant": "t",
        "campaign_id": None,
        "channel": "sms",
        "recipient": "+44 7911 123456",
        "recipient_key": "+447911123456",
        "ordering_group": "urgent:+447911123456",
        "payload": payload,
        "priority": 0,
        "provider": "p",
        "created_at": datetime(2024, 1, 1, tzinfo=UTC),
    }


def test_claimed_log_from_record_maps_attempts_to_attempt() -> None:
    row = ClaimedLog.from_record(_record({"body": "x"}))
    assert (row.id, row.attempt, row.payload, row.provider) == (9, 2, {"body": "x"}, "p")
    assert (row.recipient, row.recipient_key) == ("+44 7911 123456", "+447911123456")


@pytest.mark.parametrize("payload", ["text", 3, [1, 2], None])
def test_claimed_log_wraps_a_non_object_payload(payload: object) -> None:
    assert ClaimedLog.from_record(_record(payload)).payload == {"value": payload}
