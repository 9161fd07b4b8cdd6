"""Gathering one snapshot from PostgreSQL and the RabbitMQ management API, each source on its own."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx

from services.dashboard import queries, snapshot
from services.dashboard.settings import DashboardSettings
from shared.db import create_pool
from shared.logs import get_logger
from shared.management import Management
from shared.models import utcnow

log = get_logger("dashboard")
WINDOW_S = 300
BUCKET_S = 10


class Collector:
    """Builds snapshots; one failing source shows as an error on the page, never as a broken page."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self.management = Management(settings, timeout=5.0)
        self.http = httpx.AsyncClient(timeout=3.0)
        self._cached: dict[str, Any] | None = None
        self._cached_at = 0.0
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self.management.client.aclose()
        await self.http.aclose()
        if self.pool is not None:
            await self.pool.close()

    async def snapshot(self) -> dict[str, Any]:
        """The latest snapshot, rebuilt at most once per refresh interval whatever the number of viewers."""
        async with self._lock:
            if (
                self._cached is None
                or time.monotonic() - self._cached_at >= self.settings.dashboard_refresh_s
            ):
                self._cached = await self.build()
                self._cached_at = time.monotonic()
            return self._cached

    async def build(self) -> dict[str, Any]:
        database, broker = await asyncio.gather(self.from_database(), self.from_broker())
        circuit_error = None
        if database["circuits"] is None and self.settings.dashboard_circuits_url:
            database["circuits"], circuit_error = await self.from_circuits_url()
        errors = {
            "postgres": database.pop("error", None),
            "rabbitmq": broker.pop("error", None),
            "circuits": circuit_error,
        }
        return {
            "generated_at": utcnow().isoformat(),
            "refresh_s": self.settings.dashboard_refresh_s,
            "vhost": self.settings.vhost(),
            **database,
            **broker,
            "errors": {source: error for source, error in errors.items() if error},
        }

    async def from_circuits_url(self) -> tuple[list[dict[str, Any]] | None, str | None]:
        """Circuit states from a sender's ``switchboard_circuit_state`` gauges (no table to read)."""
        try:
            response = await self.http.get(self.settings.dashboard_circuits_url)
            response.raise_for_status()
            return snapshot.circuits_from_metrics(response.text), None
        except Exception as exc:
            log.warning("dashboard_circuits_unavailable", error=repr(exc))
            return None, _describe(exc)

    async def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            self.pool = await create_pool(self.settings.database_dsn(), min_size=1, max_size=2)
        return self.pool

    async def from_database(self) -> dict[str, Any]:
        try:
            pool = await self._pool()
            async with pool.acquire() as conn:
                counts = snapshot.status_counts(await queries.counts(conn))
                rate = snapshot.throughput(
                    await queries.throughput(conn, WINDOW_S, BUCKET_S), WINDOW_S, BUCKET_S
                )
                latency = await queries.latency(conn, WINDOW_S)
                retries = await queries.retries(conn, WINDOW_S)
                failed = snapshot.failures(
                    await queries.recent_failures(conn, self.settings.dashboard_failures_shown)
                )
                circuits = snapshot.circuits(await queries.circuit_rows(conn))
        except Exception as exc:
            log.warning("dashboard_database_unavailable", error=repr(exc))
            return {
                "counts": None,
                "throughput": None,
                "latency": None,
                "retries": None,
                "recent_failures": [],
                "circuits": None,
                "error": _describe(exc),
            }
        return {
            "counts": counts,
            "throughput": snapshot.as_json(rate),
            "latency": latency,
            "retries": retries,
            "recent_failures": failed,
            "circuits": circuits,
        }

    async def from_broker(self) -> dict[str, Any]:
        try:
            depths = snapshot.queue_depths(await self.management.queues(self.settings.vhost()))
        except Exception as exc:
            log.warning("dashboard_broker_unavailable", error=repr(exc))
            return {"queues": [], "queue_totals": None, "dlq_size": None, "error": _describe(exc)}
        totals = snapshot.queue_totals(depths)
        return {
            "queues": [snapshot.as_json(d) for d in depths],
            "queue_totals": totals,
            "dlq_size": totals["dlq"],
        }


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]
