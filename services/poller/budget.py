"""How much work the poller may put in one lane's queues: a few seconds of it, not a count (pure).

The poller measures each lane's drain rate from what it published and the queue depth it sees on
successive polls, and keeps at most ``budget_s`` of that rate waiting in the broker (within
``[floor, ceiling]``). A pause, a cancel, a routing change or an urgent message therefore takes effect
within seconds, and a 1 M-log campaign stays in PostgreSQL instead of in the broker's memory.

The lane is refilled only once it has drained below ``refill_below`` of its allowance, and then to the
full allowance: a few large claims and publishes instead of a small top-up every cycle (each cycle is a
claim statement, a publish window and depth queries, whatever its size; topping up 30 logs at a time
cost the poller, PostgreSQL and RabbitMQ more CPU per log than the senders).

A lane's room covers everything its cycle publishes: first the lane's expired leases (older work, sent
again with the same attempt), then new claims with what is left (:func:`claim_room`). After an outage
that left thousands of leases expired they therefore go out at the lane's drain rate, not all at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# The rate is smoothed over about this many seconds (an exponentially weighted mean in time).
SMOOTHING_S = 2.0
# Refill a lane once what waits in it is at most this share of its allowance.
REFILL_BELOW = 0.5


@dataclass(slots=True)
class LaneBudget:
    budget_s: float
    floor: int
    ceiling: int
    rate: float = 0.0  # logs/s drained by the consumers, smoothed
    _depth: int | None = field(default=None, repr=False)
    _at: float = field(default=0.0, repr=False)
    _published: int = field(default=0, repr=False)

    def observe(self, depth: int, now: float) -> None:
        """A measured depth (messages ready in the lane's queues) at monotonic time ``now``."""
        if self._depth is not None and now > self._at:
            offered = self._depth + self._published
            # An idle lane says nothing about its consumers' speed: keep the rate it had.
            if offered > 0:
                sample = max(offered - depth, 0) / (now - self._at)
                weight = 1.0 - math.exp(-(now - self._at) / SMOOTHING_S)
                self.rate = sample if self.rate == 0.0 else self.rate + weight * (sample - self.rate)
        self._depth, self._at, self._published = depth, now, 0

    def published(self, count: int) -> None:
        self._published += count

    def allowed(self) -> int:
        """The most messages this lane should hold in the broker now."""
        return min(max(int(self.rate * self.budget_s), self.floor), self.ceiling)

    def needs_depth(self, estimate: int) -> bool:
        """Whether the broker must be asked for the depth: not while the estimate (an upper bound: the
        last depth measured plus what was published since) already says the lane may be refilled."""
        return estimate > self.allowed() * REFILL_BELOW

    def room(self, depth: int) -> int:
        """How many messages to publish now: none until the lane has drained to its refill level,
        then enough to fill it to the allowance."""
        allowed = self.allowed()
        if depth > allowed * REFILL_BELOW:
            return 0
        return allowed - depth


def claim_room(room: int, reclaimed: int) -> int:
    """How many new logs a lane's cycle may claim once it reclaimed ``reclaimed`` expired leases within
    its ``room`` (the cycle reclaims at most ``room``, and nothing when ``room <= 0``)."""
    return max(room - max(reclaimed, 0), 0) if room > 0 else 0


def poll_again(room: int, taken: int) -> bool:
    """Whether the lane's next cycle starts at once: only when it had room and filled it (``taken``,
    reclaimed plus claimed, reached ``room``), so that more due work may be waiting; never when the lane
    had no room (a full lane waits for its consumers, it does not spin)."""
    return room > 0 and taken >= room
