"""The dashboard's new queries can use their indexes (migration 0012): with sequential scans disabled,
EXPLAIN shows the index each one is meant for. Figures at a million rows are in docs/deploy.md."""

from __future__ import annotations

import asyncpg

from services.dashboard import queries


async def plan(pool: asyncpg.Pool, sql: str, *args: object) -> str:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch(f"EXPLAIN {sql}", *args)
    return "\n".join(r[0] for r in rows)


async def test_search_by_recipient_and_provider_figures_use_their_indexes(pool: asyncpg.Pool) -> None:
    assert "logs_recipient_key_idx" in await plan(pool, queries.LOGS_BY_RECIPIENT, ["+14155550100"], 20)
    assert "attempts_recorded_idx" in await plan(pool, queries.PROVIDERS, 300.0)
