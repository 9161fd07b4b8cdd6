"""Turning a batch of outcomes and receipts and the current log rows into the writes to make (pure).

Outcomes are applied first, then receipts, each against the state the previous ones left; every log
gets at most one (merged) row update per batch.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar

from services.responder.decision import (
    Decision,
    Defer,
    Deliver,
    GiveUp,
    Ignore,
    LogState,
    MarkSent,
    RecordOnly,
    Rules,
    ScheduleRetry,
    SentAttempt,
    Undeliverable,
    decide_outcome,
    decide_receipt,
    next_channel,
    sent_by,
)
from shared.core.models import (
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
from shared.core.retry import RetryPolicy
from shared.core.routing import RoutingConfig


@dataclass(frozen=True, slots=True)
class Defaults:
    """The global settings that apply where a channel's policy says nothing."""

    retry: RetryPolicy = field(default_factory=RetryPolicy.exponential)
    failover_after: int = 2
    retry_after_tolerance_s: float = 30.0
    max_deferrals: int = 1000


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
    prev_provider: str | None = None  # provider, outcome and channel of attempt ``attempts - 1``
    prev_outcome: str | None = None
    early_receipt: EarlyReceipt | None = None
    prev_channel: str | None = None
    delivery_channel: str | None = None  # set once the log moved to a fallback channel
    fallback_channels: tuple[str, ...] = ()
    channel_attempts_from: int = 0
    key_attempt: int | None = None
    provider_failures: int = 0
    deferrals: int = 0

    @property
    def current_channel(self) -> str:
        return self.delivery_channel or self.channel


T = TypeVar("T")


def _kept(earlier: T | None, later: T | None) -> T | None:
    return earlier if later is None else later


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
    # The fields below are left as they are when None.
    attempts: int | None = None
    key_attempt: int | None = None  # 0 clears it
    provider_failures: int | None = None
    delivery_channel: str | None = None
    channel_attempts_from: int | None = None
    deferred: bool = False  # counts one more deferral

    def then(self, later: LogUpdate) -> LogUpdate:
        """This update followed by ``later`` in the same batch, as one."""

        return replace(
            later,
            provider=later.provider or self.provider,
            vendor_ref=later.vendor_ref or self.vendor_ref,
            sent=self.sent or later.sent,
            accepted_at=self.accepted_at or later.accepted_at,
            attempts=_kept(self.attempts, later.attempts),
            key_attempt=_kept(self.key_attempt, later.key_attempt),
            provider_failures=_kept(self.provider_failures, later.provider_failures),
            delivery_channel=_kept(self.delivery_channel, later.delivery_channel),
            channel_attempts_from=_kept(self.channel_attempts_from, later.channel_attempts_from),
            deferred=self.deferred or later.deferred,
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
    deferrals: list[tuple[OutcomeMessage, Defer]] = field(default_factory=list)
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
    if outcome.channel != row.channel and (row.prev_channel or row.channel) != outcome.channel:
        return FallbackReason.CHANNEL_FALLBACK.value  # the first attempt on a fallback channel
    if outcome.fallback_reason is not None:
        return outcome.fallback_reason.value
    if (
        row.prev_provider is not None
        and outcome.provider is not None
        and outcome.provider != row.prev_provider
        and row.prev_outcome
        in (OutcomeClass.TRANSIENT.value, OutcomeClass.RECOVERABLE.value, OutcomeClass.PERMANENT.value)
    ):
        return FallbackReason.PRIMARY_FAILED.value
    return None


class Planner:
    def __init__(
        self,
        logs: dict[int, LogRow],
        defaults: Defaults,
        chains: dict[str, list[str]],
        rng: random.Random | None,
        routing: RoutingConfig | None,
        sent_attempts: Mapping[tuple[int, int], SentAttempt] | None = None,
    ) -> None:
        self.state = dict(logs)
        self.sent_attempts = dict(sent_attempts or {})
        self.defaults = defaults
        self.chains = chains
        self.rng = rng
        self.routing = routing
        self.plan = WritePlan()
        self._updates: dict[int, LogUpdate] = {}

    def update(self, row: LogRow, update: LogUpdate) -> None:
        earlier = self._updates.get(row.id)
        self._updates[row.id] = earlier.then(update) if earlier else update
        self.state[row.id] = replace(
            row,
            status=update.status,
            provider=update.provider or row.provider,
            attempts=row.attempts if update.attempts is None else update.attempts,
            key_attempt=row.key_attempt if update.key_attempt is None else (update.key_attempt or None),
            provider_failures=(
                row.provider_failures if update.provider_failures is None else update.provider_failures
            ),
            delivery_channel=update.delivery_channel or row.delivery_channel,
            channel_attempts_from=(
                row.channel_attempts_from
                if update.channel_attempts_from is None
                else update.channel_attempts_from
            ),
            deferrals=row.deferrals + update.deferred,
        )

    def finish(self) -> WritePlan:
        self.plan.updates = list(self._updates.values())
        return self.plan

    def retry_policy(self, row: LogRow) -> RetryPolicy:
        if self.routing is not None:
            return self.routing.policy(row.current_channel).retry or self.defaults.retry
        return self.defaults.retry

    def chain(self, row: LogRow, channel: str | None = None) -> list[str]:
        channel = channel or row.current_channel
        if self.routing is not None and self.routing.providers:
            return self.routing.fallback_chain(row.tenant, channel, row.recipient)
        return self.chains.get(channel, [])

    def rules(self, row: LogRow) -> Rules:
        channel = row.current_channel
        policy = self.routing.policy(channel) if self.routing is not None else None
        fallbacks = row.fallback_channels or (
            self.routing.fallback_channels(row.tenant, row.channel) if self.routing is not None else ()
        )
        routed = {c for c in fallbacks if self.chain(row, c)}
        return Rules(
            retry=self.retry_policy(row),
            chain=self.chain(row),
            next_channel=next_channel(row.channel, channel, fallbacks, routed) if fallbacks else None,
            failover_after=(policy and policy.failover_after) or self.defaults.failover_after,
            retry_after_tolerance_s=(
                policy.retry_after_tolerance_s
                if policy is not None and policy.retry_after_tolerance_s is not None
                else self.defaults.retry_after_tolerance_s
            ),
            max_deferrals=self.defaults.max_deferrals,
        )

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
        state = LogState(
            row.status,
            row.attempts,
            row.max_attempts,
            row.provider,
            row.current_channel,
            row.provider_failures,
            row.channel_attempts_from,
            row.key_attempt,
            row.deferrals,
        )
        rules = self.rules(row)
        decision: Decision = decide_outcome(outcome, state, rules, self.rng)
        if isinstance(decision, Ignore):
            self.plan.ignored.append((outcome, decision.why))
            return
        if isinstance(decision, Defer):
            self.deferred(outcome, row, decision)
            return
        if outcome.outcome == OutcomeClass.DEFERRED:  # deferred too often: now a failed attempt
            outcome = outcome.model_copy(update={"outcome": OutcomeClass.TRANSIENT})
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
                    key_attempt=decision.key_attempt or 0,
                    provider_failures=decision.provider_failures,
                    delivery_channel=decision.channel,
                    channel_attempts_from=outcome.attempt if decision.channel is not None else None,
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
                    key_attempt=0,
                ),
            )
            self.plan.bump(row.campaign_id, BOUNCED_I if decision.status == Status.BOUNCED else FAILED_I)
            self.dead_letter(
                row,
                outcome.attempt,
                decision.status,
                decision.reason,
                outcome.provider,
                outcome.outcome,
                outcome.error_code,
                outcome.error_message,
                rules.retry.attempts_allowed(row.max_attempts),
            )

    def deferred(self, outcome: OutcomeMessage, row: LogRow, decision: Defer) -> None:
        """Back to PENDING at the expected slot, as if this attempt had never been claimed."""
        self.update(
            row,
            LogUpdate(
                row.id,
                Status.PENDING,
                decision.delay_s,
                None,
                None,
                decision.code,
                outcome.error_message,
                attempts=outcome.attempt - 1,
                deferred=True,
            ),
        )
        self.plan.deferrals.append((outcome, decision))

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
                    attempts=outcome.attempt,
                    key_attempt=0,
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
                attempts=outcome.attempt,
                key_attempt=0,
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
    defaults: Defaults,
    chains: dict[str, list[str]],
    rng: random.Random | None = None,
    receipts: Sequence[ReceiptMessage] = (),
    routing: RoutingConfig | None = None,
    sent_attempts: Mapping[tuple[int, int], SentAttempt] | None = None,
) -> WritePlan:
    planner = Planner(logs, defaults, chains, rng, routing, sent_attempts)
    for outcome in unique_outcomes(outcomes):
        planner.outcome(outcome)
    for receipt in unique_receipts(receipts):
        planner.receipt(receipt)
    return planner.finish()
