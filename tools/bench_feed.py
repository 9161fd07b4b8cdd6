"""Feeding a scenario: logs inserted at once (a campaign) or at a fixed rate (open loop), by SQL or API.

The schedule is open-loop: the n-th log is due at ``n / rate`` seconds after the start, whatever the
pipeline does, so a slow pipeline shows as growing latency and never as a slower feed. Each log has
a recipient of its own (``prefix`` + a 7-digit number), so the strict per-recipient order gate never
holds one back and the figures measure queueing, not ordering.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

# Priority classes, named as the scenarios report them (0 high, 1 normal, 2 low).
URGENT, BULK = 0, 1
CLASS_NAMES = {0: "urgent", 1: "bulk", 2: "low"}

# ``count`` SMS logs ``first``..``first + count - 1`` of one priority, to recipients prefix + number.
INSERT_SMS_SQL = """
INSERT INTO communication_logs (channel, recipient, payload, priority)
SELECT 'sms', $3 || lpad(i::text, 7, '0'),
       jsonb_build_object('body', 'Benchmark message ' || i || ': your code is ' || (100000 + i % 900000)),
       $4
FROM generate_series($1::int, $1::int + $2::int - 1) AS i
"""

TICK_S = 0.05  # an open-loop feed inserts what has become due every 50 ms (at most 20 statements/s)


def due(rate_per_s: float, elapsed_s: float, total: int) -> int:
    """How many logs of an open-loop feed of ``total`` at ``rate_per_s`` are due ``elapsed_s`` in."""
    if elapsed_s <= 0:
        return 0
    return min(total, math.floor(rate_per_s * elapsed_s + 1e-9) + 1)


def feed_total(rate_per_s: float, seconds: float) -> int:
    """Logs of a feed at ``rate_per_s`` for ``seconds`` (at least one)."""
    return max(1, round(rate_per_s * seconds))


@dataclass
class FeedResult:
    """What a feed did: how many it sent, over how long, and how late it fell behind its schedule."""

    count: int = 0
    seconds: float = 0.0
    worst_lag_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)  # per request, when fed through the API

    def to_json(self) -> dict[str, float | int]:
        return {
            "fed": self.count,
            "feed_s": round(self.seconds, 2),
            "fed_per_s": round(self.count / self.seconds, 1) if self.seconds > 0 else 0.0,
            "worst_feed_lag_ms": round(self.worst_lag_s * 1000, 1),
        }


# A sender of ``count`` logs numbered from ``first``: by SQL, or through the API.
SendFn = Callable[[int, int], Awaitable[None]]


async def paced(send: SendFn, rate_per_s: float, total: int, single: bool = False) -> FeedResult:
    """Send ``total`` logs at ``rate_per_s``: every tick, what has come due (``single``: one call per
    log, each at its own due time, as separate clients would)."""
    result = FeedResult()
    started = time.monotonic()
    sent = 0
    while sent < total:
        elapsed = time.monotonic() - started
        target = due(rate_per_s, elapsed, total)
        if target > sent:
            result.worst_lag_s = max(result.worst_lag_s, elapsed - sent / rate_per_s)
            if single:
                await send(sent, 1)
                sent += 1
                continue
            await send(sent, target - sent)
            sent = target
        if sent >= total:
            break
        next_due = sent / rate_per_s
        wait = next_due - (time.monotonic() - started)
        if single:
            if wait > 0:
                await asyncio.sleep(wait)
        else:
            await asyncio.sleep(max(wait, TICK_S))
    result.count = sent
    result.seconds = time.monotonic() - started
    return result


def sql_sender(pool: asyncpg.Pool, prefix: str, priority: int) -> SendFn:
    """Logs inserted by SQL, each ``count`` in one statement (one transaction, one ``created_at``)."""

    async def send(first: int, count: int) -> None:
        await pool.execute(INSERT_SMS_SQL, first, count, prefix, priority)

    return send


async def insert_at_once(pool: asyncpg.Pool, prefix: str, priority: int, total: int, chunk: int) -> float:
    """A campaign: ``total`` logs in chunks of ``chunk`` (each its own transaction); returns seconds."""
    started = time.monotonic()
    for first in range(0, total, chunk):
        await pool.execute(INSERT_SMS_SQL, first, min(chunk, total - first), prefix, priority)
    return time.monotonic() - started
