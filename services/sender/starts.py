"""Attempts started on providers that do not honour idempotency keys, recorded before the call.

A provider that de-duplicates by our key can be called again for the same attempt: it answers from
its first send. One that does not would send twice. So before such a call the sender records the
attempt as started (``attempt_starts``), and a dispatch of the same attempt that finds its start there
was redelivered while, or after, the first call was made: its outcome is unknown, it is *in doubt*.
The provider's ``in_doubt`` policy decides (services/sender/router.py).

Recording is batched: the starts asked for within one event-loop turn go to PostgreSQL in one
statement, which also says, per attempt, whether it is the first start, an in-doubt repeat, or a
stale copy whose outcome was applied already (the log moved on): that one is not sent at all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import asyncpg

from shared.runtime.logs import get_logger

log = get_logger("sender.starts")


class StartVerdict(StrEnum):
    FIRST = "first"  # recorded now: call the provider
    IN_DOUBT = "in_doubt"  # started before and the log still waits for that attempt's outcome
    STALE = "stale"  # the log has moved past this attempt: its outcome is known, nothing to send


@dataclass(frozen=True, slots=True)
class StartCheck:
    verdict: StartVerdict
    started_provider: str | None = None  # for IN_DOUBT: the provider the first start went to


@dataclass(frozen=True, slots=True)
class StartRow:
    """One attempt as the statement saw it."""

    log_id: int
    attempt: int
    inserted: bool  # this statement recorded its start
    live: bool  # the log is PROCESSING at this attempt
    started_provider: str | None  # the start recorded before this statement, if any


def verdicts(asked: list[tuple[int, int, str]], rows: list[StartRow]) -> list[StartCheck]:
    """One verdict per asked (log, attempt, provider), in order (pure). The same attempt asked twice in
    one batch is a redelivery of itself: the first ask gets the statement's verdict, the others are in
    doubt behind it (when it was live)."""
    by_key = {(r.log_id, r.attempt): r for r in rows}
    seen: dict[tuple[int, int], str] = {}
    checks = []
    for log_id, attempt, provider in asked:
        key = (log_id, attempt)
        row = by_key.get(key)
        if row is None or not row.live:
            checks.append(StartCheck(StartVerdict.STALE))
        elif key in seen:
            checks.append(StartCheck(StartVerdict.IN_DOUBT, seen[key]))
        elif row.inserted:
            checks.append(StartCheck(StartVerdict.FIRST))
        else:
            checks.append(StartCheck(StartVerdict.IN_DOUBT, row.started_provider or provider))
        seen.setdefault(key, provider)
    return checks


# The log must be PROCESSING at this attempt for a start to be recorded (a copy of an attempt whose
# outcome was applied finds it PENDING, terminal or at a later attempt). The join to attempt_starts
# reads the snapshot from before the INSERT: an earlier start, never this statement's own.
BEGIN_SQL = """
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[]) AS i(log_id, attempt, provider)
), live AS (
    SELECT DISTINCT ON (i.log_id, i.attempt) i.log_id, i.attempt, i.provider
    FROM input i
    JOIN communication_logs l ON l.id = i.log_id AND l.status = 'PROCESSING' AND l.attempts = i.attempt
), inserted AS (
    INSERT INTO attempt_starts (log_id, attempt, provider)
    SELECT log_id, attempt, provider FROM live
    ON CONFLICT (log_id, attempt) DO NOTHING
    RETURNING log_id, attempt
)
SELECT live.log_id, live.attempt, (inserted.log_id IS NOT NULL) AS inserted, s.provider AS started_provider
FROM live
LEFT JOIN inserted ON inserted.log_id = live.log_id AND inserted.attempt = live.attempt
LEFT JOIN attempt_starts s ON s.log_id = live.log_id AND s.attempt = live.attempt
"""

# Starts of logs that have long moved on (kept that long so that a late copy of a dispatch still
# finds its start), a bounded number per run.
PRUNE_SQL = """
DELETE FROM attempt_starts WHERE (log_id, attempt) IN (
    SELECT s.log_id, s.attempt FROM attempt_starts s
    JOIN communication_logs l ON l.id = s.log_id
    WHERE s.started_at < now() - make_interval(secs => $1)
      AND NOT (l.status = 'PROCESSING' AND l.attempts = s.attempt)
    ORDER BY s.started_at LIMIT $2
)
"""


class AttemptStarts(Protocol):
    async def begin(self, log_id: int, attempt: int, provider: str) -> StartCheck: ...


Waiting = list[tuple[tuple[int, int, str], "asyncio.Future[StartCheck]"]]


class PostgresAttemptStarts:
    """Starts asked for in one event-loop turn are recorded with one statement."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._waiting: Waiting = []
        self._writes: set[asyncio.Task[None]] = set()

    async def begin(self, log_id: int, attempt: int, provider: str) -> StartCheck:
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._flush)
        future: asyncio.Future[StartCheck] = loop.create_future()
        self._waiting.append(((log_id, attempt, provider), future))
        return await future

    def _flush(self) -> None:
        group, self._waiting = self._waiting, []
        if group:
            task = asyncio.get_running_loop().create_task(self._write(group))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write(self, group: Waiting) -> None:
        asked = [a for a, _ in group]
        try:
            records = await self.pool.fetch(
                BEGIN_SQL, [a[0] for a in asked], [a[1] for a in asked], [a[2] for a in asked]
            )
        except Exception as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        rows = [
            StartRow(r["log_id"], r["attempt"], r["inserted"], True, r["started_provider"]) for r in records
        ]
        for (_, future), check in zip(group, verdicts(asked, rows), strict=True):
            if not future.done():
                future.set_result(check)

    async def prune(self, older_than_s: float, limit: int = 10_000) -> int:
        status = await self.pool.execute(PRUNE_SQL, older_than_s, limit)
        return int(status.split()[-1])
