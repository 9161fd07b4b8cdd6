"""Gathering one snapshot from PostgreSQL and the RabbitMQ management API, each source on its own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import httpx

from services.dashboard import dlq, panels, queries, snapshot
from services.dashboard.settings import DashboardSettings
from services.dlq.actions import dlq_guard
from shared.bus.amqp import AmqpBroker, connect_plain
from shared.core.models import utcnow
from shared.core.redact import mask_url_credentials
from shared.db.pool import create_pool
from shared.ops.management import Management
from shared.runtime.logs import get_logger

log = get_logger("dashboard")
WINDOW_S = 300
BUCKET_S = 10
# A look into the DLQ hands its first messages out once more and hides them while it runs: not on
# every refresh (services/dashboard/dlq.py).
DEAD_LETTER_REFRESH_S = 30.0
CAMPAIGNS_SHOWN = 20
SEARCH_LIMIT = 20


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
        self.broker: AmqpBroker | None = None
        self._dead_letters: dict[str, Any] | None = None
        self._dead_letters_at = -DEAD_LETTER_REFRESH_S

    async def close(self) -> None:
        await self.management.client.aclose()
        await self.http.aclose()
        if self.broker is not None:
            await self.broker.close()
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
        database, broker, dead_letters = await asyncio.gather(
            self.from_database(), self.from_broker(), self.dead_letters()
        )
        circuit_error = None
        if database["circuits"] is None and self.settings.dashboard_circuits_url:
            database["circuits"], circuit_error = await self.from_circuits_url()
        attempts = database.pop("provider_attempts")
        database["providers"] = (
            panels.providers(attempts, database["circuits"]) if attempts is not None else None
        )
        processes = panels.processes(broker.pop("connections"), database.pop("sessions"))
        errors = {
            "postgres": database.pop("error", None),
            "rabbitmq": broker.pop("error", None),
            "circuits": circuit_error,
            "dlq": dead_letters.get("error") if self.settings.dashboard_dlq_scan_limit else None,
        }
        return {
            "generated_at": utcnow().isoformat(),
            "refresh_s": self.settings.dashboard_refresh_s,
            "vhost": self.settings.vhost(),
            **database,
            **broker,
            "processes": processes,
            "dead_letters": dead_letters,
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
            self.pool = await create_pool(
                self.settings.database_dsn(), min_size=1, max_size=2, process="dashboard"
            )
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
                attempts = await queries.providers(conn, WINDOW_S)
                campaign_rows, campaign_rates = await queries.campaigns(conn, CAMPAIGNS_SHOWN)
                sessions = [dict(r) for r in await queries.sessions(conn)]
        except Exception as exc:
            log.warning("dashboard_database_unavailable", error=repr(exc))
            return {
                "counts": None,
                "throughput": None,
                "latency": None,
                "retries": None,
                "recent_failures": [],
                "circuits": None,
                "provider_attempts": None,
                "campaigns": None,
                "sessions": None,
                "error": _describe(exc),
            }
        return {
            "counts": counts,
            "throughput": snapshot.as_json(rate),
            "latency": latency,
            "retries": retries,
            "recent_failures": failed,
            "circuits": circuits,
            "provider_attempts": [dict(r) for r in attempts],
            "campaigns": panels.campaigns(campaign_rows, campaign_rates),
            "sessions": sessions,
        }

    async def dead_letters(self) -> dict[str, Any]:
        """What the DLQ holds now, by reason (at most ``dashboard_dlq_scan_limit`` messages read),
        refreshed every ``DEAD_LETTER_REFRESH_S``; ``{"error": ...}`` when it cannot be read."""
        limit = self.settings.dashboard_dlq_scan_limit
        if limit == 0:
            return {"error": "off (SWITCHBOARD_DASHBOARD_DLQ_SCAN_LIMIT=0)"}
        if (
            self._dead_letters is not None
            and time.monotonic() - self._dead_letters_at < DEAD_LETTER_REFRESH_S
        ):
            return self._dead_letters
        try:
            # Unlike the dlq tool, which warns and goes on, a look nobody asked for is not taken when
            # the policies could not be checked.
            problem = await dlq_guard(self.settings)
            if problem is not None:
                result: dict[str, Any] = {"error": f"not read: {problem}"}
            else:
                if self.broker is None:
                    self.broker = AmqpBroker(await connect_plain(self.settings.amqp_url(), "dashboard"))
                result = (await dlq.look(self.broker, limit)).summary(limit)
        except Exception as exc:
            log.warning("dashboard_dlq_unavailable", error=repr(exc))
            result = {"error": _describe(exc)}
            broker, self.broker = self.broker, None
            if broker is not None:
                with contextlib.suppress(Exception):
                    await broker.close()
        self._dead_letters, self._dead_letters_at = result, time.monotonic()
        return result

    async def from_broker(self) -> dict[str, Any]:
        vhost = self.settings.vhost()
        try:
            depths = snapshot.queue_depths(await self.management.queues(vhost))
            response = await self.management.client.get(f"/vhosts/{self.management._v(vhost)}/connections")
            response.raise_for_status()
            connections = response.json()
        except Exception as exc:
            log.warning("dashboard_broker_unavailable", error=repr(exc))
            return {
                "queues": [],
                "queue_totals": None,
                "dlq_size": None,
                "lanes": None,
                "connections": None,
                "error": _describe(exc),
            }
        totals = snapshot.queue_totals(depths)
        return {
            "queues": [snapshot.as_json(d) for d in depths],
            "queue_totals": totals,
            "dlq_size": totals["dlq"],
            "lanes": panels.lanes(depths),
            "connections": connections,
        }

    async def search(self, query: str) -> dict[str, Any]:
        """Messages by id (digits) or recipient, each with its timeline; newest first."""
        text = query.strip()
        if not text:
            return {"query": text, "results": []}
        log_id = int(text) if text.isdigit() and len(text) < 19 else None
        keys = [] if log_id is not None else panels.recipient_keys(text)
        pool = await self._pool()
        async with pool.acquire() as conn:
            logs, attempts, receipts = await queries.find_logs(conn, log_id, keys, SEARCH_LIMIT)
        by_log: dict[int, tuple[list[Any], list[Any]]] = {int(r["id"]): ([], []) for r in logs}
        for attempt in attempts:
            by_log[int(attempt["log_id"])][0].append(dict(attempt))
        for receipt in receipts:
            by_log[int(receipt["log_id"])][1].append(dict(receipt))
        return {
            "query": text,
            "results": [panels.timeline(dict(r), *by_log[int(r["id"])]) for r in logs],
        }


def _describe(exc: BaseException) -> str:
    text = mask_url_credentials(str(exc).splitlines()[0]) if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]
