"""The mock provider's HTTP API."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from services.mock_provider.behaviour import Answer, FailureMix, Verdict, decide, split_key
from services.mock_provider.ledger import Ledger

CHANNELS = frozenset({"sms", "mms", "email", "whatsapp", "webhook"})
COST = {"sms": 0.0075, "mms": 0.02, "email": 0.0004, "whatsapp": 0.005, "webhook": 0.0}
MAX_BODY = 256 * 1024


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": {"code": code, "message": message}}, status, headers)


class MockProvider:
    def __init__(self, mix: FailureMix, latency_ms: float, jitter_ms: float, ledger: Ledger) -> None:
        self.mix = mix
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        self.ledger = ledger
        self.outages: dict[str, float] = {}  # channel or provider -> monotonic end
        self.in_progress: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.rng = random.Random(mix.seed)
        self.requests = 0

    def in_outage(self, provider: str, channel: str) -> bool:
        now = time.monotonic()
        return any(self.outages.get(k, 0) > now for k in (provider, channel, "*"))

    async def send(self, request: web.Request) -> web.Response:
        self.requests += 1
        provider, channel = request.match_info["provider"], request.match_info["channel"]
        if channel not in CHANNELS:
            return _error(404, "UNKNOWN_CHANNEL", f"no such channel: {channel}")
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            return _error(400, "VALIDATION_ERROR", "the Idempotency-Key header is required")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _error(413, "PAYLOAD_TOO_LARGE", "request body too large")
        try:
            body = orjson.loads(await request.read())
            recipient = body["to"]
            if not isinstance(recipient, str) or not recipient:
                raise ValueError("'to' must be a non-empty string")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return _error(400, "VALIDATION_ERROR", f"invalid request body: {exc}")

        if key in self.ledger.responses:
            return self._replay(key, provider, channel, recipient)
        pending = self.in_progress.get(key)
        if pending is not None:  # the same key in flight: answer from its result
            await asyncio.shield(pending)
            if key in self.ledger.responses:
                return self._replay(key, provider, channel, recipient)

        if self.in_outage(provider, channel):
            return _error(503, "PROVIDER_UNAVAILABLE", f"{provider} is unavailable", {"Retry-After": "5"})
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.in_progress[key] = future
        try:
            delay = max(self.latency_ms + self.rng.uniform(-self.jitter_ms, self.jitter_ms), 0.0) / 1000
            if delay:
                await asyncio.sleep(delay)
            answer = decide(self.mix, channel, recipient, key)
            if answer.verdict != Verdict.ACCEPT:
                return self._refuse(answer)
            response = {"id": f"{provider}-{uuid.uuid4().hex[:16]}", "status": "accepted",
                        "cost": COST.get(channel, 0.0), "replay": False}
            log_id, attempt = split_key(key)
            self.ledger.record({
                "log_id": log_id, "attempt": attempt, "recipient": recipient, "channel": channel,
                "provider": provider, "idempotency_key": key, "received_at": datetime.now(UTC).isoformat(),
                "replay": False, "response": response,
            })
            return _json(response)
        finally:
            future.set_result({})
            self.in_progress.pop(key, None)

    def _replay(self, key: str, provider: str, channel: str, recipient: str) -> web.Response:
        response = {**self.ledger.responses[key], "replay": True}
        log_id, attempt = split_key(key)
        self.ledger.record({
            "log_id": log_id, "attempt": attempt, "recipient": recipient, "channel": channel,
            "provider": provider, "idempotency_key": key, "received_at": datetime.now(UTC).isoformat(),
            "replay": True, "response": None,
        })
        return _json(response)

    @staticmethod
    def _refuse(answer: Answer) -> web.Response:
        headers = {"Retry-After": f"{answer.retry_after_s:g}"} if answer.retry_after_s is not None else None
        return _error(answer.status, answer.code or "ERROR", answer.message or "", headers)

    async def ledger_rows(self, request: web.Request) -> web.Response:
        try:
            offset = int(request.query.get("offset", "0"))
            limit = int(request.query.get("limit", "1000000"))
        except ValueError:
            return _error(400, "VALIDATION_ERROR", "offset and limit must be integers")
        rows = [{k: v for k, v in r.items() if k != "response"} for r in self.ledger.rows[offset:offset + limit]]
        return _json(rows)

    async def ledger_stats(self, _: web.Request) -> web.Response:
        return _json({**self.ledger.stats(), "requests": self.requests})

    async def ledger_clear(self, _: web.Request) -> web.Response:
        self.ledger.clear()
        self.requests = 0
        return _json({"cleared": True})

    async def set_outage(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            target = str(body.get("provider") or body.get("channel") or "*")
            seconds = float(body["seconds"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            return _error(400, "VALIDATION_ERROR", f"expected {{channel|provider, seconds}}: {exc}")
        self.outages[target] = time.monotonic() + seconds
        return _json({"outage": target, "seconds": seconds})

    async def set_config(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            fields = {k: body[k] for k in ("transient_rate", "permanent_rate", "rate_limit_rate",
                                           "retry_after_s", "seed") if k in body}
            self.mix = replace(self.mix, **fields)
            self.latency_ms = float(body.get("latency_ms", self.latency_ms))
            self.jitter_ms = float(body.get("latency_jitter_ms", self.jitter_ms))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
            return _error(400, "VALIDATION_ERROR", str(exc))
        return _json({"mix": asdict(self.mix), "latency_ms": self.latency_ms})

    async def healthz(self, _: web.Request) -> web.Response:
        return _json({"status": "ok"})


def build_app(provider: MockProvider) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/{provider}/{channel}", provider.send)
    app.router.add_get("/ledger", provider.ledger_rows)
    app.router.add_get("/ledger/stats", provider.ledger_stats)
    app.router.add_delete("/ledger", provider.ledger_clear)
    app.router.add_post("/admin/outage", provider.set_outage)
    app.router.add_post("/admin/config", provider.set_config)
    app.router.add_get("/healthz", provider.healthz)
    app.router.add_get("/readyz", provider.healthz)
    return app
