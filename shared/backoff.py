"""Retry delays: exponential with jitter, capped, honouring provider hints such as Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    base_s: float = 5.0
    cap_s: float = 300.0
    jitter: float = 0.2  # the delay is drawn from [(1 - jitter) * d, d]
    # A provider's Retry-After is honoured in full (it may exceed the cap), up to this sanity bound.
    retry_after_limit_s: float = 3600.0

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay after failed attempt ``attempt`` (1-based): min(base * 2^(n-1), cap)."""
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        exponent = min(attempt - 1, 62)
        return float(min(self.base_s * (2**exponent), self.cap_s))

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before the next attempt; never shorter than a provider's Retry-After."""
        top = self.ceiling(attempt)
        draw = (rng or random).uniform(1.0 - self.jitter, 1.0)
        chosen = top * draw
        if retry_after is not None:
            chosen = max(chosen, min(retry_after, self.retry_after_limit_s))
        return chosen
