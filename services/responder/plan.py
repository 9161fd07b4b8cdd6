"""Turning a batch of outcomes and receipts and the current log rows into the writes to make (pure).

Outcomes are applied first, then receipts, each against the state the previous ones left; every log
gets at most one (merged) row update per batch.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.responder.receipts import (
    Deliver,
    RecordOnly,
    SentAttempt,
    Undeliverable,
    decide_receipt,
    sent_by,
)
from shared.backoff import BackoffPolicy
from shared.models import (
    DeadLetter,
    DeadLetterReason,
    FallbackReason,
    OutcomeClass,
    OutcomeMessage,
    ReceiptMessage,
    ReceiptStatus,
    Status,
    utcnow,
)
from shared.retry import GiveUp, Ignore, LogState, MarkSent, RetryPolicy, ScheduleRetry, decide
from shared.routing import RoutingConfig


@dataclass(frozen=True, slots=True)
class EarlyReceipt:
    """A final receipt recorded before the outcome of its attempt was applied."""

    attempt: int
    status: ReceiptStatus
    provider: str | None = None
    error_code: str | None = None
    provider_status: str = ""
    vendor_ref: str | None = None


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
    prev_provider: str | None = None  # provider and outcome of attempt ``attempts - 1``
    prev_outcome: str | None = None
    early_receipt: EarlyReceipt | None = None


@dataclass(frozen=True, slots=True)
class LogUpdate:
    log_id: int
    status: Status
    delay_s: float  # only for PENDING
    provider: str | None
    vendor_ref: str | None
    error_code: str | None
    error_message: str | None
    sent: bool = False  # sets sent_at (once)
    delivered: bool = False  # sets delivered_at
    # when the provider accepted it, as the sender stamped it (outcome.finished_at); else the apply time
    accepted_at: datetime | None = None

    def then(self, later: LogUpdate) -> LogUpdate:
        """This update followed by ``later`` in the same batch, as one."""
        return replace(
            later,
            provider=later.provider or self.provider,
            vendor_ref=later.vendor_ref or self.vendor_ref,
            sent=self.sent or later.sent,
            accepted_at=self.accepted_at or later.accepted_at,
        )


@dataclass(frozen=True, slots=True)
class AttemptRow:
    outcome: OutcomeMessage
    fallback_reason: str | None


@dataclass(slots=True)
class WritePlan:
    updates: list[LogUpdate] = field(default_factory=list)
    attempts: list[AttemptRow] = field(default_factory=list)
    receipts: list[OutcomeMessage] = field(default_factory=list)  # ACCEPTED receipt rows
    reports: list[ReceiptMessage] = field(default_factory=list)  # provider receipt rows
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # campaign id -> (sent, failed, bounced, retries); and -> delivered
    campaign_deltas: dict[int, list[int]] = field(default_factory=dict)
    delivered_deltas: dict[int, int] = field(default_factory=dict)
    ignored: list[tuple[OutcomeMessage, str]] = field(default_factory=list)
    ignored_receipts: list[tuple[ReceiptMessage, str]] = field(default_factory=list)
    applied_receipts: list[tuple[ReceiptMessage, Status]] = field(default_factory=list)
    retries: list[tuple[OutcomeMessage, ScheduleRetry]] = field(default_factory=list)
    # (channel, seconds from the log's creation to this successful attempt)
    send_latencies: list[tuple[str, float]] = field(default_factory=list)

    def bump(self, campaign_id: int | None, index: int, by: int = 1) -> None:
        if campaign_id is not None:
            self.campaign_deltas.setdefault(campaign_id, [0, 0, 0, 0])[index] += by

    def deliver(self, campaign_id: int | None) -> None:
        if campaign_id is not None:
            self.delivered_deltas[campaign_id] = self.delivered_deltas.get(campaign_id, 0) + 1


SENT_I, FAILED_I, BOUNCED_I, RETRIES_I = range(4)


def unique_outcomes(outcomes: Sequence[OutcomeMessage]) -> list[OutcomeMessage]:
    """One outcome per (log, attempt), in order of first appearance; a success among copies wins
    (the provider did send it), otherwise the first copy."""
    chosen: dict[tuple[int, int], OutcomeMessage] = {}
    for outcome in outcomes:
        key = (outcome.log_id, outcome.attempt)
        if key not in chosen or (
            outcome.outcome == OutcomeClass.SUCCESS and chosen[key].outcome != OutcomeClass.SUCCESS
        ):
            chosen[key] = outcome
    return list(chosen.values())


def unique_receipts(receipts: Sequence[ReceiptMessage]) -> list[ReceiptMessage]:
    seen: dict[tuple[int, int, ReceiptStatus], ReceiptMessage] = {}
    for receipt in receipts:
        seen.setdefault((receipt.log_id, receipt.attempt, receipt.status), receipt)
    return list(seen.values())


def fallback_reason(outcome: OutcomeMessage, row: LogRow) -> str | None:
    """Why this attempt went to its provider rather than the one first in line, if it did."""
    if outcome.fallback_reason is not None:
        return outcome.fallback_reason.value
    if (
        row.prev_provider is not None
        and outcome.provider is not None
        and outcome.provider != row.prev_provider
        and row.prev_outcome in (OutcomeClass.TRANSIENT.value, OutcomeClass.RECOVERABLE.value)
    ):
        return FallbackReason.PRIMARY_FAILED.value
    return None


class Planner:
    def __init__(
        self,
        logs: dict[int, LogRow],
        policy: BackoffPolicy | RetryPolicy,
        chains: dict[str, list[str]],
        rng: random.Random | None,
        routing: RoutingConfig | None,
        sent_attempts: Mapping[tuple[int, int], SentAttempt] | None = None,
    ) -> None:
        self.state = dict(logs)
        self.sent_attempts = dict(sent_attempts or {})
        self.policy = policy
        self.chains = chains
        self.rng = rng
        self.routing = routing
        self.plan = WritePlan()
        self._updates: dict[int, LogUpdate] = {}

    def update(self, row: LogRow, update: LogUpdate) -> None:
        earlier = self._updates.get(row.id)
        self._updates[row.id] = earlier.then(update) if earlier else update
        self.state[row.id] = replace(row, status=update.status, provider=update.provider or row.provider)

    def finish(self) -> WritePlan:
        self.plan.updates = list(self._updates.values())
        return self.plan

    def retry_policy(self, row: LogRow) -> BackoffPolicy | RetryPolicy:
        if self.routing is not None:
            return self.routing.policy(row.channel).retry or self.policy
        return self.policy

    def chain(self, row: LogRow) -> list[str]:
        if self.routing is not None and self.routing.providers:
            return self.routing.fallback_chain(row.tenant, row.channel, row.recipient)
        return self.chains.get(row.channel, [])

    def dead_letter(
        self,
        row: LogRow,
        attempt: int,
        status: Status,
        reason: DeadLetterReason,
        provider: str | None,
        error_class: OutcomeClass,
        code: str | None,
        message: str | None,
        max_attempts: int,
    ) -> None:
        self.plan.dead_letters.append(
            DeadLetter(
                log_id=row.id,
                attempt=attempt,
                max_attempts=max_attempts,
                tenant=row.tenant,
                campaign_id=row.campaign_id,
                channel=row.channel,
                recipient=row.recipient,
                provider=provider,
                status=status,
                reason=reason,
                error_class=error_class,
                error_code=code,
                error_message=message,
                created_at=row.created_at,
                dead_lettered_at=utcnow(),
            )
        )

    # ---- outcomes ----------------------------------------------------------------------------------

    def outcome(self, outcome: OutcomeMessage) -> None:
        row = self.state.get(outcome.log_id)
        if row is None:
            self.plan.ignored.append((outcome, "unknown log"))
            return
        state = LogState(row.status, row.attempts, row.max_attempts, row.provider)
        policy = self.retry_policy(row)
        decision = decide(outcome, state, policy, self.chain(row), self.rng)
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
            self.plan.ignored.append((outcome, decision.why))
            return
        self.plan.attempts.append(AttemptRow(outcome, fallback_reason(outcome, row)))
        attempt = SentAttempt(outcome.provider, outcome.vendor_ref)
        self.sent_attempts[(outcome.log_id, outcome.attempt)] = attempt
        early = row.early_receipt
        if (
            early is not None
            and early.attempt == outcome.attempt
            and not sent_by(early.provider, early.vendor_ref, attempt)
        ):
            early = None  # recorded before its attempt was known, and not from the provider that sent it
        if early is not None and early.status == ReceiptStatus.DELIVERED:
            self.delivered_early(outcome, row)
        elif isinstance(decision, MarkSent):
            self.sent(outcome, row, early if early is not None and early.attempt == outcome.attempt else None)
        elif isinstance(decision, ScheduleRetry):
            self.update(
                row,
                LogUpdate(
                    row.id,
                    Status.PENDING,
                    decision.delay_s,
                    decision.provider,
                    None,
                    outcome.error_code,
                    outcome.error_message,
                ),
            )
            self.plan.retries.append((outcome, decision))
            self.plan.bump(row.campaign_id, RETRIES_I)
        elif isinstance(decision, GiveUp):
            self.update(
                row,
                LogUpdate(
                    row.id,
                    decision.status,
                    0.0,
                    outcome.provider,
                    None,
                    outcome.error_code,
                    outcome.error_message,
                ),
            )
            self.plan.bump(row.campaign_id, BOUNCED_I if decision.status == Status.BOUNCED else FAILED_I)
            attempts_allowed = (
                policy.attempts_allowed(row.max_attempts)
                if isinstance(policy, RetryPolicy)
                else row.max_attempts
            )
            self.dead_letter(
                row,
                outcome.attempt,
                decision.status,
                decision.reason,
                outcome.provider,
                outcome.outcome,
                outcome.error_code,
                outcome.error_message,
                attempts_allowed,
            )

    def sent(self, outcome: OutcomeMessage, row: LogRow, early: EarlyReceipt | None) -> None:
        self.plan.receipts.append(outcome)
        self.plan.send_latencies.append((row.channel, (outcome.finished_at - row.created_at).total_seconds()))
        if early is None:
            self.update(
                row,
                LogUpdate(
                    row.id,
                    Status.SENT,
                    0.0,
                    outcome.provider,
                    outcome.vendor_ref,
                    None,
                    None,
                    sent=True,
                    accepted_at=outcome.finished_at,
                ),
            )
            self.plan.bump(row.campaign_id, SENT_I)
            return
        status = Status.BOUNCED if early.status == ReceiptStatus.BOUNCED else Status.FAILED
        code, message = (
            early.error_code or "UNDELIVERED",
            f"delivery report: {early.provider_status or status}",
        )
        self.update(
            row,
            LogUpdate(
                row.id,
                status,
                0.0,
                outcome.provider,
                outcome.vendor_ref,
                code,
                message,
                sent=True,
                accepted_at=outcome.finished_at,
            ),
        )
        self.plan.bump(row.campaign_id, BOUNCED_I if status == Status.BOUNCED else FAILED_I)
        self.dead_letter(
            row,
            outcome.attempt,
            status,
            DeadLetterReason.PERMANENT_ERROR,
            outcome.provider,
            OutcomeClass.PERMANENT,
            code,
            message,
            row.max_attempts,
        )

    def delivered_early(self, outcome: OutcomeMessage, row: LogRow) -> None:
        """The provider reported delivery before this outcome arrived: the log is DELIVERED, whatever
        the outcome says (a timeout on our side does not undo a delivery)."""
        if outcome.outcome == OutcomeClass.SUCCESS:
            self.plan.receipts.append(outcome)
            self.plan.send_latencies.append(
                (row.channel, (outcome.finished_at - row.created_at).total_seconds())
            )
        self.update(
            row,
            LogUpdate(
                row.id,
                Status.DELIVERED,
                0.0,
                outcome.provider,
                outcome.vendor_ref,
                None,
                None,
                sent=True,
                delivered=True,
                accepted_at=outcome.finished_at if outcome.outcome == OutcomeClass.SUCCESS else None,
            ),
        )
        self.plan.bump(row.campaign_id, SENT_I)
        self.plan.deliver(row.campaign_id)

    # ---- receipts ----------------------------------------------------------------------------------

    def receipt(self, receipt: ReceiptMessage) -> None:
        row = self.state.get(receipt.log_id)
        if row is None:
            self.plan.ignored_receipts.append((receipt, "unknown log"))
            return
        attempt = self.sent_attempts.get((receipt.log_id, receipt.attempt))
        in_flight = row.status == Status.PROCESSING and receipt.attempt == row.attempts
        if attempt is None and not in_flight:
            self.plan.ignored_receipts.append((receipt, "refused: no such attempt was sent"))
            return
        if attempt is not None and not sent_by(receipt.provider, receipt.vendor_ref, attempt):
            self.plan.ignored_receipts.append((receipt, "refused: not sent by this provider and reference"))
            return
        self.plan.reports.append(receipt)
        decision = decide_receipt(row.status, row.attempts, receipt)
        if isinstance(decision, RecordOnly):
            self.plan.ignored_receipts.append((receipt, decision.why))
        elif isinstance(decision, Deliver):
            self.update(
                row,
                LogUpdate(
                    row.id,
                    Status.DELIVERED,
                    0.0,
                    None,  # a report never changes who the log says sent it
                    None,
                    None,
                    None,
                    sent=True,
                    delivered=True,
                ),
            )
            if not decision.was_sent:
                self.plan.bump(row.campaign_id, SENT_I)
            self.plan.deliver(row.campaign_id)
            self.plan.applied_receipts.append((receipt, Status.DELIVERED))
        elif isinstance(decision, Undeliverable):
            code = receipt.error_code or "UNDELIVERED"
            message = f"delivery report: {receipt.provider_status or receipt.status.value}"
            self.update(
                row,
                LogUpdate(row.id, decision.status, 0.0, None, None, code, message),
            )
            self.plan.bump(row.campaign_id, SENT_I, -1)
            self.plan.bump(row.campaign_id, BOUNCED_I if decision.status == Status.BOUNCED else FAILED_I)
            self.dead_letter(
                row,
                receipt.attempt,
                decision.status,
                DeadLetterReason.PERMANENT_ERROR,
                receipt.provider,
                OutcomeClass.PERMANENT,
                code,
                message,
                row.max_attempts,
            )
            self.plan.applied_receipts.append((receipt, decision.status))


def plan_writes(
    outcomes: Sequence[OutcomeMessage],
    logs: dict[int, LogRow],
    policy: BackoffPolicy | RetryPolicy,
    chains: dict[str, list[str]],
    rng: random.Random | None = None,
    receipts: Sequence[ReceiptMessage] = (),
    routing: RoutingConfig | None = None,
    sent_attempts: Mapping[tuple[int, int], SentAttempt] | None = None,
) -> WritePlan:
    planner = Planner(logs, policy, chains, rng, routing, sent_attempts)
    for outcome in unique_outcomes(outcomes):
        planner.outcome(outcome)
    for receipt in unique_receipts(receipts):
        planner.receipt(receipt)
    return planner.finish()
