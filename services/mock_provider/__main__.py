"""``python -m services.mock_provider``: serve the fake provider APIs on ``SWITCHBOARD_MOCK_PORT``
(and SMTP on ``SWITCHBOARD_MOCK_SMTP_PORT`` when set), sending delivery reports to
``SWITCHBOARD_MOCK_RECEIPT_URL`` when set."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from services.mock_provider.app import MockProvider, build_app
from services.mock_provider.behaviour import FailureMix, ReceiptMix
from services.mock_provider.callbacks import Callbacks
from services.mock_provider.ledger import Ledger
from services.mock_provider.settings import MockProviderSettings
from services.mock_provider.smtp import start_smtp, tls_context
from shared.runtime.logs import get_logger
from shared.runtime.service import Health, run_service

log = get_logger("mock_provider")
# The one settings class this process loads (`python -m services.mock_provider`, `switchboard`).
SETTINGS = MockProviderSettings


FAILURE_RATES = frozenset({"mock_transient_rate", "mock_permanent_rate", "mock_rate_limit_rate"})


def welcome_sends(settings: MockProviderSettings) -> int:
    """How many first sends to accept whatever the draw: none once a failure rate is set on purpose
    (a test or an operator asking for failures gets them from the first send)."""
    return 0 if FAILURE_RATES & settings.model_fields_set else settings.mock_welcome_sends


async def main(settings: MockProviderSettings, health: Health, stop: asyncio.Event) -> None:
    mix = FailureMix(
        transient_rate=settings.mock_transient_rate,
        permanent_rate=settings.mock_permanent_rate,
        rate_limit_rate=settings.mock_rate_limit_rate,
        retry_after_s=settings.mock_retry_after_s,
        seed=settings.mock_seed,
    )
    callbacks = None
    if settings.mock_receipt_url:
        receipts = ReceiptMix(
            settings.mock_receipt_delivered_rate,
            settings.mock_receipt_bounced_rate,
            settings.mock_receipt_failed_rate,
            settings.mock_receipt_delay_ms,
        )
        callbacks = Callbacks(
            settings.mock_receipt_url,
            receipts,
            settings.mock_seed,
            lambda p: settings.receipt_secret(p) or "",
        )
    ledger = Ledger(Path(settings.mock_ledger_path) if settings.mock_ledger_path else None)
    provider = MockProvider(
        mix,
        settings.mock_latency_ms,
        settings.mock_latency_jitter_ms,
        ledger,
        token=settings.mock_auth_token.get_secret_value(),
        callbacks=callbacks,
        webhook_secret=settings.webhook_signing_secret.get_secret_value(),
        welcome_sends=welcome_sends(settings),
        ignore_keys=frozenset(settings.mock_ignore_idempotency_keys),
    )
    runner = web.AppRunner(build_app(provider), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.mock_host, settings.mock_port, backlog=1024).start()
    smtp = None
    if settings.mock_smtp_port:
        context = tls_context(settings.mock_smtp_tls_cert, settings.mock_smtp_tls_key)
        smtp = await start_smtp(provider, settings.mock_host, settings.mock_smtp_port, context)
    log.info(
        "mock_provider_ready",
        port=settings.mock_port,
        smtp_port=settings.mock_smtp_port or None,
        mix=str(mix),
        latency_ms=settings.mock_latency_ms,
        receipts=settings.mock_receipt_url or None,
    )
    try:
        await stop.wait()
    finally:
        if smtp is not None:
            smtp.close()
        await runner.cleanup()
        if callbacks is not None:
            await callbacks.close()
        ledger.close()


if __name__ == "__main__":
    run_service("mock_provider", main, SETTINGS)
