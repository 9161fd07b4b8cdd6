"""``python -m services.receipts``: the HTTP receiver of provider delivery reports.

``POST /receipts/{sms|whatsapp|email|json}/{provider}``: the signature is checked with the provider's
secret (``SWITCHBOARD_RECEIPT_SECRETS``; a provider without one is a 404, except in development mode,
where the development default serves), the report is mapped (services/receipts/parse.py) and each
receipt is published to ``responses`` with a confirm before the answer is 200; any failure to publish
is a 503, so that the provider sends it again (receipts are applied idempotently). A report already
taken is not published again (services/receipts/replay.py).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Mapping

from aiohttp import web

from services.receipts.metrics import RECEIPTS
from services.receipts.parse import Parsed, ReceiptError, parse_email, parse_json, parse_sms, parse_whatsapp
from services.receipts.replay import ReplayGuard
from shared.bus import wire
from shared.bus.amqp import AmqpBroker
from shared.bus.transport import Channel
from shared.logs import get_logger
from shared.models import ReceiptMessage
from shared.resilience import retry_until_stopped
from shared.runtime import Health, open_broker, run_service
from shared.settings import Settings
from shared.signatures import GATEWAY_HEADER, HUB_HEADER, SWITCHBOARD_HEADER
from shared.topology import RESPONSES, Lane, Topology, lane_exchange

log = get_logger("receipts")
MAX_BODY = 1024 * 1024


SIGNATURE_HEADERS = {"sms": GATEWAY_HEADER, "whatsapp": HUB_HEADER}


def signature_of(kind: str, headers: Mapping[str, str]) -> str:
    return headers.get(SIGNATURE_HEADERS.get(kind, SWITCHBOARD_HEADER), "")


class Receiver:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.channel: Channel | None = None
        self.replays = ReplayGuard(settings.receipts_replay_window_s, settings.receipts_replay_memory)

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
        replay_key = ReplayGuard.key(kind, provider, signature_of(kind, request.headers))
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
        if self.replays.seen(replay_key):
            RECEIPTS.labels(format=kind, result="replayed").inc()
            log.warning("receipt_replayed", format=kind, provider=provider)
            return web.json_response({"accepted": 0, "unmatched": 0, "replayed": True})
        if parsed.unmatched:
            RECEIPTS.labels(format=kind, result="unmatched").inc(parsed.unmatched)
        if parsed.receipts and not await self.publish(parsed.receipts):
            RECEIPTS.labels(format=kind, result="unavailable").inc(len(parsed.receipts))
            return web.json_response({"error": "try again later"}, status=503, headers={"Retry-After": "2"})
        RECEIPTS.labels(format=kind, result="published").inc(len(parsed.receipts))
        self.replays.remember(replay_key)
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


async def main(settings: Settings, health: Health, stop: asyncio.Event) -> None:
    connection = await open_broker(settings, "receipts", stop)
    if connection is None:
        return
    receiver = Receiver(settings)

    async def start() -> None:
        channel = await AmqpBroker(connection).channel()
        await channel.declare(Topology(shards=settings.shards, delivery_limit=settings.delivery_limit))
        receiver.channel = channel

    runner = web.AppRunner(build_app(receiver), access_log=None)
    try:
        await retry_until_stopped("topology", start, stop)
        health.add("rabbitmq", lambda: not connection.is_closed and receiver.channel is not None)
        await runner.setup()
        await web.TCPSite(runner, settings.receipts_host, settings.receipts_port).start()
        log.info("receipts_ready", port=settings.receipts_port)
        await stop.wait()
    finally:
        await runner.cleanup()
        await connection.close()


if __name__ == "__main__":
    run_service("receipts", main)
