"""What the responder does with an outcome: a pure decision, carried out by the consumer."""

from __future__ import annotations

import random
from dataclasses import dataclass

from shared.backoff import BackoffPolicy
from shared.models import DeadLetterReason, OutcomeClass, OutcomeMessage, Status


@dataclass(frozen=True, slots=True)
class LogState:
    """The columns of a communication log the decision depends on."""

    status: Status
    attempts: int
    max_attempts: int
    provider: str | None


@dataclass(frozen=True, slots=True)
class MarkSent:
    provider: str | None


@dataclass(frozen=True, slots=True)
class ScheduleRetry:
    delay_s: float
    provider: str | None
    switched_provider: bool


@dataclass(frozen=True, slots=True)
class GiveUp:
    status: Status  # FAILED or BOUNCED
    reason: DeadLetterReason


@dataclass(frozen=True, slots=True)
class Ignore:
    """A duplicate or stale outcome (another attempt is current, or the log is already settled)."""

    why: str


Decision = MarkSent | ScheduleRetry | GiveUp | Ignore


def next_provider(chain: list[str], current: str | None) -> str | None:
    """The provider after ``current`` in the fallback chain, wrapping round; ``current`` if alone."""
    if not chain:
        return current
    if current not in chain:
        return chain[0]
    return chain[(chain.index(current) + 1) % len(chain)]


def decide(
    outcome: OutcomeMessage,
    log: LogState,
    policy: BackoffPolicy,
    chain: list[str],
    rng: random.Random | None = None,
) -> Decision:
    if log.status != Status.PROCESSING:
        return Ignore(f"log is {log.status}")
    if log.attempts != outcome.attempt:
        return Ignore(f"outcome of attempt {outcome.attempt}, log is at attempt {log.attempts}")
    if outcome.outcome == OutcomeClass.SUCCESS:
        return MarkSent(outcome.provider)
    if outcome.outcome == OutcomeClass.PERMANENT:
        return GiveUp(Status.BOUNCED if outcome.bounced else Status.FAILED, DeadLetterReason.PERMANENT_ERROR)
    if outcome.attempt >= log.max_attempts:
        return GiveUp(Status.FAILED, DeadLetterReason.ATTEMPTS_EXHAUSTED)
    if outcome.outcome == OutcomeClass.RECOVERABLE:
        provider = next_provider(chain, outcome.provider)
        switched = provider != outcome.provider
        # A different provider can be tried at once; the same one again needs the usual backoff.
        delay = policy.delay(1, rng=rng) * 0.2 if switched else policy.delay(outcome.attempt, rng=rng)
        return ScheduleRetry(delay, provider, switched)
    return ScheduleRetry(
        policy.delay(outcome.attempt, outcome.retry_after_s, rng=rng), outcome.provider, switched_provider=False
    )
