"""Remembering the reports already taken, so that a captured report cannot be played again.

The SMS gateway scheme signs no time at all, and a WhatsApp body's time is only as fresh as the
provider made it: a report is known by its verified signature (an HMAC over everything it says, so two
different reports never share one, while the same status sent twice does), remembered for the replay
window in PostgreSQL (``receipt_reports``, migration 0013), which every receipts replica shares: a
replay to another replica, or after a restart, is refused too.

``INSERT ... ON CONFLICT DO NOTHING``-style claiming decides who takes a report: the replica whose
insert wins publishes it, then marks it published; a report seen again within the window is answered
200 (the provider stops) and publishes nothing. While the first replica is still publishing, a
concurrent copy is told to come back later (503), so a failed publish never turns into a silent
"already taken": a failed publish releases its claim, and a claim left by a crashed replica is taken
over after ``CLAIM_TIMEOUT_S``. Rows older than the window are pruned in batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from enum import StrEnum

import asyncpg

from shared.core.signatures import GATEWAY_HEADER, HUB_HEADER, SWITCHBOARD_HEADER

SIGNATURE_HEADERS = {"sms": GATEWAY_HEADER, "whatsapp": HUB_HEADER}
# A publish waits at most 10 s for its confirm: a claim this old without "published" was abandoned.
CLAIM_TIMEOUT_S = 60.0
PRUNE_BATCH = 5_000


class ReplayVerdict(StrEnum):
    FIRST = "first"  # this request took the report: publish it
    REPLAYED = "replayed"  # taken before, within the window: answer 200, publish nothing
    IN_FLIGHT = "in_flight"  # another request is publishing it right now: ask the provider to retry


def report_id(kind: str, headers: Mapping[str, str]) -> bytes:
    """The report's identity: its signature's MAC as the verifier compared it (pure).

    Only the MAC itself counts, never the rest of the header, so that padding a timestamped header with
    extra ``name=value`` parts (which the verifier ignores) does not make a replay look new.
    """
    header = headers.get(SIGNATURE_HEADERS.get(kind, SWITCHBOARD_HEADER), "")
    if kind not in SIGNATURE_HEADERS:
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        header = f"t={parts.get('t', '')},v1={parts.get('v1', '')}"
    return hashlib.sha256(f"{kind}\0{header}".encode()).digest()


CLAIM_SQL = """
INSERT INTO receipt_reports AS r (provider, report_id) VALUES ($1, $2)
ON CONFLICT (provider, report_id) DO UPDATE SET seen_at = now(), published = false
    WHERE r.seen_at < now() - make_interval(secs => $3)
       OR (NOT r.published AND r.seen_at < now() - make_interval(secs => $4))
RETURNING true
"""
STATE_SQL = "SELECT published FROM receipt_reports WHERE provider = $1 AND report_id = $2"
PUBLISHED_SQL = "UPDATE receipt_reports SET published = true WHERE provider = $1 AND report_id = $2"
RELEASE_SQL = "DELETE FROM receipt_reports WHERE provider = $1 AND report_id = $2 AND NOT published"
PRUNE_SQL = """
DELETE FROM receipt_reports WHERE (provider, report_id) IN (
    SELECT provider, report_id FROM receipt_reports
    WHERE seen_at < now() - make_interval(secs => $1)
    ORDER BY seen_at LIMIT $2 FOR UPDATE SKIP LOCKED)
"""


class ReplayStore:
    """The reports taken within ``window_s``, in PostgreSQL (as the ``switchboard_receipts`` role)."""

    def __init__(self, pool: asyncpg.Pool, window_s: float) -> None:
        self.pool = pool
        self.window_s = window_s

    async def claim(self, provider: str, report: bytes) -> ReplayVerdict:
        if await self.pool.fetchval(CLAIM_SQL, provider, report, self.window_s, CLAIM_TIMEOUT_S):
            return ReplayVerdict.FIRST
        published = await self.pool.fetchval(STATE_SQL, provider, report)
        return ReplayVerdict.REPLAYED if published else ReplayVerdict.IN_FLIGHT

    async def published(self, provider: str, report: bytes) -> None:
        await self.pool.execute(PUBLISHED_SQL, provider, report)

    async def release(self, provider: str, report: bytes) -> None:
        """The publish failed: forget the claim, so that the provider's retry is taken."""
        await self.pool.execute(RELEASE_SQL, provider, report)

    async def prune(self, batch: int = PRUNE_BATCH) -> int:
        """Forget the reports older than the window, ``batch`` rows per statement; returns how many."""
        total = 0
        while True:
            status = await self.pool.execute(PRUNE_SQL, self.window_s, batch)
            deleted = int(status.split()[-1])
            total += deleted
            if deleted < batch:
                return total
