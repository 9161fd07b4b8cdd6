"""What every request handler shares: settings, the database, the rate limiter, verified keys."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.api import metrics
from services.api.auththrottle import AuthThrottle
from services.api.database import Database
from services.api.errors import RateLimitExceeded, Unauthorized
from services.api.keys import key_id_of, verify_key
from services.api.ratelimit import RateLimiter
from services.api.settings import ApiSettings
from services.api.store.keys import KeyRow, find_key
from shared.runtime.logs import get_logger

log = get_logger("api.auth")


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
    db: Database
    limiter: RateLimiter
    auth_throttle: AuthThrottle
    _keys: dict[str, tuple[KeyRow, float]] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: ApiSettings) -> ApiContext:
        return cls(
            settings=settings,
            db=Database(settings.database_dsn(), settings),
            limiter=RateLimiter(
                settings.api_rate_limit_per_s,
                settings.api_rate_limit_burst,
                settings.api_priority_bypass_share,
            ),
            auth_throttle=AuthThrottle(
                settings.api_auth_failures_per_window, settings.api_auth_failure_window_s
            ),
        )

    async def authenticate(self, key: str | None, source: str = "unknown") -> Principal:
        """The key's principal; every refusal is counted and logged, and a source that keeps failing
        is refused (429) before its key is even looked at."""
        now = time.monotonic()
        wait = self.auth_throttle.retry_after(source, now)
        if wait is not None:
            metrics.AUTH_THROTTLED.inc()
            raise RateLimitExceeded(wait)
        if not key:
            self._auth_failed(source, "missing", None, now)
            raise Unauthorized("an API key is required in the X-API-Key header")
        key_id = key_id_of(key)
        if key_id is None:
            self._auth_failed(source, "malformed", None, now)
            raise Unauthorized("malformed API key")
        row = await self._lookup(key_id)
        pepper = self.settings.api_key_pepper.get_secret_value()
        if row is None or not verify_key(key, row.key_hash, pepper):
            self._auth_failed(source, "unknown", key_id, now)
            raise Unauthorized("unknown or revoked API key")
        if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
            self._auth_failed(source, "expired", key_id, now)
            raise Unauthorized("expired API key")
        return Principal(row.tenant, row.key_id, row.rate_limit_per_s, row.admin)

    def _auth_failed(self, source: str, reason: str, key_id: str | None, now: float) -> None:
        failures = self.auth_throttle.failed(source, now)
        metrics.AUTH_FAILURES.labels(reason=reason).inc()
        log.warning("auth_failed", source=source, reason=reason, key_id=key_id, failures_in_window=failures)

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
