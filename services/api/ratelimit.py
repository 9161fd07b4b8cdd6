"""Per-key rate limiting: token buckets (pure arithmetic on a clock the caller passes in).

Each key has a main bucket (``rate`` requests per second, ``burst`` capacity). High-priority sends
that find it empty may draw on a reserve bucket holding ``share`` of the rate and burst: they can
go past the limit by that share, and nothing else can touch the reserve.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    rate: float
    capacity: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, capacity: float, now: float) -> TokenBucket:
        return cls(rate=rate, capacity=capacity, tokens=capacity, updated=now)

    def refill(self, now: float) -> None:
        elapsed = max(now - self.updated, 0.0)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        self.refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def wait_s(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are there (after a refill)."""
        if self.rate <= 0:
            return float("inf")
        return max(cost - self.tokens, 0.0) / self.rate


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0
    reserve: bool = False


@dataclass(slots=True)
class KeyLimit:
    main: TokenBucket
    reserve: TokenBucket | None

    @classmethod
    def create(cls, rate: float, burst: int, share: float, now: float) -> KeyLimit:
        reserve = None
        if share > 0:
            reserve = TokenBucket.full(rate * share, max(burst * share, 1.0), now)
        return cls(main=TokenBucket.full(rate, float(burst), now), reserve=reserve)

    def check(self, now: float, high_priority: bool) -> Decision:
        if self.main.take(now):
            return Decision(True)
        if high_priority and self.reserve is not None and self.reserve.take(now):
            return Decision(True, reserve=True)
        return Decision(False, retry_after_s=self.main.wait_s())


class RateLimiter:
    """The buckets of every key seen recently (least recently used ones are forgotten)."""

    def __init__(self, rate: float, burst: int, share: float, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.share = share
        self.max_keys = max_keys
        self._limits: OrderedDict[str, KeyLimit] = OrderedDict()

    def check(
        self, key_id: str, now: float, high_priority: bool = False, rate: float | None = None
    ) -> Decision:
        limit = self._limits.get(key_id)
        if limit is None:
            key_rate = rate or self.rate
            burst = self.burst if rate is None else max(int(rate * self.burst / self.rate), 1)
            limit = KeyLimit.create(key_rate, burst, self.share, now)
            self._limits[key_id] = limit
            if len(self._limits) > self.max_keys:
                self._limits.popitem(last=False)
        else:
            self._limits.move_to_end(key_id)
        return limit.check(now, high_priority)
