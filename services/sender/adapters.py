"""Provider adapters: one interface, the HTTP transport at the edge, classification by table."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from shared.classification import classify_http, default_code, parse_retry_after
from shared.classification import BOUNCE_CODES
from shared.models import OutcomeClass


@dataclass(frozen=True, slots=True)
class SendRequest:
    provider: str
    channel: str
    recipient: str
    payload: dict[str, Any]
    idempotency_key: str
    log_id: int
    attempt: int


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: OutcomeClass
    latency_ms: float
    vendor_ref: str | None = None
    cost: float = 0.0
    replay: bool = False
    error_code: str | None = None
    error_message: str | None = None
    retry_after_s: float | None = None
    bounced: bool = False


class ProviderAdapter(Protocol):
    async def send(self, request: SendRequest) -> SendResult: ...

    async def close(self) -> None: ...


def result_from_http(status: int, body: bytes, retry_after: str | None, latency_ms: float) -> SendResult:
    """Map a provider's HTTP answer onto a :class:`SendResult` (pure, unit-tested)."""
    data: dict[str, Any] = {}
    try:
        parsed = orjson.loads(body) if body else {}
        if isinstance(parsed, dict):
            data = parsed
    except orjson.JSONDecodeError:
        pass
    error = data.get("error") if isinstance(data.get("error"), dict) else {}
    code = error.get("code") if isinstance(error.get("code"), str) else None
    outcome = classify_http(status, code if status >= 300 else None)
    if outcome == OutcomeClass.SUCCESS:
        return SendResult(
            outcome=outcome,
            latency_ms=latency_ms,
            vendor_ref=str(data.get("id")) if data.get("id") is not None else None,
            cost=float(data.get("cost") or 0.0),
            replay=bool(data.get("replay", False)),
        )
    code = code or default_code(status)
    message = error.get("message") if isinstance(error.get("message"), str) else f"HTTP {status}"
    return SendResult(
        outcome=outcome,
        latency_ms=latency_ms,
        error_code=code,
        error_message=message[:500],
        retry_after_s=parse_retry_after(retry_after),
        bounced=code in BOUNCE_CODES,
    )


class HttpProviderAdapter:
    """Speaks the mock provider's JSON API (``POST {base}/{provider}/{channel}``)."""

    def __init__(self, base_url: str, timeout_s: float, concurrency: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
        )

    async def send(self, request: SendRequest) -> SendResult:
        url = f"{self.base_url}/{request.provider}/{request.channel}"
        body = orjson.dumps({"to": request.recipient, "payload": request.payload})
        headers = {"Content-Type": "application/json", "Idempotency-Key": request.idempotency_key}
        started = time.perf_counter()
        try:
            async with self.session.post(url, data=body, headers=headers) as response:
                content = await response.read()
                latency_ms = (time.perf_counter() - started) * 1000
                return result_from_http(response.status, content, response.headers.get("Retry-After"), latency_ms)
        except TimeoutError:
            return self._failure("TIMEOUT", "provider did not answer in time", started)
        except aiohttp.ClientError as exc:
            return self._failure("CONNECTION_ERROR", repr(exc)[:300], started)

    @staticmethod
    def _failure(code: str, message: str, started: float) -> SendResult:
        latency_ms = (time.perf_counter() - started) * 1000
        return SendResult(OutcomeClass.TRANSIENT, latency_ms, error_code=code, error_message=message)

    async def close(self) -> None:
        await self.session.close()
        await asyncio.sleep(0)
