"""Turning a batch of outcomes and the current log rows into the writes to make (pure)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime

from shared.backoff import BackoffPolicy
from shared.models import DeadLetter, OutcomeClass, OutcomeMessage, Status, utcnow
from shared.retry import GiveUp, Ignore, LogState, MarkSent, ScheduleRetry, decide


@dataclass(frozen=True, slots=True)
class LogRow:
    id: int
    status: Status
    attempts: int
    max_attempts: int
    provider: str | None
    tenant: str
    campaign_id: int | None
    channel: str
    recipient: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LogUpdate:
    log_id: int
    status: Status
    delay_s: float  # only for PENDING
    provider: str | None
    vendor_ref: str | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    outcome: OutcomeMessage
    fallback_reason: str | None


@dataclass(slots=True)
class WritePlan:
    updates: list[LogUpdate] = field(default_factory=list)
    attempts: list[AttemptRow] = field(default_factory=list)
    receipts: list[OutcomeMessage] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # campaign id -> (sent, failed, bounced, retries)
    campaign_deltas: dict[int, list[int]] = field(default_factory=dict)
    ignored: list[tuple[OutcomeMessage, str]] = field(default_factory=list)
    retries: list[tuple[OutcomeMessage, ScheduleRetry]] = field(default_factory=list)
    # (channel, seconds from the log's creation to this successful attempt)
    send_latencies: list[tuple[str, float]] = field(default_factory=list)

    def bump(self, campaign_id: int | None, index: int) -> None:
        if campaign_id is not None:
            self.campaign_deltas.setdefault(campaign_id, [0, 0, 0, 0])[index] += 1


def unique_outcomes(outcomes: list[OutcomeMessage]) -> list[OutcomeMessage]:
    """The first outcome of each (log, attempt); later copies in the same batch are duplicates."""
    seen: set[tuple[int, int]] = set()
    unique = []
    for outcome in outcomes:
        key = (outcome.log_id, outcome.attempt)
        if key not in seen:
            seen.add(key)
            unique.append(outcome)
    return unique


def plan_writes(
    outcomes: list[OutcomeMessage],
    logs: dict[int, LogRow],
    policy: BackoffPolicy,
    chains: dict[str, list[str]],
    rng: random.Random | None = None,
) -> WritePlan:
    plan = WritePlan()
    for outcome in unique_outcomes(outcomes):
        row = logs.get(outcome.log_id)
        if row is None:
            plan.ignored.append((outcome, "unknown log"))
            continue
        state = LogState(row.status, row.attempts, row.max_attempts, row.provider)
        decision = decide(outcome, state, policy, chains.get(row.channel, []), rng)
        if (
            isinstance(decision, Ignore)
            and outcome.outcome == OutcomeClass.SUCCESS
            and row.status == Status.PENDING
            and row.attempts == outcome.attempt
        ):
            # A duplicate of this attempt succeeded after a failed copy put the log back to PENDING:
            # the provider did send it, so the log is SENT (and no further attempt may go out).
            decision = MarkSent(outcome.provider)
        if isinstance(decision, Ignore):
            plan.ignored.append((outcome, decision.why))
            continue
        if isinstance(decision, MarkSent):
            plan.attempts.append(AttemptRow(outcome, None))
            plan.updates.append(
                LogUpdate(row.id, Status.SENT, 0.0, outcome.provider, outcome.vendor_ref, None, None)
            )
            plan.receipts.append(outcome)
            plan.send_latencies.append((row.channel, (outcome.finished_at - row.created_at).total_seconds()))
            plan.bump(row.campaign_id, 0)
        elif isinstance(decision, ScheduleRetry):
            reason = "provider_unavailable" if decision.switched_provider else None
            plan.attempts.append(AttemptRow(outcome, reason))
            plan.updates.append(
                LogUpdate(row.id, Status.PENDING, decision.delay_s, decision.provider, None,
                          outcome.error_code, outcome.error_message)
            )
            plan.retries.append((outcome, decision))
            plan.bump(row.campaign_id, 3)
        elif isinstance(decision, GiveUp):
            plan.attempts.append(AttemptRow(outcome, None))
            plan.updates.append(
                LogUpdate(row.id, decision.status, 0.0, outcome.provider, None,
                          outcome.error_code, outcome.error_message)
            )
            plan.bump(row.campaign_id, 2 if decision.status == Status.BOUNCED else 1)
            plan.dead_letters.append(
                DeadLetter(
                    log_id=row.id,
                    attempt=outcome.attempt,
                    max_attempts=row.max_attempts,
                    tenant=row.tenant,
                    campaign_id=row.campaign_id,
                    channel=row.channel,
                    recipient=row.recipient,
                    provider=outcome.provider,
                    status=decision.status,
                    reason=decision.reason,
                    error_class=outcome.outcome,
                    error_code=outcome.error_code,
                    error_message=outcome.error_message,
                    created_at=row.created_at,
                    dead_lettered_at=utcnow(),
                )
            )
    return plan
