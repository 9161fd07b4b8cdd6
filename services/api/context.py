"""What every request handler shares: settings, the database, the rate limiter, verified keys."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from services.api import metrics
from services.api.database import Database
from services.api.errors import RateLimitExceeded, Unauthorized
from services.api.keys import key_id_of, verify_key
from services.api.ratelimit import RateLimiter
from services.api.settings import ApiSettings
from services.api.store.keys import KeyRow, find_key
from shared.settings import Settings


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: every query is scoped to ``tenant``; an ``admin`` (operator) key may also change
    the global routing configuration."""

    tenant: str
    key_id: str
    rate_limit_per_s: float | None = None
    admin: bool = False


@dataclass
class ApiContext:
    settings: ApiSettings
    shared: Settings
    db: Database
    limiter: RateLimiter
    _keys: dict[str, tuple[KeyRow, float]] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: ApiSettings, shared: Settings) -> ApiContext:
        return cls(
            settings=settings,
            shared=shared,
            db=Database(shared.database_dsn(), settings),
            limiter=RateLimiter(
                settings.api_rate_limit_per_s,
                settings.api_rate_limit_burst,
                settings.api_priority_bypass_share,
            ),
        )

    async def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise Unauthorized("an API key is required in the X-API-Key header")
        key_id = key_id_of(key)
        if key_id is None:
            raise Unauthorized("malformed API key")
        row = await self._lookup(key_id)
        pepper = self.settings.api_key_pepper.get_secret_value()
        if row is None or not verify_key(key, row.key_hash, pepper):
            raise Unauthorized("unknown or revoked API key")
        return Principal(row.tenant, row.key_id, row.rate_limit_per_s, row.admin)

    async def _lookup(self, key_id: str) -> KeyRow | None:
        now = time.monotonic()
        cached = self._keys.get(key_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self.db.connection() as conn:
            row = await find_key(conn, key_id)
        if row is not None and self.settings.api_key_cache_s > 0:
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[key_id] = (row, now + self.settings.api_key_cache_s)
        return row

    def limit(self, principal: Principal, high_priority: bool = False) -> None:
        """Take one request from the key's budget, or raise 429 with Retry-After."""
        decision = self.limiter.check(
            principal.key_id, time.monotonic(), high_priority=high_priority, rate=principal.rate_limit_per_s
        )
        if not decision.allowed:
            metrics.RATE_LIMITED.inc()
            raise RateLimitExceeded(decision.retry_after_s)
        if decision.reserve:
            metrics.PRIORITY_BYPASS.inc()
