"""Every decision the responder takes about one log (pure): what an outcome does, what a delivery
report does, where and when a retry goes. services/responder/plan.py carries them out.

An outcome of the log's current attempt (older attempts and settled logs are ignored):

- ``deferred`` (a local refusal: pacing, rate-limit slot, every circuit open): back to PENDING at the
  time the sender expects the slot or the probe, the attempt count unchanged; past ``max_deferrals``
  a deferral counts as a failed attempt, so that a log cannot wait forever;
- ``success``: SENT;
- ``in_doubt`` (a provider without idempotency keys may have it, and its policy is ``hold``):
  IN_DOUBT, with a dead letter, for an operator;
- ``permanent``: FAILED or BOUNCED, unless the refusal is about the channel (the recipient cannot be
  reached on it) and a fallback channel remains: then the next attempt goes out on that channel;
- attempts exhausted on this channel: the next fallback channel with a fresh budget, else FAILED;
  except after an ``unknown`` outcome, which never moves a log to another channel (the recipient may
  have the message already);
- ``unknown`` (timeout or connection lost after the request was written): the same provider again
  with the same idempotency key, so that a provider honouring keys answers from its ledger;
- ``recoverable``: the next provider of the chain at once;
- ``transient``: the same provider after a backoff, unless this log failed ``failover_after`` times
  in a row there: then the next provider of the chain at once. A rate limit (429) waits for its
  Retry-After on the same provider, unless that is longer than the channel tolerates: then the next
  provider at once.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from shared.core.models import (
    FINAL_RECEIPTS,
    DeadLetterReason,
    OutcomeClass,
    OutcomeMessage,
    ReceiptMessage,
    ReceiptStatus,
    Status,
)
from shared.core.recipients import reachable_on
from shared.core.retry import RetryPolicy

# Permanent refusals that concern the channel, not the recipient: another channel may reach them.
CHANNEL_REFUSALS = frozenset({"UNDELIVERABLE", "REENGAGEMENT_REQUIRED", "NOT_ON_CHANNEL"})
# A switch to another provider or channel goes out this share of the first backoff step later.
SWITCH_DELAY_SHARE = 0.2
MIN_DEFERRAL_S = 0.05
MAX_DEFERRAL_S = 3600.0


@dataclass(frozen=True, slots=True)
class LogState:
    """The columns of a communication log the decisions depend on."""

    status: Status
    attempts: int
    max_attempts: int
    provider: str | None
    channel: str = ""  # the channel the log is on now (its own, or a fallback channel)
    provider_failures: int = 0  # consecutive transient failures on ``provider``
    channel_attempts_from: int = 0  # attempts made before the current channel
    key_attempt: int | None = None  # the attempt whose idempotency key the next call reuses
    deferrals: int = 0


@dataclass(frozen=True, slots=True)
class Rules:
    """What the configuration says for the log's current channel."""

    retry: RetryPolicy
    chain: Sequence[str] = ()  # providers a retry may move to, in order
    next_channel: str | None = None  # the fallback channel to move to, if any is usable
    failover_after: int = 2
    retry_after_tolerance_s: float = 30.0
    max_deferrals: int = 1000


@dataclass(frozen=True, slots=True)
class MarkSent:
    provider: str | None


@dataclass(frozen=True, slots=True)
class ScheduleRetry:
    delay_s: float
    provider: str | None
    switched_provider: bool
    key_attempt: int | None = None  # set after an unknown outcome: reuse that attempt's key
    provider_failures: int = 0
    channel: str | None = None  # set when the log moves to a fallback channel


@dataclass(frozen=True, slots=True)
class Defer:
    delay_s: float
    code: str


@dataclass(frozen=True, slots=True)
class GiveUp:
    status: Status  # FAILED, BOUNCED or IN_DOUBT
    reason: DeadLetterReason


@dataclass(frozen=True, slots=True)
class Ignore:
    """A duplicate or stale outcome (another attempt is current, or the log is already settled)."""

    why: str


Decision = MarkSent | ScheduleRetry | Defer | GiveUp | Ignore


def next_provider(chain: Sequence[str], current: str | None) -> str | None:
    """The provider after ``current`` in the fallback chain, wrapping round; ``current`` if alone."""
    if not chain:
        return current
    if current is None or current not in chain:
        return chain[0]
    return chain[(list(chain).index(current) + 1) % len(chain)]


def next_channel(
    requested: str, current: str, fallbacks: Sequence[str], routed: Collection[str]
) -> str | None:
    """The fallback channel after ``current`` (``requested`` first, then ``fallbacks`` in order) that
    can reach the recipient and has a provider; ``None`` when none is left."""
    order = list(dict.fromkeys([requested, *fallbacks]))  # each channel once, in first-named order
    if current not in order:
        return None
    for channel in order[order.index(current) + 1 :]:
        if reachable_on(requested, channel) and channel in routed:
            return channel
    return None


def attempts_allowed(retry: RetryPolicy, log: LogState) -> int:
    return retry.attempts_allowed(log.max_attempts)


def decide_outcome(
    outcome: OutcomeMessage, log: LogState, rules: Rules, rng: random.Random | None = None
) -> Decision:
    if (
        outcome.outcome == OutcomeClass.SUCCESS
        and log.status == Status.PENDING
        and log.attempts == outcome.attempt
    ):
        # A copy of this attempt failed and put the log back to PENDING, and another copy reached the
        # provider: it did send it, so the log is SENT (no further attempt may go). (After a deferral
        # the count went back: the next claim repeats the attempt under the same key, a replay.)
        return MarkSent(outcome.provider)
    if log.status != Status.PROCESSING:
        return Ignore(f"log is {log.status}")
    if log.attempts != outcome.attempt:
        return Ignore(f"outcome of attempt {outcome.attempt}, log is at attempt {log.attempts}")
    klass = outcome.outcome
    if klass == OutcomeClass.DEFERRED:
        if log.deferrals < rules.max_deferrals:
            delay = min(max(outcome.retry_after_s or 1.0, MIN_DEFERRAL_S), MAX_DEFERRAL_S)
            return Defer(delay, outcome.error_code or "DEFERRED")
        klass = OutcomeClass.TRANSIENT
    if klass == OutcomeClass.SUCCESS:
        return MarkSent(outcome.provider)
    if klass == OutcomeClass.IN_DOUBT:  # held for an operator (the sender's in-doubt policy)
        return GiveUp(Status.IN_DOUBT, DeadLetterReason.IN_DOUBT)
    used = max(outcome.attempt - log.channel_attempts_from, 1)  # attempts on the current channel
    if klass == OutcomeClass.PERMANENT:
        if outcome.error_code in CHANNEL_REFUSALS and rules.next_channel is not None:
            return move_channel(rules, rng)
        return GiveUp(Status.BOUNCED if outcome.bounced else Status.FAILED, DeadLetterReason.PERMANENT_ERROR)
    if used >= attempts_allowed(rules.retry, log):
        if klass != OutcomeClass.UNKNOWN and rules.next_channel is not None:
            return move_channel(rules, rng)
        return GiveUp(Status.FAILED, DeadLetterReason.ATTEMPTS_EXHAUSTED)
    streak = log.provider_failures + 1 if outcome.provider == log.provider else 1
    if klass == OutcomeClass.UNKNOWN:
        return ScheduleRetry(
            rules.retry.delay(used, rng=rng),
            outcome.provider,
            switched_provider=False,
            key_attempt=log.key_attempt or outcome.attempt,
            provider_failures=streak,
        )
    if klass == OutcomeClass.RECOVERABLE:
        if outcome.error_code == "NO_PROVIDER" and rules.next_channel is not None:
            return move_channel(rules, rng)
        return switch_or_stay(outcome, rules, used, streak, rng, retry_after=None)
    if is_rate_limit(outcome):
        # The provider works and asks us to slow down: wait as asked, unless it asks for too long.
        if outcome.retry_after_s is not None and outcome.retry_after_s > rules.retry_after_tolerance_s:
            return switch_or_stay(outcome, rules, used, streak, rng, retry_after=outcome.retry_after_s)
    elif streak >= rules.failover_after:
        return switch_or_stay(outcome, rules, used, streak, rng, retry_after=outcome.retry_after_s)
    return ScheduleRetry(
        rules.retry.delay(used, outcome.retry_after_s, rng=rng),
        outcome.provider,
        switched_provider=False,
        provider_failures=streak,
    )


def is_rate_limit(outcome: OutcomeMessage) -> bool:
    """A 429 or a provider's own rate-limit code (RATE_LIMITED, PAIR_RATE_LIMITED, ...)."""
    return outcome.retry_after_s is not None or (outcome.error_code or "").endswith("RATE_LIMITED")


def switch_or_stay(
    outcome: OutcomeMessage,
    rules: Rules,
    used: int,
    streak: int,
    rng: random.Random | None,
    retry_after: float | None,
) -> ScheduleRetry:
    """The next provider of the chain at once; the same one after a backoff when it is alone."""
    provider = next_provider(rules.chain, outcome.provider)
    if provider != outcome.provider:
        return ScheduleRetry(rules.retry.delay(1, rng=rng) * SWITCH_DELAY_SHARE, provider, True)
    return ScheduleRetry(
        rules.retry.delay(used, retry_after, rng=rng), provider, False, provider_failures=streak
    )


def move_channel(rules: Rules, rng: random.Random | None) -> ScheduleRetry:
    assert rules.next_channel is not None
    return ScheduleRetry(
        rules.retry.delay(1, rng=rng) * SWITCH_DELAY_SHARE, None, True, channel=rules.next_channel
    )


# ---- delivery reports ------------------------------------------------------------------------------
#
# Receipts and outcomes may arrive in any order, and any number of times:
# - every receipt is recorded in ``delivery_receipts`` (unique on log, attempt and status);
# - DELIVERED makes a SENT log DELIVERED; it also settles a log waiting for a retry (PENDING), or
#   whose later attempt is in flight, because the provider did deliver it;
# - BOUNCED / FAILED makes a SENT log (of that attempt) BOUNCED / FAILED, with a dead letter;
# - a final receipt for the attempt in flight (PROCESSING: its outcome is not applied yet) is only
#   recorded: when the outcome arrives, the responder finds it (``LogRow.early_receipt``) and applies
#   both at once;
# - anything else (a log already final, a stale attempt's failure, progress reports) is only recorded.
#
# Before all that, a receipt must belong to the attempt it names (:func:`sent_by`): the provider that
# sent that attempt, with the vendor reference it answered (when it gave one). Anything else (another
# provider's report, a made-up reference, an attempt never sent) is neither recorded nor applied. A
# report for the attempt in flight cannot be checked yet: it is recorded, and applied only if the
# outcome that arrives names the same provider and reference.


@dataclass(frozen=True, slots=True)
class RecordOnly:
    why: str


@dataclass(frozen=True, slots=True)
class Deliver:
    was_sent: bool  # False: the log never got to SENT (counts as sent and delivered at once)


@dataclass(frozen=True, slots=True)
class Undeliverable:
    status: Status  # FAILED or BOUNCED


ReceiptDecision = RecordOnly | Deliver | Undeliverable


@dataclass(frozen=True, slots=True)
class SentAttempt:
    """Who sent one attempt, as its outcome said (``delivery_attempts``)."""

    provider: str | None
    vendor_ref: str | None


def sent_by(provider: str | None, vendor_ref: str | None, attempt: SentAttempt) -> bool:
    if provider is None or attempt.provider != provider:
        return False
    return attempt.vendor_ref is None or attempt.vendor_ref == vendor_ref


SETTLED = frozenset({Status.DELIVERED, Status.FAILED, Status.BOUNCED, Status.CANCELLED, Status.IN_DOUBT})


def decide_receipt(status: Status, attempts: int, receipt: ReceiptMessage) -> ReceiptDecision:
    if receipt.status not in FINAL_RECEIPTS:
        return RecordOnly(f"progress report ({receipt.provider_status or receipt.status.value})")
    if receipt.attempt > attempts:
        return RecordOnly(f"receipt for attempt {receipt.attempt}, log is at attempt {attempts}")
    if status in SETTLED:
        return RecordOnly(f"log is {status}")
    if receipt.status == ReceiptStatus.DELIVERED:
        if status == Status.PROCESSING and receipt.attempt == attempts:
            return RecordOnly("outcome not applied yet: applied with it")
        return Deliver(was_sent=status == Status.SENT)
    if receipt.attempt != attempts:
        return RecordOnly(f"failure report of attempt {receipt.attempt}, log is at attempt {attempts}")
    if status == Status.SENT:
        return Undeliverable(Status.BOUNCED if receipt.status == ReceiptStatus.BOUNCED else Status.FAILED)
    return RecordOnly(
        "outcome not applied yet: applied with it" if status == Status.PROCESSING else f"log is {status}"
    )
