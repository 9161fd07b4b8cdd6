"""Pacing: a minimum gap between two messages of one sender identity, across every replica.

Each message reserves the next free slot of its (provider, identity) in PostgreSQL with one
statement, then sleeps until that slot. A slot further away than the caller will wait is not taken.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import asyncpg

from shared.runtime.logs import get_logger

log = get_logger("sender.pacing")

RESERVE_SQL = """
INSERT INTO sender_pacing AS p (provider, identity, next_slot)
VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
ON CONFLICT (provider, identity) DO UPDATE
    SET next_slot = greatest(p.next_slot, clock_timestamp()) + make_interval(secs => $3)
    WHERE greatest(p.next_slot, clock_timestamp()) <= clock_timestamp() + make_interval(secs => $4)
RETURNING greatest(0, extract(epoch FROM next_slot - clock_timestamp()) - $3)::float8 AS wait_s
"""


def identity(payload: dict[str, Any], settings: Any, provider: str) -> str:
    """Who the message is from: its own ``from``, else the provider's configured sender, else the provider."""
    for source in (payload, settings):
        for key in ("from", "phone_number_id", "sender"):
            value = source.get(key) if hasattr(source, "get") else None
            if value:
                return str(value)
    return provider


class PacingStore(Protocol):
    async def reserve(
        self, provider: str, identity: str, gap_s: float, max_wait_s: float
    ) -> float | None: ...


class PostgresPacing:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def reserve(self, provider: str, identity: str, gap_s: float, max_wait_s: float) -> float | None:
        """Seconds to wait for the reserved slot, or None when the next slot is beyond ``max_wait_s``."""
        value = await self.pool.fetchval(RESERVE_SQL, provider, identity, gap_s, max_wait_s)
        return None if value is None else float(value)


async def pace(store: PacingStore, provider: str, who: str, gap_s: float, max_wait_s: float) -> bool:
    """Wait for this identity's next slot; False when it is too far off (or cannot be reserved)."""
    if gap_s <= 0:
        return True
    try:
        wait = await store.reserve(provider, who, gap_s, max_wait_s)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        log.warning("pacing_store_failed", provider=provider, error=repr(exc))
        return False
    if wait is None:
        return False
    if wait > 0:
        await asyncio.sleep(wait)
    return True
