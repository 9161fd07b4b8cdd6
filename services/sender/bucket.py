"""The token bucket's arithmetic (pure), which the SQL in services/sender/ratelimit.py carries out.

A provider's limit is ``rate`` tokens per second with room for ``burst``. A replica hands a granted
token at once to a message already waiting, or throws it away after ``hold_s`` (its lease), so a
call leaves at most ``hold_s`` after its token was granted. The bucket therefore holds ``burst -
rate * hold_s`` (never less than half the burst, nor less than one token): in any window of T
seconds at most ``burst + rate * T`` calls leave, whichever replicas make them. High-priority
messages may also draw on the last ``reserved_share`` of the bucket; the others stop above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A replica short of tokens asks again once a batch of this many seconds' worth has refilled, so a
# busy provider costs each replica about 1 / FETCH_INTERVAL_S store round trips a second.
FETCH_INTERVAL_S = 0.02


@dataclass(frozen=True, slots=True)
class Limit:
    rate: float  # tokens per second
    burst: int
    reserved_share: float = 0.0
    hold_s: float = 0.0  # how long after its grant a token may still be used

    @property
    def capacity(self) -> float:
        burst = float(max(1, self.burst))
        return max(1.0, burst / 2, burst - self.rate * self.hold_s)

    @property
    def reserve(self) -> float:
        """Tokens only high priority may take."""
        return self.reserved_share * self.capacity


@dataclass(frozen=True, slots=True)
class Grant:
    high: int
    other: int
    tokens_left: float

    @property
    def total(self) -> int:
        return self.high + self.other


def take(tokens: float, elapsed_s: float, limit: Limit, want_high: int, want_other: int) -> Grant:
    """Refill for ``elapsed_s``, then grant high priority first, the others down to the reserve."""
    available = min(limit.capacity, tokens + limit.rate * max(elapsed_s, 0.0))
    high = max(0, min(want_high, math.floor(available)))
    other = max(0, min(want_other, math.floor(available - high - limit.reserve)))
    return Grant(high, other, available - high - other)


def wait_s(grant: Grant, limit: Limit, high: bool, wanted: int = 1) -> float:
    """How long until the bucket holds a batch of tokens this priority may take: as many as are
    wanted, up to ``FETCH_INTERVAL_S`` of refill (and never more than the bucket holds)."""
    batch = max(1.0, min(float(wanted), limit.rate * FETCH_INTERVAL_S, limit.capacity - limit.reserve))
    needed = batch + (0.0 if high else limit.reserve)
    return max(0.0, (needed - grant.tokens_left) / limit.rate)
