"""Generic webhooks: ``POST <recipient URL>`` with a JSON body, signed with HMAC-SHA256.

Headers: ``X-Switchboard-Signature: t=<unix>,v1=<hex>`` (shared/core/signatures.py), ``Idempotency-Key``
(the receiver's dedup key), ``User-Agent``. Redirects are not followed. 2xx is success; 408, 425,
429 and 5xx are transient (Retry-After honoured); 410 means the endpoint is gone; any other answer is
permanent. With ``https_only`` a plain-http URL is refused before any call.

The URL is the tenant's: it goes through the outbound policy (shared/net/outbound.py) here (credentials,
numeric internal hosts) and again at connect time (the transport is a ``GuardedTransport``). What the
tenant sees of a failure is its class and a generic code and text (``HTTP 503``, ``the endpoint could
not be reached``), never the remote body or a socket error: those would turn the sender into a
scanner of whatever it can reach.
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
    details,
    failure,
    http_status_row,
    outcome_of,
    setting,
)
from services.sender.adapters.transport import HttpRequest, HttpResponse, HttpTransport
from services.sender.classification import parse_retry_after
from shared.core.errors import DestinationRefused, ProviderError
from shared.core.models import OutcomeClass
from shared.core.signatures import SWITCHBOARD_HEADER, sign_timestamped
from shared.net.outbound import Network, allowed_for, check_url
from shared.runtime.logs import get_logger

log = get_logger("sender.webhook")

USER_AGENT = "Switchboard-Webhooks/1"


def result_from_webhook(response: HttpResponse, latency_ms: float) -> SendResult:
    if 200 <= response.status < 300:
        return SendResult(
            OutcomeClass.SUCCESS,
            latency_ms,
            vendor_ref=response.headers.get("x-request-id"),
            replay=response.headers.get("x-replay") == "true",
            details=details(http_status=response.status),
        )
    if response.status == 410:
        row = ErrorClass(OutcomeClass.PERMANENT, "ENDPOINT_GONE")
    elif 300 <= response.status < 400:
        row = ErrorClass(OutcomeClass.PERMANENT, "REDIRECT_REFUSED")
    else:
        row = http_status_row(response.status)
    return failure(
        row, latency_ms, f"HTTP {response.status}", parse_retry_after(response.headers.get("retry-after"))
    )


TRANSPORT_TEXT = {
    "TIMEOUT": "the endpoint did not answer in time",
    "ADDRESS_NOT_ALLOWED": "the endpoint's address is not allowed",
}


class WebhookAdapter:
    def __init__(
        self,
        settings: Any,
        transport: HttpTransport,
        default_secret: str = "",
        allowlist: dict[str, tuple[Network, ...]] | None = None,
    ) -> None:
        self.secret = str(setting(settings, "secret", default_secret))
        self.https_only = bool(setting(settings, "https_only", False))
        self.transport = transport
        self.allowlist = allowlist or {}

    async def send(self, request: SendRequest) -> SendResult:
        watch = Stopwatch()
        if self.https_only and not request.recipient.lower().startswith("https://"):
            return failure(
                ErrorClass(OutcomeClass.PERMANENT, "INVALID_URL"), watch.ms(), "only https:// is allowed"
            )
        try:
            check_url(request.recipient, allowed_for(self.allowlist, request.tenant))
        except DestinationRefused as exc:
            return failure(ErrorClass(OutcomeClass.PERMANENT, exc.code), watch.ms(), exc.message)
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
            response = await self.transport.request(
                HttpRequest("POST", request.recipient, headers, body, tenant=request.tenant)
            )
        except ProviderError as exc:  # no answer, or an address the outbound policy refuses
            log.info("webhook_unreachable", log_id=request.log_id, code=exc.code, detail=exc.message)
            outcome = outcome_of(exc)
            text = TRANSPORT_TEXT.get(exc.code, "the endpoint could not be reached")
            return failure(ErrorClass(outcome, exc.code), watch.ms(), text)
        return result_from_webhook(response, watch.ms())

    async def close(self) -> None:
        return None
