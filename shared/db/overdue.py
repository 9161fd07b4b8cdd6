"""Receipt timeout: SENT logs whose provider's delivery report is overdue, counted per provider.

A provider with ``receipt_timeout_s`` (routing configuration) promises a delivery report within that
time; a log still SENT after it has none (a lost callback, a provider that stopped reporting). The
responder counts them every ``SWITCHBOARD_RECEIPTS_OVERDUE_EVERY_S`` into
``switchboard_receipts_overdue{provider}``; the dashboard shows the same count, and the API's stats
count them per channel, provider or campaign.
"""

from __future__ import annotations

import asyncio

import asyncpg
from prometheus_client import Gauge

from shared.runtime.logs import get_logger
from shared.runtime.resilience import sleep_or_stop

log = get_logger("responder.overdue")

RECEIPTS_OVERDUE = Gauge(
    "switchboard_receipts_overdue",
    "SENT logs without a delivery report for longer than their provider's receipt_timeout_s"
    " (sent within the last day)",
    ["provider"],
)
OVERDUE_EVERY_S = 15.0
OVERDUE_WINDOW_S = 86_400.0  # older SENT logs are history, not an alert

# One index range per provider (logs_sent_awaiting_receipt_idx: provider, sent_at WHERE status = 'SENT').
OVERDUE_SQL = """
SELECT p.name AS provider, o.n
FROM providers p
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM communication_logs l
    WHERE l.status = 'SENT' AND l.provider = p.name
      AND l.sent_at < now() - make_interval(secs => p.receipt_timeout_s)
      AND l.sent_at > now() - make_interval(secs => $1)
) o
WHERE p.receipt_timeout_s IS NOT NULL
"""


async def count_overdue(pool: asyncpg.Pool, window_s: float = OVERDUE_WINDOW_S) -> dict[str, int]:
    return {r["provider"]: r["n"] for r in await pool.fetch(OVERDUE_SQL, window_s)}


async def watch_overdue(pool: asyncpg.Pool, stop: asyncio.Event, every_s: float = OVERDUE_EVERY_S) -> None:
    known: set[str] = set()
    while not await sleep_or_stop(stop, every_s):
        try:
            counts = await count_overdue(pool)
        except Exception as exc:  # next time
            log.warning("receipts_overdue_failed", error=repr(exc)[:300])
            continue
        for provider in known - counts.keys():
            RECEIPTS_OVERDUE.remove(provider)
        for provider, n in counts.items():
            RECEIPTS_OVERDUE.labels(provider=provider).set(n)
        known = set(counts)
