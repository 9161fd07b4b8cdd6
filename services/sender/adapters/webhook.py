"""Generic webhooks: ``POST <recipient URL>`` with a JSON body, signed with HMAC-SHA256.

Headers: ``X-Switchboard-Signature: t=<unix>,v1=<hex>`` (shared/signatures.py), ``Idempotency-Key``
(the receiver's dedup key), ``User-Agent``. Redirects are not followed. 2xx is success; 408, 425,
429 and 5xx are transient (Retry-After honoured); 410 means the endpoint is gone; any other answer is
permanent. With ``https_only`` a plain-http URL is refused before any call.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from services.sender.adapters.base import (
    ErrorClass,
    SendRequest,
    SendResult,
    Stopwatch,
    failure,
    http_status_row,
    setting,
)
from services.sender.adapters.transport import HttpRequest, HttpResponse, HttpTransport, TransportError
from shared.classification import parse_retry_after
from shared.models import OutcomeClass
from shared.signatures import SWITCHBOARD_HEADER, sign_timestamped

USER_AGENT = "Switchboard-Webhooks/1"


def result_from_webhook(response: HttpResponse, latency_ms: float) -> SendResult:
    if 200 <= response.status < 300:
        return SendResult(
            OutcomeClass.SUCCESS,
            latency_ms,
            vendor_ref=response.headers.get("x-request-id"),
            replay=response.headers.get("x-replay") == "true",
        )
    if response.status == 410:
        row = ErrorClass(OutcomeClass.PERMANENT, "ENDPOINT_GONE")
    elif 300 <= response.status < 400:
        row = ErrorClass(OutcomeClass.PERMANENT, "REDIRECT_REFUSED")
    else:
        row = http_status_row(response.status)
    text = response.content[:200].decode(errors="replace") or f"HTTP {response.status}"
    return failure(row, latency_ms, text, parse_retry_after(response.headers.get("retry-after")))


class WebhookAdapter:
    def __init__(self, settings: Any, transport: HttpTransport, default_secret: str = "") -> None:
        self.secret = str(setting(settings, "secret", default_secret))
        self.https_only = bool(setting(settings, "https_only", False))
        self.transport = transport

    async def send(self, request: SendRequest) -> SendResult:
        watch = Stopwatch()
        if self.https_only and not request.recipient.lower().startswith("https://"):
            return failure(
                ErrorClass(OutcomeClass.PERMANENT, "INVALID_URL"), watch.ms(), "only https:// is allowed"
            )
        body = orjson.dumps(
            {
                "id": request.idempotency_key,
                "log_id": request.log_id,
                "attempt": request.attempt,
                "data": request.payload,
            }
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": request.idempotency_key,
            SWITCHBOARD_HEADER: sign_timestamped(self.secret, body, int(time.time())),
        }
        try:
            response = await self.transport.request(HttpRequest("POST", request.recipient, headers, body))
        except TransportError as exc:
            return failure(ErrorClass(OutcomeClass.TRANSIENT, exc.code), watch.ms(), exc.message)
        return result_from_webhook(response, watch.ms())

    async def close(self) -> None:
        return None
