"""``python -m services.mock_provider``: serve the fake provider APIs on ``SWITCHBOARD_MOCK_PORT``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from services.mock_provider.app import MockProvider, build_app
from services.mock_provider.behaviour import FailureMix
from services.mock_provider.ledger import Ledger
from shared.logs import get_logger
from shared.runtime import Health, run_service
from shared.settings import Settings

log = get_logger("mock_provider")


async def main(settings: Settings, health: Health, stop: asyncio.Event) -> None:
    mix = FailureMix(
        transient_rate=settings.mock_transient_rate,
        permanent_rate=settings.mock_permanent_rate,
        rate_limit_rate=settings.mock_rate_limit_rate,
        retry_after_s=settings.mock_retry_after_s,
        seed=settings.mock_seed,
    )
    ledger = Ledger(Path(settings.mock_ledger_path) if settings.mock_ledger_path else None)
    provider = MockProvider(mix, settings.mock_latency_ms, settings.mock_latency_jitter_ms, ledger)
    runner = web.AppRunner(build_app(provider), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.mock_host, settings.mock_port, backlog=1024).start()
    log.info("mock_provider_ready", port=settings.mock_port, mix=str(mix), latency_ms=settings.mock_latency_ms)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        ledger.close()


if __name__ == "__main__":
    run_service("mock_provider", main)
