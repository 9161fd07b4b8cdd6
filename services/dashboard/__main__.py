"""``python -m services.dashboard``: the operator page on ``SWITCHBOARD_DASHBOARD_PORT``."""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.dashboard.app import build_app
from services.dashboard.auth import exposure_problem
from services.dashboard.collect import Collector
from services.dashboard.settings import DashboardSettings
from shared.core.errors import ConfigurationError
from shared.runtime.logs import get_logger
from shared.runtime.probes import DatabaseProbe
from shared.runtime.service import Health, run_service

log = get_logger("dashboard")
# The one settings class this process loads (`python -m services.dashboard`, `switchboard`).
SETTINGS = DashboardSettings


async def main(settings: DashboardSettings, health: Health, stop: asyncio.Event) -> None:
    token = settings.dashboard_token.get_secret_value()
    problem = exposure_problem(settings.dashboard_host, token)
    if problem is not None:
        raise ConfigurationError(problem)
    collector = Collector(settings)
    runner = web.AppRunner(build_app(collector, token), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.dashboard_host, settings.dashboard_port)
    await site.start()
    probe = DatabaseProbe(settings.database_dsn(), health.timeout_s, process="dashboard")
    health.add("postgres", probe)
    log.info(
        "dashboard_ready",
        port=settings.dashboard_port,
        vhost=settings.vhost(),
        refresh_s=settings.dashboard_refresh_s,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await collector.close()
        await probe.close()


if __name__ == "__main__":
    run_service("dashboard", main, SETTINGS)
