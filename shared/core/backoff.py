"""Retry delays: exponential with jitter, capped, honouring provider hints such as Retry-After.

The two rules :class:`shared.core.retry.RetryPolicy` applies whatever its mode.
"""

from __future__ import annotations

import random


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
