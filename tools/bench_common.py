"""Pieces every benchmark phase uses: errors, the time bound, progress callbacks, rates, cleanup SQL."""

from __future__ import annotations

import asyncio
import contextlib
import platform
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import psutil

from shared.db.migrate import database_name
from tools.stack import Environment

# completed, total: phases call it as they go (the CLI draws a rich progress bar from it)
ProgressFn = Callable[[float, float], None]


class BenchError(Exception):
    """A phase could not produce its figures; the message says why."""


class PhaseTimeout(BenchError):
    """A phase ran longer than ``--max-seconds``."""


def no_progress(_done: float, _total: float) -> None:
    return None


@contextlib.asynccontextmanager
async def bounded(phase: str, seconds: float) -> AsyncIterator[None]:
    """Run the block for at most ``seconds``; past that, :class:`PhaseTimeout` names the phase."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise PhaseTimeout(f"phase {phase!r} exceeded --max-seconds={seconds:g}") from None


# Everything a run leaves in the database (identity not restarted: the mock provider's ledger
# remembers idempotency keys "<log id>-<attempt>", and reused ids would be answered as replays).
TRUNCATE_SQL = """
TRUNCATE communication_logs, delivery_attempts, delivery_receipts, dead_letter_outbox CASCADE
"""


async def truncate(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    await conn.execute(TRUNCATE_SQL)


def crossing(series: Sequence[tuple[float, float]], level: float) -> float | None:
    """The time at which a non-decreasing counter sampled as (time, value) reached ``level``."""
    previous: tuple[float, float] | None = None
    for t, value in series:
        if value >= level:
            if previous is None or value == previous[1]:
                return t
            t0, v0 = previous
            return t0 + (t - t0) * (level - v0) / (value - v0)
        previous = (t, value)
    return None


def sustained_rate(series: Sequence[tuple[float, float]], total: float) -> float | None:
    """Items per second between 10 % and 90 % of ``total`` (ramp-up and tail left out)."""
    t10, t90 = crossing(series, 0.1 * total), crossing(series, 0.9 * total)
    if t10 is None or t90 is None or t90 <= t10:
        return None
    return 0.8 * total / (t90 - t10)


def split(items: Sequence[int], parts: int) -> list[list[int]]:
    """``items`` in ``parts`` contiguous, near-equal slices (shards per replica)."""
    if not 1 <= parts <= len(items):
        raise BenchError(f"cannot split {len(items)} shards over {parts} replicas (needs 1..{len(items)})")
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for n in range(parts):
        end = start + size + (1 if n < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


async def machine_facts(environment: Environment) -> dict[str, Any]:
    conn = await asyncpg.connect(environment.database_url)
    try:
        postgres = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return {
        "cores": psutil.cpu_count(),
        "memory_mb": psutil.virtual_memory().total // 2**20,
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "postgresql": postgres,
        "host": platform.node(),
    }


SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_.]*$")


async def apply_database_settings(environment: Environment, settings: dict[str, str]) -> None:
    """``ALTER DATABASE <bench database> SET name = value``: every later session of it gets them."""
    if not settings:
        return
    conn = await asyncpg.connect(environment.database_url)
    try:
        name = database_name(environment.database_url).replace('"', '""')
        for key, value in settings.items():
            if not SETTING_NAME.match(key):
                raise BenchError(f"not a PostgreSQL setting name: {key!r}")
            literal = await conn.fetchval("SELECT quote_literal($1::text)", value)
            await conn.execute(f'ALTER DATABASE "{name}" SET {key} = {literal}')
    finally:
        await conn.close()
