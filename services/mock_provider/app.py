"""The mock provider's core (idempotent submission, outages, ledger) and its generic JSON and admin API.

Every emulated API (services/mock_provider/apis.py for the SMS gateway, WhatsApp Cloud API and
webhooks; services/mock_provider/smtp.py for email) goes through :meth:`MockProvider.submit`, so the
ledger, replays, outages, the failure mix and the delivery reports behave the same on each.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from services.mock_provider.apis import add_api_routes
from services.mock_provider.behaviour import Answer, FailureMix, Verdict, decide, split_key
from services.mock_provider.callbacks import Callbacks, Delivery
from services.mock_provider.ledger import Ledger
from services.mock_provider.results import (
    OUTAGE,
    OUTAGE_ANSWERS,
    Accepted,
    Refused,
    batch_error,
    error_response,
    json_response,
    retry_after_header,
)
from shared.runtime.settings import DEV_WEBHOOK_SECRET

MAX_BODY = 256 * 1024
MAX_BATCH_BODY = 16 * 1024 * 1024
MAX_BATCH_ITEMS = 1000
CHANNELS = frozenset({"sms", "mms", "email", "whatsapp", "webhook", "signal"})
COST = {"sms": 0.0075, "mms": 0.02, "email": 0.0004, "whatsapp": 0.005, "webhook": 0.0, "signal": 0.0}
MAX_CALLS = 200_000


@dataclass(frozen=True, slots=True)
class BatchItem:
    recipient: str
    key: str


def parse_batch(body: object) -> list[BatchItem | str]:
    """The bulk body's messages, each a :class:`BatchItem` or the reason it is unusable (that item
    alone is refused); ValueError when the body as a whole is unusable."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise ValueError("expected an object with a 'messages' list")
    messages = body["messages"]
    if not 1 <= len(messages) <= MAX_BATCH_ITEMS:
        raise ValueError(f"'messages' must hold 1 to {MAX_BATCH_ITEMS} items, not {len(messages)}")
    items: list[BatchItem | str] = []
    for message in messages:
        if not isinstance(message, dict):
            items.append("a message must be an object")
        elif not isinstance(message.get("to"), str) or not message["to"]:
            items.append("'to' must be a non-empty string")
        elif not isinstance(message.get("idempotency_key"), str) or not message["idempotency_key"]:
            items.append("'idempotency_key' must be a non-empty string")
        else:
            items.append(BatchItem(message["to"], message["idempotency_key"]))
    return items


class MockProvider:
    def __init__(
        self,
        mix: FailureMix,
        latency_ms: float,
        jitter_ms: float,
        ledger: Ledger,
        token: str = "mock-token",
        callbacks: Callbacks | None = None,
        webhook_secret: str = DEV_WEBHOOK_SECRET,
        welcome_sends: int = 0,
        ignore_keys: frozenset[str] = frozenset(),
    ) -> None:
        self.mix = mix
        # Providers (or "*") that ignore idempotency keys like SMTP or the WhatsApp Cloud API: a
        # repeated key is sent again, and the ledger counts it as a second send of its log.
        self.ignore_keys = ignore_keys
        # The first this-many first attempts (keys <log id>-1) are accepted whatever the draw, so that a
        # newcomer's first message ends SENT; POST /admin/config ends it (SWITCHBOARD_MOCK_WELCOME_SENDS).
        self.welcome_left = welcome_sends
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        self.ledger = ledger
        self.token = token
        self.callbacks = callbacks
        self.webhook_secret = webhook_secret  # what webhooks are signed with (never a receipts key)
        self.outages: dict[str, float] = {}  # channel or provider -> monotonic end
        self.outage_answers: dict[str, Answer] = {}  # what it answers meanwhile (default: 503)
        self.in_progress: dict[str, asyncio.Future[None]] = {}
        self.rng = random.Random(mix.seed)
        self.requests = 0
        self.calls: list[dict[str, Any]] = []  # every submission, refused ones too (GET /calls)

    def honours_keys(self, provider: str) -> bool:
        return not ({"*", provider} & self.ignore_keys)

    def in_outage(self, provider: str, channel: str) -> bool:
        return self.outage_answer(provider, channel) is not None

    def outage_answer(self, provider: str, channel: str) -> Answer | None:
        now = time.monotonic()
        for target in (provider, channel, "*"):
            if self.outages.get(target, 0) > now:
                return self.outage_answers.get(target, OUTAGE)
        return None

    def _call(self, provider: str, channel: str, result: str) -> None:
        if len(self.calls) >= MAX_CALLS:
            del self.calls[: MAX_CALLS // 10]
        self.calls.append({"at": time.time(), "provider": provider, "channel": channel, "result": result})

    async def submit(
        self,
        provider: str,
        channel: str,
        recipient: str,
        key: str,
        delivery: Delivery | None = None,
        magic: str | None = None,
    ) -> Accepted | Refused:
        """One send: answered from the ledger for a known key, else after the latency by the mix
        (``magic``, when given, is what the magic recipient prefixes are matched against)."""
        self.requests += 1
        arrived_at = datetime.now(UTC).isoformat()
        honours = self.honours_keys(provider)
        if honours and key not in self.ledger.responses and key in self.in_progress:
            await asyncio.shield(self.in_progress[key])  # the same key in flight: answer from its result
        early = self._answered(provider, channel, recipient, key, arrived_at)
        if early is not None:
            return early
        if not honours:
            delay = self._delay_s()
            if delay:
                await asyncio.sleep(delay)
            return self._decide(provider, channel, recipient, key, arrived_at, delivery, magic)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.in_progress[key] = future
        try:
            delay = self._delay_s()
            if delay:
                await asyncio.sleep(delay)
            return self._decide(provider, channel, recipient, key, arrived_at, delivery, magic)
        finally:
            future.set_result(None)
            self.in_progress.pop(key, None)

    async def submit_batch(
        self, provider: str, channel: str, items: list[BatchItem]
    ) -> list[Accepted | Refused]:
        """One bulk request: every item answered as :meth:`submit` would answer it alone, after one
        provider latency for the whole batch (a bulk API's round trip), in the items' order."""
        self.requests += 1
        arrived_at = datetime.now(UTC).isoformat()
        results: list[Accepted | Refused | None] = [None] * len(items)
        mine: dict[str, asyncio.Future[None]] = {}
        later: dict[int, None] = {}  # a key in flight elsewhere or repeated here: answered alone, after
        for index, item in enumerate(items):
            if item.key in mine or (item.key not in self.ledger.responses and item.key in self.in_progress):
                later[index] = None
                continue
            results[index] = self._answered(provider, channel, item.recipient, item.key, arrived_at)
            if results[index] is None:
                mine[item.key] = self.in_progress[item.key] = asyncio.get_running_loop().create_future()
        try:
            delay = self._delay_s() if mine else 0.0
            if delay:
                await asyncio.sleep(delay)
            for index, item in enumerate(items):
                if results[index] is None and index not in later:
                    delivery = Delivery("json", provider, channel, item.recipient, item.key)
                    results[index] = self._decide(
                        provider, channel, item.recipient, item.key, arrived_at, delivery, None
                    )
        finally:
            for key, future in mine.items():
                future.set_result(None)
                self.in_progress.pop(key, None)
        for index in later:
            item = items[index]
            delivery = Delivery("json", provider, channel, item.recipient, item.key)
            results[index] = await self.submit(provider, channel, item.recipient, item.key, delivery)
            self.requests -= 1  # part of this one request
        return [r for r in results if r is not None]

    def _delay_s(self) -> float:
        return max(self.latency_ms + self.rng.uniform(-self.jitter_ms, self.jitter_ms), 0.0) / 1000

    def _answered(
        self, provider: str, channel: str, recipient: str, key: str, arrived_at: str
    ) -> Accepted | Refused | None:
        """The answer that needs no decision: a replay from the ledger, or an outage."""
        if key in self.ledger.responses and self.honours_keys(provider):
            self._call(provider, channel, "replay")
            return Accepted(self._replay(key, provider, channel, recipient, arrived_at))
        outage = self.outage_answer(provider, channel)
        if outage is not None:
            self._call(provider, channel, "outage")
            return Refused(outage)
        return None

    def _decide(
        self,
        provider: str,
        channel: str,
        recipient: str,
        key: str,
        arrived_at: str,
        delivery: Delivery | None,
        magic: str | None,
    ) -> Accepted | Refused:
        welcome = self.welcome_left > 0 and split_key(key)[1] == 1
        if welcome:
            self.welcome_left -= 1
        answer = decide(self.mix, channel, magic or recipient, key, welcome)
        if answer.verdict != Verdict.ACCEPT:
            self._call(provider, channel, answer.code or "refused")
            return Refused(answer)
        ref = f"{provider}-{uuid.uuid4().hex[:16]}"
        response: dict[str, Any] = {
            "id": ref,
            "status": "accepted",
            "cost": COST.get(channel, 0.0),
            "replay": False,
        }
        self._record(provider, channel, recipient, key, arrived_at, response)
        self._call(provider, channel, "accepted")
        if self.callbacks is not None and delivery is not None:
            self.callbacks.schedule(replace(delivery, ref=ref))
        return Accepted(response)

    def _record(
        self,
        provider: str,
        channel: str,
        recipient: str,
        key: str,
        arrived_at: str,
        response: dict[str, Any] | None,
    ) -> None:
        log_id, attempt = split_key(key)
        self.ledger.record(
            {
                "log_id": log_id,
                "attempt": attempt,
                "recipient": recipient,
                "channel": channel,
                "provider": provider,
                "idempotency_key": key,
                "received_at": datetime.now(UTC).isoformat(),
                "arrived_at": arrived_at,
                "replay": response is None,
                "response": response,
            }
        )

    def _replay(
        self, key: str, provider: str, channel: str, recipient: str, arrived_at: str
    ) -> dict[str, Any]:
        self._record(provider, channel, recipient, key, arrived_at, None)
        return {**self.ledger.responses[key], "replay": True}

    # ---- the generic JSON API: POST /{provider}/{channel} ------------------------------------------

    async def send(self, request: web.Request) -> web.Response:
        provider, channel = request.match_info["provider"], request.match_info["channel"]
        if channel not in CHANNELS:
            return error_response(404, "UNKNOWN_CHANNEL", f"no such channel: {channel}")
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            return error_response(400, "VALIDATION_ERROR", "the Idempotency-Key header is required")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return error_response(413, "PAYLOAD_TOO_LARGE", "request body too large")
        try:
            raw = await request.read()
            if len(raw) > MAX_BODY:  # a chunked body has no Content-Length to refuse it by
                return error_response(413, "PAYLOAD_TOO_LARGE", "request body too large")
            body = orjson.loads(raw)
            recipient = body["to"]
            if not isinstance(recipient, str) or not recipient:
                raise ValueError("'to' must be a non-empty string")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return error_response(400, "VALIDATION_ERROR", f"invalid request body: {exc}")
        result = await self.submit(
            provider, channel, recipient, key, Delivery("json", provider, channel, recipient, key)
        )
        if isinstance(result, Refused):
            answer = result.answer
            return error_response(
                answer.status, answer.code or "ERROR", answer.message or "", retry_after_header(answer)
            )
        return json_response(result.response)

    # ---- the generic JSON bulk API: POST /{provider}/{channel}/batch -------------------------------

    async def send_batch(self, request: web.Request) -> web.Response:
        """``{"messages": [{"to", "payload", "idempotency_key"}, ...]}`` -> ``{"results": [...]}``, one
        result per message in order: ``{"http_status", ...the single API's JSON body}`` plus
        ``retry_after`` (seconds) where the single API would send a Retry-After header."""
        provider, channel = request.match_info["provider"], request.match_info["channel"]
        if channel not in CHANNELS:
            return error_response(404, "UNKNOWN_CHANNEL", f"no such channel: {channel}")
        if request.content_length is not None and request.content_length > MAX_BATCH_BODY:
            return error_response(413, "PAYLOAD_TOO_LARGE", "request body too large")
        try:
            items = parse_batch(orjson.loads(await request.read()))
        except (orjson.JSONDecodeError, ValueError) as exc:
            return error_response(400, "VALIDATION_ERROR", f"invalid request body: {exc}")
        valid = [item for item in items if isinstance(item, BatchItem)]
        answers = iter(await self.submit_batch(provider, channel, valid))
        results: list[dict[str, Any]] = []
        for item in items:
            if isinstance(item, str):
                results.append(batch_error(400, "VALIDATION_ERROR", item))
                continue
            result = next(answers)
            if isinstance(result, Refused):
                answer = result.answer
                results.append(
                    batch_error(
                        answer.status, answer.code or "ERROR", answer.message or "", answer.retry_after_s
                    )
                )
            else:
                results.append({"http_status": 200, **result.response})
        return json_response({"results": results})

    # ---- ledger and admin ---------------------------------------------------------------------------

    async def ledger_rows(self, request: web.Request) -> web.Response:
        try:
            offset = int(request.query.get("offset", "0"))
            limit = int(request.query.get("limit", "1000000"))
        except ValueError:
            return error_response(400, "VALIDATION_ERROR", "offset and limit must be integers")
        rows = [
            {k: v for k, v in r.items() if k != "response"} for r in self.ledger.rows[offset : offset + limit]
        ]
        return json_response(rows)

    async def ledger_stats(self, _: web.Request) -> web.Response:
        receipts = self.callbacks.stats() if self.callbacks is not None else {}
        return json_response({**self.ledger.stats(), "requests": self.requests, "receipts": receipts})

    async def ledger_clear(self, _: web.Request) -> web.Response:
        self.ledger.clear()
        self.requests = 0
        self.calls.clear()
        return json_response({"cleared": True})

    async def call_rows(self, request: web.Request) -> web.Response:
        provider = request.query.get("provider")
        return json_response([c for c in self.calls if provider is None or c["provider"] == provider])

    async def set_outage(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            target = str(body.get("provider") or body.get("channel") or "*")
            seconds = float(body["seconds"])
            answer = OUTAGE_ANSWERS[str(body.get("answer", "unavailable"))]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            return error_response(
                400,
                "VALIDATION_ERROR",
                f"expected {{channel|provider, seconds, answer: {'|'.join(OUTAGE_ANSWERS)}}}: {exc}",
            )
        self.outages[target] = time.monotonic() + seconds
        self.outage_answers[target] = answer
        return json_response({"outage": target, "seconds": seconds, "status": answer.status})

    async def set_config(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            fields = {
                k: body[k]
                for k in ("transient_rate", "permanent_rate", "rate_limit_rate", "retry_after_s", "seed")
                if k in body
            }
            self.mix = replace(self.mix, **fields)
            self.welcome_left = 0  # a mix set on purpose is answered as set, from the first send
            self.latency_ms = float(body.get("latency_ms", self.latency_ms))
            self.jitter_ms = float(body.get("latency_jitter_ms", self.jitter_ms))
            if self.callbacks is not None:
                receipt_fields = {
                    k.removeprefix("receipt_"): body[k]
                    for k in (
                        "receipt_delivered_rate",
                        "receipt_bounced_rate",
                        "receipt_failed_rate",
                        "receipt_delay_ms",
                    )
                    if k in body
                }
                self.callbacks.mix = replace(self.callbacks.mix, **receipt_fields)
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
            return error_response(400, "VALIDATION_ERROR", str(exc))
        receipts = asdict(self.callbacks.mix) if self.callbacks is not None else None
        return json_response({"mix": asdict(self.mix), "latency_ms": self.latency_ms, "receipts": receipts})

    async def healthz(self, _: web.Request) -> web.Response:
        return json_response({"status": "ok"})


def build_app(provider: MockProvider) -> web.Application:
    app = web.Application(client_max_size=MAX_BATCH_BODY)
    app.router.add_get("/ledger", provider.ledger_rows)
    app.router.add_get("/ledger/stats", provider.ledger_stats)
    app.router.add_delete("/ledger", provider.ledger_clear)
    app.router.add_get("/calls", provider.call_rows)
    app.router.add_post("/admin/outage", provider.set_outage)
    app.router.add_post("/admin/config", provider.set_config)
    app.router.add_get("/healthz", provider.healthz)
    app.router.add_get("/readyz", provider.healthz)
    add_api_routes(app, provider)
    app.router.add_post("/{provider}/{channel}", provider.send)
    app.router.add_post("/{provider}/{channel}/batch", provider.send_batch)
    return app
