"""Retry delays: exponential with jitter, capped, honouring provider hints such as Retry-After.

:class:`BackoffPolicy` is the global default (``SWITCHBOARD_BACKOFF_*``); a channel's own policy
(:class:`shared.retry.RetryPolicy`) shares the two rules below, so both treat jitter and
Retry-After the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def exponential_ceiling(base_s: float, cap_s: float, attempt: int) -> float:
    """min(base * 2^(n-1), cap) after failed attempt ``attempt`` (1-based)."""
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    return float(min(base_s * 2 ** min(attempt - 1, 62), cap_s))


def jittered_delay(
    ceiling: float,
    jitter: float,
    retry_after: float | None,
    retry_after_limit_s: float,
    rng: random.Random | None = None,
) -> float:
    """A delay drawn from [(1 - jitter) * ceiling, ceiling], never shorter than a provider's
    Retry-After (honoured in full, even beyond the cap, up to ``retry_after_limit_s``)."""
    chosen = ceiling * (rng or random).uniform(1.0 - jitter, 1.0)
    if retry_after is not None:
        chosen = max(chosen, min(retry_after, retry_after_limit_s))
    return chosen


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    base_s: float = 5.0
    cap_s: float = 300.0
    jitter: float = 0.2  # the delay is drawn from [(1 - jitter) * d, d]
    retry_after_limit_s: float = 3600.0

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay after failed attempt ``attempt`` (1-based): min(base * 2^(n-1), cap)."""
        return exponential_ceiling(self.base_s, self.cap_s, attempt)

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before the next attempt; never shorter than a provider's Retry-After."""
        return jittered_delay(self.ceiling(attempt), self.jitter, retry_after, self.retry_after_limit_s, rng)
