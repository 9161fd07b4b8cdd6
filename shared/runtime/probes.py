"""Readiness probes that can fail: each asks the dependency itself, within a short timeout.

The database probe keeps one connection of its own (outside the service's pool, so a pool busy with
work does not read as "PostgreSQL down") and runs ``SELECT 1`` on it; a failed or slow answer drops
the connection, and the next probe connects afresh.
"""

from __future__ import annotations

import asyncio

import asyncpg

from shared.runtime.identity import application_name
from shared.runtime.logs import get_logger

log = get_logger("probes")


class DatabaseProbe:
    """``SELECT 1`` on a connection of the probe's own; True when PostgreSQL answered in time."""

    def __init__(self, dsn: str, timeout_s: float, process: str | None = None) -> None:
        self.dsn = dsn
        self.server_settings = {"application_name": application_name(process)} if process else None
        self.timeout_s = timeout_s
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self.last_error: str | None = None

    async def __call__(self) -> bool:
        async with self._lock:  # concurrent probes share one connection, one at a time
            try:
                async with asyncio.timeout(self.timeout_s):
                    if self._conn is None or self._conn.is_closed():
                        self._conn = await asyncpg.connect(
                            self.dsn, timeout=self.timeout_s, server_settings=self.server_settings
                        )
                    await self._conn.fetchval("SELECT 1")
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if self.last_error is None:
                    log.warning("readiness_postgres_failed", error=repr(exc)[:300])
                self.last_error = repr(exc)[:300]
                await self._drop()
                return False
            if self.last_error is not None:
                log.info("readiness_postgres_recovered")
            self.last_error = None
            return True

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await asyncio.wait_for(self._conn.close(), timeout=self.timeout_s)
                self._conn = None
