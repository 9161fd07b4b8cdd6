"""The one retry policy type: when the next attempt goes, and how many attempts a log gets.

The global default comes from ``SWITCHBOARD_BACKOFF_*`` (:meth:`RetryPolicy.exponential`); a channel's
own policy (``channel_policies``) replaces it for that channel. What the responder does with an
outcome is decided in services/responder/decision.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from shared.core.backoff import exponential_ceiling, jittered_delay


class RetryMode(StrEnum):
    NONE = "none"
    LINEAR = "linear"  # initial * n
    EXPONENTIAL = "exponential"  # initial * 2^(n-1)
    CUSTOM = "custom"  # delays[n-1], the last one repeating


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When retries go and how many a log gets (global default or a channel's policy); every delay is
    capped at ``max_s``, except a provider's Retry-After."""

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
    def exponential(
        cls,
        base_s: float = 5.0,
        cap_s: float = 300.0,
        jitter: float = 0.2,
        retry_after_limit_s: float = 3600.0,
    ) -> RetryPolicy:
        """min(base * 2^(n-1), cap), jittered: the global default (``SWITCHBOARD_BACKOFF_*``)."""
        return cls(RetryMode.EXPONENTIAL, base_s, cap_s, None, (), jitter, retry_after_limit_s)

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
        """How many attempts a log of ``max_attempts`` gets under this policy."""
        if self.mode == RetryMode.NONE:
            return 1
        return min(log_max_attempts, self.max_attempts) if self.max_attempts else log_max_attempts
