"""``python -m services.receipts``: the HTTP receiver of provider delivery reports.

``POST /receipts/{sms|whatsapp|email|json}/{provider}``: the signature is checked with the provider's
secret (``SWITCHBOARD_RECEIPT_SECRETS``; a provider without one is a 404, except in development mode,
where the development default serves), the report is mapped (services/receipts/parse.py) and each
receipt is published to ``responses`` with a confirm before the answer is 200; any failure to publish
is a 503, so that the provider sends it again (receipts are applied idempotently). A report already
taken, by this replica or another, is not published again (services/receipts/replay.py, in PostgreSQL
as the ``switchboard_receipts`` role, which can touch nothing but that table).
"""

from __future__ import annotations

import asyncio
import hmac
import time

import asyncpg
from aiohttp import web

from services.receipts.metrics import RECEIPTS
from services.receipts.parse import Parsed, ReceiptError, parse_email, parse_json, parse_sms, parse_whatsapp
from services.receipts.replay import ReplayStore, ReplayVerdict, report_id
from services.receipts.settings import ReceiptsSettings
from shared.bus import wire
from shared.bus.amqp import AmqpBroker, RobustConnection
from shared.bus.topology import RESPONSES, Lane, Topology, lane_exchange
from shared.bus.transport import Channel
from shared.core.models import ReceiptMessage
from shared.runtime.logs import get_logger
from shared.runtime.resilience import retry_until_stopped, sleep_or_stop
from shared.runtime.service import Health, backends, run_service

log = get_logger("receipts")
# The one settings class this process loads (`python -m services.receipts`, `switchboard`).
SETTINGS = ReceiptsSettings

MAX_BODY = 1024 * 1024
PRUNE_EVERY_S = 60.0
# What a replay check may raise when PostgreSQL is away: the provider is asked to retry (503).
DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def try_again_later() -> web.Response:
    return web.json_response({"error": "try again later"}, status=503, headers={"Retry-After": "2"})


class Receiver:
    def __init__(self, settings: ReceiptsSettings, replays: ReplayStore) -> None:
        self.settings = settings
        self.channel: Channel | None = None
        self.replays = replays

    async def publish(self, receipts: list[ReceiptMessage]) -> bool:
        if self.channel is None:
            return False
        errors = await self.channel.publish(
            # delivery reports are not urgent: they follow their outcome, or come later anyway
            lane_exchange(RESPONSES, Lane.BULK),
            [wire.receipt(r) for r in receipts],
            timeout=10,
        )
        return all(e is None for e in errors)

    async def handle(self, request: web.Request) -> web.Response:
        kind, provider = request.match_info["kind"], request.match_info["provider"]
        secret = self.settings.receipt_secret(provider)
        if secret is None:
            RECEIPTS.labels(format=kind, result="unknown_provider").inc()
            log.warning("receipt_refused", format=kind, reason="unknown provider")
            return web.json_response({"error": "unknown provider"}, status=404)
        now, skew = time.time(), self.settings.receipts_max_skew_s
        body = await request.read()
        try:
            if kind == "sms":
                form = {k: str(v) for k, v in (await request.post()).items()}
                parsed: Parsed = parse_sms(provider, str(request.url), form, request.headers, secret)
            elif kind == "whatsapp":
                not_before = now - self.settings.receipts_replay_window_s
                parsed = parse_whatsapp(provider, body, request.headers, secret, not_before)
            elif kind == "email":
                parsed = parse_email(provider, body, request.headers, secret, now, skew)
            else:
                parsed = parse_json(provider, body, request.headers, secret, now, skew)
        except ReceiptError as exc:
            RECEIPTS.labels(format=kind, result=exc.result).inc()
            log.warning("receipt_refused", format=kind, provider=provider, reason=str(exc))
            return web.json_response({"error": str(exc)}, status=exc.status)
        report = report_id(kind, request.headers)
        try:
            verdict = await self.replays.claim(provider, report)
        except DATABASE_ERRORS as exc:
            RECEIPTS.labels(format=kind, result="unavailable").inc(max(len(parsed.receipts), 1))
            log.warning("receipt_replay_check_failed", format=kind, provider=provider, error=repr(exc)[:300])
            return try_again_later()
        if verdict is ReplayVerdict.REPLAYED:
            RECEIPTS.labels(format=kind, result="replayed").inc()
            log.warning("receipt_replayed", format=kind, provider=provider)
            return web.json_response({"accepted": 0, "unmatched": 0, "replayed": True})
        if verdict is ReplayVerdict.IN_FLIGHT:
            RECEIPTS.labels(format=kind, result="in_flight").inc()
            return try_again_later()
        if parsed.unmatched:
            RECEIPTS.labels(format=kind, result="unmatched").inc(parsed.unmatched)
        if parsed.receipts and not await self.publish(parsed.receipts):
            RECEIPTS.labels(format=kind, result="unavailable").inc(len(parsed.receipts))
            await self._forget(provider, report)
            return try_again_later()
        RECEIPTS.labels(format=kind, result="published").inc(len(parsed.receipts))
        try:
            await self.replays.published(provider, report)
        except DATABASE_ERRORS as exc:  # published all the same; the claim is taken over after a while
            log.warning("receipt_mark_failed", format=kind, provider=provider, error=repr(exc)[:300])
        for receipt in parsed.receipts:
            log.info(
                "receipt",
                log_id=receipt.log_id,
                attempt=receipt.attempt,
                provider=provider,
                status=receipt.status.value,
                provider_status=receipt.provider_status,
            )
        return web.json_response({"accepted": len(parsed.receipts), "unmatched": parsed.unmatched})

    async def _forget(self, provider: str, report: bytes) -> None:
        try:
            await self.replays.release(provider, report)
        except DATABASE_ERRORS as exc:  # the claim is taken over once it is old enough
            log.warning("receipt_release_failed", provider=provider, error=repr(exc)[:300])

    async def prune(self, stop: asyncio.Event) -> None:
        """Forget reports older than the replay window (every replica prunes; they skip each other's rows)."""
        while not await sleep_or_stop(stop, PRUNE_EVERY_S):
            try:
                pruned = await self.replays.prune()
            except DATABASE_ERRORS as exc:  # next time
                log.warning("receipt_prune_failed", error=repr(exc)[:300])
                continue
            if pruned:
                log.info("receipt_reports_pruned", count=pruned)

    async def verify(self, request: web.Request) -> web.Response:
        """The WhatsApp Cloud API's subscription handshake (``hub.challenge``), with the provider's verify
        token (``SWITCHBOARD_RECEIPT_VERIFY_TOKENS``: never its signing secret), compared in constant time."""
        provider = request.match_info["provider"]
        if self.settings.receipt_secret(provider) is None:
            return web.json_response({"error": "unknown provider"}, status=404)
        token = self.settings.receipt_verify_token(provider)
        offered = request.query.get("hub.verify_token", "")
        if (
            token is not None
            and request.query.get("hub.mode") == "subscribe"
            and hmac.compare_digest(offered.encode(), token.encode())
        ):
            return web.Response(text=request.query.get("hub.challenge", ""))
        RECEIPTS.labels(format="whatsapp", result="bad_verify_token").inc()
        return web.Response(status=403)


def build_app(receiver: Receiver) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/receipts/{kind:sms|whatsapp|email|json}/{provider}", receiver.handle)
    app.router.add_get("/receipts/whatsapp/{provider}", receiver.verify)
    return app


async def main(settings: ReceiptsSettings, health: Health, stop: asyncio.Event) -> None:
    async with backends(settings, "receipts", stop, health, pool_size=8) as opened:
        if opened is not None:
            await serve(settings, health, stop, *opened)


async def serve(
    settings: ReceiptsSettings,
    health: Health,
    stop: asyncio.Event,
    pool: asyncpg.Pool,
    connection: RobustConnection,
) -> None:
    receiver = Receiver(settings, ReplayStore(pool, settings.receipts_replay_window_s))

    async def start() -> None:
        channel = await AmqpBroker(connection).channel()
        await channel.declare(Topology(shards=settings.shards, delivery_limit=settings.delivery_limit))
        receiver.channel = channel

    runner = web.AppRunner(build_app(receiver), access_log=None)
    pruning = asyncio.create_task(receiver.prune(stop))
    try:
        await retry_until_stopped("topology", start, stop)
        health.add("topology", lambda: receiver.channel is not None)
        await runner.setup()
        await web.TCPSite(runner, settings.receipts_host, settings.receipts_port).start()
        log.info("receipts_ready", port=settings.receipts_port)
        await stop.wait()
    finally:
        await runner.cleanup()
        pruning.cancel()


if __name__ == "__main__":
    run_service("receipts", main, SETTINGS)
