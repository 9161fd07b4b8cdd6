"""PostgreSQL for the API: a pool that never blocks start-up, and "unavailable" turned into 503.

The pool keeps no idle minimum, so the API starts (and answers 503) while PostgreSQL is down, and
reconnects on the next request once it is back. Connection-level failures, at acquire or mid-query,
become :class:`DatabaseUnavailable`; anything else is a real error and propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from services.api import metrics
from services.api.errors import DatabaseUnavailable
from services.api.settings import ApiSettings
from shared.db.pool import create_pool
from shared.runtime.logs import get_logger

log = get_logger("api.database")

UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.InvalidCatalogNameError,
)


async def _no_session_state(_: asyncpg.Connection) -> None:
    """What a released connection needs besides asyncpg's own clean-up (which rolls back an open
    transaction and drops listeners): nothing. The API sets no session variable, takes no advisory
    lock, opens no cursor and listens to nothing, so the default reset query (RESET ALL, UNLISTEN *,
    ...) would only cost every request one more round trip."""


class Database:
    def __init__(self, dsn: str, settings: ApiSettings) -> None:
        self.dsn = dsn
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await create_pool(
                        self.dsn,
                        min_size=0,
                        max_size=self.settings.api_db_pool_size,
                        process="api",
                        timeout=self.settings.api_db_connect_timeout_s,
                        max_inactive_connection_lifetime=60,
                        reset=_no_session_state,
                    )
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=self.settings.api_db_connect_timeout_s) as conn:
                yield conn
        except UNAVAILABLE as exc:
            metrics.DB_UNAVAILABLE.inc()
            log.warning("database_unavailable", error=repr(exc)[:300])
            raise DatabaseUnavailable("the database is unavailable; retry shortly") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def ping(self, within_s: float = 1.0) -> bool:
        try:
            async with asyncio.timeout(within_s), self.connection() as conn:
                await conn.fetchval("SELECT 1")
        except (DatabaseUnavailable, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except (TimeoutError, *UNAVAILABLE):
                pool.terminate()
