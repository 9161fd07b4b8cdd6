"""What the responder does with an outcome: a pure decision, carried out by the consumer."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from shared.backoff import BackoffPolicy, exponential_ceiling, jittered_delay
from shared.models import DeadLetterReason, OutcomeClass, OutcomeMessage, Status


class RetryMode(StrEnum):
    NONE = "none"
    LINEAR = "linear"  # initial * n
    EXPONENTIAL = "exponential"  # initial * 2^(n-1)
    CUSTOM = "custom"  # delays[n-1], the last one repeating


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A channel's retry policy (``channel_policies``); every delay is capped at ``max_s``."""

    mode: RetryMode = RetryMode.EXPONENTIAL
    initial_s: float = 5.0
    max_s: float = 300.0
    max_attempts: int | None = None  # caps each log's own max_attempts when set
    delays: tuple[float, ...] = ()
    jitter: float = 0.2  # the delay is drawn from [(1 - jitter) * d, d]
    # A provider's Retry-After is honoured in full (it may exceed max_s), up to this sanity bound.
    retry_after_limit_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.mode == RetryMode.CUSTOM and not self.delays:
            raise ValueError("a custom retry policy needs its list of delays")
        if self.initial_s < 0 or self.max_s < 0 or any(d < 0 for d in self.delays):
            raise ValueError("delays cannot be negative")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")

    @classmethod
    def from_backoff(cls, policy: BackoffPolicy) -> RetryPolicy:
        return cls(
            RetryMode.EXPONENTIAL,
            policy.base_s,
            policy.cap_s,
            None,
            (),
            policy.jitter,
            policy.retry_after_limit_s,
        )

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay after failed attempt ``attempt`` (1-based), capped at ``max_s``."""
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        if self.mode == RetryMode.LINEAR:
            return float(min(self.initial_s * attempt, self.max_s))
        if self.mode == RetryMode.CUSTOM:
            return float(min(self.delays[min(attempt, len(self.delays)) - 1], self.max_s))
        return exponential_ceiling(self.initial_s, self.max_s, attempt)

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds before the next attempt; never shorter than a provider's Retry-After."""
        return jittered_delay(self.ceiling(attempt), self.jitter, retry_after, self.retry_after_limit_s, rng)

    def attempts_allowed(self, log_max_attempts: int) -> int:
        if self.mode == RetryMode.NONE:
            return 1
        return min(log_max_attempts, self.max_attempts) if self.max_attempts else log_max_attempts


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
    status: Status  # FAILED, BOUNCED or IN_DOUBT
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
    policy: BackoffPolicy | RetryPolicy,
    chain: list[str],
    rng: random.Random | None = None,
) -> Decision:
    allowed = (
        policy.attempts_allowed(log.max_attempts) if isinstance(policy, RetryPolicy) else log.max_attempts
    )
    if log.status != Status.PROCESSING:
        return Ignore(f"log is {log.status}")
    if log.attempts != outcome.attempt:
        return Ignore(f"outcome of attempt {outcome.attempt}, log is at attempt {log.attempts}")
    if outcome.outcome == OutcomeClass.SUCCESS:
        return MarkSent(outcome.provider)
    if outcome.outcome == OutcomeClass.IN_DOUBT:  # held for an operator (the sender's in-doubt policy)
        return GiveUp(Status.IN_DOUBT, DeadLetterReason.IN_DOUBT)
    if outcome.outcome == OutcomeClass.PERMANENT:
        return GiveUp(Status.BOUNCED if outcome.bounced else Status.FAILED, DeadLetterReason.PERMANENT_ERROR)
    if outcome.attempt >= allowed:
        return GiveUp(Status.FAILED, DeadLetterReason.ATTEMPTS_EXHAUSTED)
    if outcome.outcome == OutcomeClass.RECOVERABLE:
        provider = next_provider(chain, outcome.provider)
        switched = provider != outcome.provider
        # A different provider can be tried at once; the same one again needs the usual backoff.
        delay = policy.delay(1, rng=rng) * 0.2 if switched else policy.delay(outcome.attempt, rng=rng)
        return ScheduleRetry(delay, provider, switched)
    delay = policy.delay(outcome.attempt, outcome.retry_after_s, rng=rng)
    return ScheduleRetry(delay, outcome.provider, switched_provider=False)
