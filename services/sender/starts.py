"""Attempts started on providers that do not honour idempotency keys, recorded before the call.

A provider that de-duplicates by our key can be called again for the same attempt: it answers from
its first send. One that does not would send twice. So before such a call the sender records the
attempt as started (``attempt_starts``), and a dispatch of the same attempt that finds its start there
was redelivered while, or after, the first call was made: its outcome is unknown, it is *in doubt*.
The provider's ``in_doubt`` policy decides (services/sender/router.py).

Recording is batched: the starts asked for within one event-loop turn go to PostgreSQL in one
statement, which also says, per attempt, whether it is the first start, an in-doubt repeat, or a
stale copy whose outcome was applied already (the log moved on): that one is not sent at all.

Every dispatch, whatever its provider, is first checked the same way (:meth:`PostgresAttemptStarts.live`,
batched alike): a copy of an attempt whose outcome was applied already (a re-publish after an unconfirmed
publish or an expired lease, a redelivery after a broker restart) must not reach a provider. Its key does
not make it harmless: when the first call was refused (an outage), the provider has nothing to replay, and
the log may have moved on to another provider meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

import asyncpg

from shared.runtime.logs import get_logger

log = get_logger("sender.starts")
A = TypeVar("A")
R = TypeVar("R")


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

# Which of the asked attempts the log still waits for (PROCESSING at that attempt).
LIVE_SQL = """
SELECT i.log_id, i.attempt
FROM unnest($1::bigint[], $2::int[]) AS i(log_id, attempt)
JOIN communication_logs l ON l.id = i.log_id AND l.status = 'PROCESSING' AND l.attempts = i.attempt
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

    async def live(self, log_id: int, attempt: int) -> bool:
        """Whether the log still waits for this attempt's outcome (False: a stale copy)."""
        ...


class TurnBatch(Generic[A, R]):
    """What is asked within one event-loop turn, answered together by one call of ``answer`` (one
    statement), which returns one result per question, in order. Its failure fails each question."""

    def __init__(self, answer: Callable[[list[A]], Awaitable[list[R]]]) -> None:
        self.answer = answer
        self._waiting: list[tuple[A, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def ask(self, question: A) -> R:
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._flush)
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((question, future))
        return await future

    def _flush(self) -> None:
        group, self._waiting = self._waiting, []
        if group:
            task = asyncio.get_running_loop().create_task(self._answer(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, group: list[tuple[A, asyncio.Future[R]]]) -> None:
        try:
            results = await self.answer([question for question, _ in group])
        except Exception as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)


class PostgresAttemptStarts:
    """Starts asked for in one event-loop turn are recorded with one statement; live checks alike."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._begins: TurnBatch[tuple[int, int, str], StartCheck] = TurnBatch(self._record)
        self._lives: TurnBatch[tuple[int, int], bool] = TurnBatch(self._read_live)

    async def begin(self, log_id: int, attempt: int, provider: str) -> StartCheck:
        return await self._begins.ask((log_id, attempt, provider))

    async def live(self, log_id: int, attempt: int) -> bool:
        return await self._lives.ask((log_id, attempt))

    async def _record(self, asked: list[tuple[int, int, str]]) -> list[StartCheck]:
        records = await self.pool.fetch(
            BEGIN_SQL, [a[0] for a in asked], [a[1] for a in asked], [a[2] for a in asked]
        )
        rows = [
            StartRow(r["log_id"], r["attempt"], r["inserted"], True, r["started_provider"]) for r in records
        ]
        return verdicts(asked, rows)

    async def _read_live(self, asked: list[tuple[int, int]]) -> list[bool]:
        records = await self.pool.fetch(LIVE_SQL, [a[0] for a in asked], [a[1] for a in asked])
        waiting = {(r["log_id"], r["attempt"]) for r in records}
        return [key in waiting for key in asked]

    async def prune(self, older_than_s: float, limit: int = 10_000) -> int:
        status = await self.pool.execute(PRUNE_SQL, older_than_s, limit)
        return int(status.split()[-1])
