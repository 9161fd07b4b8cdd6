"""``python -m services.receipts``: the HTTP receiver of provider delivery reports.

``POST /receipts/{sms|whatsapp|email|json}/{provider}``: the signature is checked with the provider's
secret (``SWITCHBOARD_RECEIPT_SECRETS``), the report is mapped (services/receipts/parse.py) and each
receipt is published to ``responses`` with a confirm before the answer is 200; any failure to publish
is a 503, so that the provider sends it again (receipts are applied idempotently).
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from services.receipts.metrics import RECEIPTS
from services.receipts.parse import Parsed, ReceiptError, parse_email, parse_json, parse_sms, parse_whatsapp
from shared.bus import wire
from shared.bus.amqp import AmqpBroker
from shared.bus.transport import Channel
from shared.logs import get_logger
from shared.models import ReceiptMessage
from shared.resilience import retry_until_stopped
from shared.runtime import Health, open_broker, run_service
from shared.settings import Settings
from shared.topology import RESPONSES_EXCHANGE, Topology

log = get_logger("receipts")
MAX_BODY = 1024 * 1024


class Receiver:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.channel: Channel | None = None

    async def publish(self, receipts: list[ReceiptMessage]) -> bool:
        if self.channel is None:
            return False
        errors = await self.channel.publish(
            RESPONSES_EXCHANGE, [wire.receipt(r) for r in receipts], timeout=10
        )
        return all(e is None for e in errors)

    async def handle(self, request: web.Request) -> web.Response:
        kind, provider = request.match_info["kind"], request.match_info["provider"]
        secret = self.settings.receipt_secret(provider)
        now, skew = time.time(), self.settings.receipts_max_skew_s
        body = await request.read()
        try:
            if kind == "sms":
                form = {k: str(v) for k, v in (await request.post()).items()}
                parsed: Parsed = parse_sms(provider, str(request.url), form, request.headers, secret)
            elif kind == "whatsapp":
                parsed = parse_whatsapp(provider, body, request.headers, secret)
            elif kind == "email":
                parsed = parse_email(provider, body, request.headers, secret, now, skew)
            else:
                parsed = parse_json(provider, body, request.headers, secret, now, skew)
        except ReceiptError as exc:
            RECEIPTS.labels(format=kind, result=exc.result).inc()
            log.warning("receipt_refused", format=kind, provider=provider, reason=str(exc))
            return web.json_response({"error": str(exc)}, status=exc.status)
        if parsed.unmatched:
            RECEIPTS.labels(format=kind, result="unmatched").inc(parsed.unmatched)
        if parsed.receipts and not await self.publish(parsed.receipts):
            RECEIPTS.labels(format=kind, result="unavailable").inc(len(parsed.receipts))
            return web.json_response({"error": "try again later"}, status=503, headers={"Retry-After": "2"})
        RECEIPTS.labels(format=kind, result="published").inc(len(parsed.receipts))
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
        """The WhatsApp Cloud API's subscription handshake (``hub.challenge``)."""
        secret = self.settings.receipt_secret(request.match_info["provider"])
        if request.query.get("hub.mode") == "subscribe" and request.query.get("hub.verify_token") == secret:
            return web.Response(text=request.query.get("hub.challenge", ""))
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
