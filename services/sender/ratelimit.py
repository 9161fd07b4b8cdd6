"""Per-provider rate limits that hold across every sender replica together.

The bucket lives in PostgreSQL (``provider_buckets``, one row per provider); a replica takes tokens
in batches, sized to the messages waiting in it right now, with one UPDATE (see services/sender/bucket.py
for the arithmetic and the bound it gives, docs/providers.md for why this design). Waiting messages
share one fetch at a time per provider; when the bucket is dry they sleep until it can have refilled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import replace
from typing import Protocol

import asyncpg

from services.sender.bucket import Grant, Limit, wait_s
from services.sender.metrics import STALE_TOKENS
from shared.runtime.logs import get_logger

log = get_logger("sender.ratelimit")
STORE_RETRY_S = 0.5
MIN_PAUSE_S = 0.002
FIRST_TRY_S = 0.05  # even a caller that will not wait gets one round trip to the store

ENSURE_SQL = """
INSERT INTO provider_buckets (provider, tokens, refilled_at) VALUES ($1, $2, clock_timestamp())
ON CONFLICT (provider) DO NOTHING
"""

# $2 rate, $3 capacity, $4 reserve, $5 wanted by high priority, $6 wanted by the others.
TAKE_SQL = """
WITH now_ AS (SELECT clock_timestamp() AS ts),
cur AS (
    SELECT b.provider, n.ts,
           least($3::float8,
                 b.tokens + $2::float8 * greatest(0, extract(epoch FROM n.ts - b.refilled_at))) AS avail
    FROM provider_buckets b, now_ n WHERE b.provider = $1 FOR UPDATE OF b
),
hi AS (SELECT cur.*, greatest(0, least($5::int, floor(cur.avail)))::int AS high FROM cur),
g AS (SELECT hi.*, greatest(0, least($6::int, floor(hi.avail - hi.high - $4::float8)))::int AS other FROM hi)
UPDATE provider_buckets b SET tokens = g.avail - g.high - g.other, refilled_at = g.ts
FROM g WHERE b.provider = g.provider
RETURNING g.high, g.other, b.tokens
"""


class BucketStore(Protocol):
    async def take(self, provider: str, limit: Limit, want_high: int, want_other: int) -> Grant: ...


class PostgresBucketStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._known: set[str] = set()

    async def take(self, provider: str, limit: Limit, want_high: int, want_other: int) -> Grant:
        async with self.pool.acquire() as conn:
            for _ in range(2):
                if provider not in self._known:
                    await conn.execute(ENSURE_SQL, provider, limit.capacity)
                    self._known.add(provider)
                row = await conn.fetchrow(
                    TAKE_SQL, provider, limit.rate, limit.capacity, limit.reserve, want_high, want_other
                )
                if row is not None:
                    return Grant(row["high"], row["other"], row["tokens"])
                self._known.discard(provider)  # the row was deleted: create it again
        return Grant(0, 0, 0.0)


class SharedBucket:
    """One provider's limit as seen by one replica.

    Waiting messages queue (high priority apart); one fetcher task asks the store for as many tokens
    as there are waiters and hands each granted token straight to the longest waiter. Tokens nobody
    waits for any more are kept for ``lease_s`` at most, then thrown away (never used late).
    """

    def __init__(self, provider: str, store: BucketStore, lease_s: float) -> None:
        self.provider = provider
        self.store = store
        self.lease_s = lease_s
        self.limit: Limit | None = None
        self._spare: deque[float] = deque()  # expiry times of granted tokens nobody took
        self._waiters: dict[bool, deque[asyncio.Future[float]]] = {True: deque(), False: deque()}
        self._next_fetch = {True: 0.0, False: 0.0}  # by priority: the store is dry until then
        self._fetcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def _take_spare(self) -> bool:
        now = time.monotonic()
        while self._spare and self._spare[0] < now:
            self._spare.popleft()
        if self._spare:
            self._spare.popleft()
            return True
        return False

    def _waiting(self, high: bool) -> int:
        queue = self._waiters[high]
        while queue and queue[0].done():
            queue.popleft()
        return sum(1 for f in queue if not f.done())

    def _hand_out(self, high: bool, tokens: int, granted_at: float) -> int:
        """Give up to ``tokens`` to waiters of this priority; returns how many are left over."""
        queue = self._waiters[high]
        while tokens and queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(granted_at)
                tokens -= 1
        return tokens

    async def _fetch_loop(self) -> None:
        while self.limit is not None and (self._waiting(True) or self._waiting(False)):
            now = time.monotonic()
            due = [self._next_fetch[h] for h in (True, False) if self._waiting(h)]
            if min(due) > now:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):  # a new waiter may be due sooner
                    await asyncio.wait_for(self._wake.wait(), min(due) - now)
                continue
            limit = self.limit
            want = {
                h: min(self._waiting(h), limit.burst) if self._next_fetch[h] <= now else 0
                for h in (True, False)
            }
            try:
                # No later than the store granted them: a token's age counts from here.
                asked_at = time.monotonic()
                grant = await self.store.take(self.provider, limit, want[True], want[False])
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                # No bucket, no tokens: the limit is never exceeded; messages wait (or go elsewhere).
                log.warning("rate_limit_store_failed", provider=self.provider, error=repr(exc))
                self._next_fetch = {True: now + STORE_RETRY_S, False: now + STORE_RETRY_S}
                continue
            left = self._hand_out(True, grant.high, asked_at) + grant.other
            left = self._hand_out(False, left, asked_at)
            now = time.monotonic()
            self._spare.extend([asked_at + self.lease_s] * left)
            for high, got in ((True, grant.high), (False, grant.other)):
                short = want[high] - got
                if want[high]:
                    self._next_fetch[high] = (
                        now + max(wait_s(grant, limit, high, short), MIN_PAUSE_S) if short else 0.0
                    )

    async def acquire(self, high: bool, max_wait_s: float) -> bool:
        """Take one token, waiting up to ``max_wait_s`` (at least one store round trip); False when
        none came in time. A token this task only got round to after its lease is not used."""
        if self.limit is None or self._take_spare():
            return True
        deadline = time.monotonic() + max(max_wait_s, FIRST_TRY_S)
        while (remaining := deadline - time.monotonic()) > 0:
            waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self._waiters[high].append(waiter)
            self._wake.set()
            if self._fetcher is None or self._fetcher.done():
                self._fetcher = asyncio.get_running_loop().create_task(self._fetch_loop())
            try:
                granted_at = await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return False
            if time.monotonic() - granted_at <= self.lease_s:
                return True
            STALE_TOKENS.inc()  # this event loop was too busy to use it in time
        return False


class RateLimiter:
    """Every provider's :class:`SharedBucket`; limits follow the routing configuration as it changes."""

    def __init__(self, store: BucketStore, lease_s: float) -> None:
        self.store = store
        self.lease_s = lease_s
        self._buckets: dict[str, SharedBucket] = {}

    def bucket(self, provider: str, limit: Limit | None) -> SharedBucket:
        bucket = self._buckets.get(provider)
        if bucket is None:
            bucket = self._buckets[provider] = SharedBucket(provider, self.store, self.lease_s)
        bucket.limit = replace(limit, hold_s=self.lease_s) if limit is not None else None
        return bucket

    async def acquire(self, provider: str, limit: Limit | None, high: bool, max_wait_s: float) -> bool:
        return await self.bucket(provider, limit).acquire(high, max_wait_s)
