"""Claim scaling: the real claim statement's cost on a table of 10 000 and of 1 000 000 logs.

The table is filled by ``INSERT ... SELECT generate_series`` (mostly terminal SENT rows, a share
PENDING, three priorities, about four logs per recipient), vacuumed and analysed as autovacuum
would leave it, then ``EXPLAIN (ANALYZE, BUFFERS)`` of ``claim_sql`` from ``services/poller/claims.py``
runs inside a transaction that is rolled back, a few times; the median execution time is kept with
the plan. The batch is the same at every size, so equal times mean the cost follows the batch.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from services.poller.claims import claim, claim_sql
from services.poller.settings import Ordering
from shared.bus.topology import lane_of
from tools.bench_common import ProgressFn, bounded, no_progress, truncate
from tools.stack import Environment

LEASE_S = 120.0
PRIORITY = 1  # the claim statement measured: normal priority, the bulk of the traffic
GENERATE_SQL = """
INSERT INTO communication_logs (channel, recipient, payload, priority, status, attempts, next_attempt_at,
                                provider, created_at, updated_at, sent_at)
SELECT 'sms', '+1646' || lpad((i % $3)::text, 8, '0'), '{"body": "claim scaling"}'::jsonb,
       CASE (i / $4) % 10 WHEN 0 THEN 0 WHEN 9 THEN 2 ELSE 1 END,
       CASE WHEN pending THEN 'PENDING' ELSE 'SENT' END,
       CASE WHEN pending THEN 0 ELSE 1 END,
       now() - make_interval(secs => (i::bigint * 7919) % 3600),
       CASE WHEN pending THEN NULL ELSE 'mocksms' END,
       now() - make_interval(secs => 3600 + (i::bigint * 7919) % 3600), now(),
       CASE WHEN pending THEN NULL ELSE now() END
FROM generate_series($1::int, $2::int) AS i, LATERAL (SELECT i % $4 = 0 AS pending) AS p
"""
INDEX_USED = re.compile(r"(?:Index Only Scan|Index Scan|Bitmap Index Scan)(?: Backward)? (?:using|on) (\w+)")
EXECUTION = re.compile(r"Execution Time: ([\d.]+) ms")
BUFFERS = re.compile(r"Buffers: shared((?: \w+=\d+)+)")


def buffers(plan: str) -> int:
    """Shared buffers the whole statement touched (top node: hit + read): a count, not a time, so
    it does not move with the machine's other load."""
    found = BUFFERS.search(plan)
    if not found:
        return 0
    parts = dict(part.split("=") for part in found.group(1).split())
    return int(parts.get("hit", 0)) + int(parts.get("read", 0))


PLANNING = re.compile(r"Planning Time: ([\d.]+) ms")


async def generate(conn: asyncpg.Connection, rows: int, pending_fraction: float, chunk: int = 250_000) -> int:
    """Fill the table; returns how many rows of the measured priority are PENDING."""
    await truncate(conn)
    stride = max(round(1 / pending_fraction), 1)
    recipients = rows // 4 + 1  # about four logs per recipient; open ones mostly of distinct recipients
    for first in range(1, rows + 1, chunk):
        await conn.execute(GENERATE_SQL, first, min(first + chunk - 1, rows), recipients, stride)
    await conn.execute("VACUUM (ANALYZE) communication_logs")
    count: int = await conn.fetchval(
        "SELECT count(*) FROM communication_logs WHERE status = 'PENDING' AND priority = $1", PRIORITY
    )
    return count


def key_lines(plan: str) -> list[str]:
    wanted = (
        "Scan",
        "Limit",
        "LockRows",
        "Update on",
        "Nested Loop",
        "Anti Join",
        "Execution Time",
        "Planning Time",
    )
    return [line.strip() for line in plan.splitlines() if any(w in line for w in wanted)]


async def explain(conn: asyncpg.Connection, sql: str, args: Sequence[Any], generic: bool = False) -> str:
    """The plan with actual times, rolled back; ``generic``: the plan PostgreSQL caches for a prepared
    statement after five executions (what a long-running poller may end up executing)."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        if generic:
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
    finally:
        await transaction.rollback()
    return "\n".join(r[0] for r in rows)


async def timed(conn: asyncpg.Connection, batch: int, ordering: Ordering) -> tuple[float, int, float]:
    """Wall ms and rows of the bare statement, and wall ms of the poller's whole ``claim()``; rolled back."""
    sql = claim_sql(ordering, aged=False)
    transaction = conn.transaction()
    await transaction.start()
    try:
        started = time.perf_counter()
        rows = await conn.fetch(sql, batch, LEASE_S, PRIORITY)
        statement_ms = (time.perf_counter() - started) * 1000
    finally:
        await transaction.rollback()
    transaction = conn.transaction()
    await transaction.start()
    try:
        started = time.perf_counter()
        await claim(
            conn,
            lane=lane_of(PRIORITY),
            batch_size=batch,
            lease_s=LEASE_S,
            ordering=ordering,
            starvation_after_s=30.0,
            starvation_share=0.1,
        )
        full_ms = (time.perf_counter() - started) * 1000
    finally:
        await transaction.rollback()
    return statement_ms, len(rows), full_ms


async def measure(conn: asyncpg.Connection, batch: int, ordering: Ordering, repeats: int) -> dict[str, Any]:
    sql = claim_sql(ordering, aged=False)
    await explain(conn, sql, (batch, LEASE_S, PRIORITY))  # warm-up: caches and plan
    runs = []
    for _ in range(repeats):
        plan = await explain(conn, sql, (batch, LEASE_S, PRIORITY))
        runs.append((float(EXECUTION.findall(plan)[-1]), plan))
    generic = await explain(conn, sql, (batch, LEASE_S, PRIORITY), generic=True)
    walls = [await timed(conn, batch, ordering) for _ in range(repeats)]
    runs.sort(key=lambda r: r[0])
    median_ms, plan = runs[len(runs) // 2]
    planning = PLANNING.findall(plan)
    return {
        "execution_ms": round(median_ms, 2),
        "execution_ms_min": round(runs[0][0], 2),
        "execution_ms_all": [round(r[0], 2) for r in runs],
        "buffers": buffers(plan),
        "planning_ms": float(planning[-1]) if planning else None,
        "statement_wall_ms": round(statistics.median(w[0] for w in walls), 2),
        "claimed_rows": walls[0][1],
        "full_claim_wall_ms": round(statistics.median(w[2] for w in walls), 2),
        "indexes": sorted(set(INDEX_USED.findall(plan))),
        "key_lines": key_lines(plan),
        "plan": plan,
        "generic_plan": {
            "execution_ms": float(EXECUTION.findall(generic)[-1]),
            "indexes": sorted(set(INDEX_USED.findall(generic))),
            "key_lines": key_lines(generic),
            "plan": generic,
        },
    }


async def run_claim_scaling(
    environment: Environment,
    sizes: Sequence[int] = (10_000, 1_000_000),
    *,
    batch: int = 500,
    pending_fraction: float = 0.1,
    repeats: int = 9,
    ordering: Ordering = Ordering.STRICT,
    max_seconds: float = 900.0,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    """Per size: generation time and the claim's median time, plan and indexes (same batch everywhere)."""
    smallest_pending = round(min(sizes) / max(round(1 / pending_fraction), 1) * 0.8)
    batch = max(min(batch, smallest_pending), 1)  # a batch every size can fill
    result: dict[str, Any] = {
        "batch": batch,
        "pending_fraction": pending_fraction,
        "ordering": ordering.value,
        "priority": PRIORITY,
        "statement": claim_sql(ordering, aged=False).strip(),
        "sizes": {},
    }
    conn = await asyncpg.connect(environment.database_url)
    try:
        async with bounded("claim scaling", max_seconds):
            for n, size in enumerate(sizes):
                progress(n, len(sizes))
                started = time.monotonic()
                pending = await generate(conn, size, pending_fraction)
                generated_s = time.monotonic() - started
                result["sizes"][str(size)] = {
                    "rows": size,
                    "pending_rows_of_priority": pending,
                    "generate_s": round(generated_s, 2),
                    **await measure(conn, batch, ordering, repeats),
                }
            progress(len(sizes), len(sizes))
        await truncate(conn)
    finally:
        await conn.close()
    small, large = (result["sizes"][str(s)] for s in (min(sizes), max(sizes)))
    result["buffers_ratio_large_to_small"] = (
        round(large["buffers"] / small["buffers"], 2) if small["buffers"] else None
    )
    small, large = small["execution_ms"], large["execution_ms"]
    result["ratio_large_to_small"] = round(large / small, 2) if small else None
    return result
