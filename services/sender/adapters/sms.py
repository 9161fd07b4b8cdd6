"""SMS and MMS over an HTTP gateway API in the style of the common SMS gateways.

``POST {base}/2010-04-01/Accounts/{account}/Messages.json``, form-encoded (To, From, Body, MediaUrl,
StatusCallback, Reference), HTTP basic auth (account : token), ``Idempotency-Key`` header. Success
is ``201 {"sid", "status", "price"}``; an error is ``{"code", "message", "status"}`` whose numeric
code the table below maps onto transient / recoverable / permanent.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from services.sender.adapters.base import (
    ErrorClass,
    SendRequest,
    SendResult,
    Stopwatch,
    details,
    error_row,
    failure,
    outcome_of,
    required_setting,
    setting,
)
from services.sender.adapters.transport import (
    HttpRequest,
    HttpResponse,
    HttpTransport,
    basic_auth,
)
from services.sender.classification import parse_retry_after
from shared.core.errors import ProviderError
from shared.core.models import OutcomeClass

P, T, R = OutcomeClass.PERMANENT, OutcomeClass.TRANSIENT, OutcomeClass.RECOVERABLE

# The gateway's error codes (numbers as the common gateways use them).
SMS_ERRORS: dict[int, ErrorClass] = {
    20003: ErrorClass(R, "AUTH_FAILED"),  # our credentials for this provider are wrong: try the next one
    20429: ErrorClass(T, "RATE_LIMITED"),
    20500: ErrorClass(T, "SERVER_ERROR"),
    20503: ErrorClass(R, "PROVIDER_UNAVAILABLE"),
    21211: ErrorClass(P, "INVALID_NUMBER"),  # invalid 'To' number
    21214: ErrorClass(P, "INVALID_NUMBER"),  # 'To' cannot be reached
    21408: ErrorClass(R, "REGION_NOT_ENABLED"),  # this account may not send there; another may
    21602: ErrorClass(P, "VALIDATION_ERROR"),  # body required
    21606: ErrorClass(R, "SENDER_NOT_ALLOWED"),  # 'From' not usable on this account
    21610: ErrorClass(P, "UNSUBSCRIBED"),  # the recipient replied STOP
    21612: ErrorClass(P, "INVALID_NUMBER"),  # not reachable by SMS
    21614: ErrorClass(P, "INVALID_NUMBER"),  # not a mobile number
    21617: ErrorClass(P, "PAYLOAD_TOO_LARGE"),  # body over 1600 characters
    21620: ErrorClass(P, "VALIDATION_ERROR"),  # invalid media URL
    30001: ErrorClass(T, "QUEUE_OVERFLOW"),
    30004: ErrorClass(P, "BLOCKED"),
    30007: ErrorClass(P, "SPAM_REJECTED"),  # carrier filtering
}


def build_form(request: SendRequest, sender: str, status_callback: str | None) -> dict[str, Any]:
    payload = request.payload
    form: dict[str, Any] = {
        "To": request.recipient,
        "From": str(payload.get("from") or sender),
        "Body": str(payload.get("body") or payload.get("text") or ""),
        "Reference": request.idempotency_key,
    }
    media = payload.get("media_urls") or payload.get("media_url")
    if request.channel == "mms" and media:
        form["MediaUrl"] = [str(m) for m in media] if isinstance(media, list) else [str(media)]
    if status_callback:
        form["StatusCallback"] = status_callback
    return form


def _cost(price: Any) -> float:
    try:
        return abs(float(price))
    except (TypeError, ValueError):
        return 0.0


def result_from_gateway(response: HttpResponse, latency_ms: float) -> SendResult:
    data = response.json()
    body: dict[str, Any] = data if isinstance(data, dict) else {}
    if 200 <= response.status < 300:
        sid = body.get("sid")
        return SendResult(
            OutcomeClass.SUCCESS,
            latency_ms,
            vendor_ref=str(sid) if sid else None,
            cost=_cost(body.get("price")),
            replay=bool(body.get("replay", False)),
            details=details(
                provider_status=body.get("status"),
                segments=_count(body.get("num_segments")),
                media=_count(body.get("num_media")),
                price_unit=body.get("price_unit"),
            ),
        )
    code = body.get("code")
    row = error_row(SMS_ERRORS, code, response.status)
    message = body.get("message") if isinstance(body.get("message"), str) else f"HTTP {response.status}"
    return failure(
        row,
        latency_ms,
        str(message),
        parse_retry_after(response.headers.get("retry-after")),
        details(http_status=response.status, provider_code=code if isinstance(code, int) else None),
    )


def _count(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class SmsGatewayAdapter:
    def __init__(
        self, base_url: str, settings: Any, transport: HttpTransport, default_token: str = ""
    ) -> None:
        self.account = str(required_setting(settings, "account_sid", "sms_gateway"))
        self.token = str(setting(settings, "auth_token", default_token))
        self.sender = str(setting(settings, "from", "Switchboard"))
        self.status_callback = setting(settings, "status_callback")
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{self.account}/Messages.json"
        self.transport = transport

    async def send(self, request: SendRequest) -> SendResult:
        body = urlencode(build_form(request, self.sender, self.status_callback), doseq=True).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": basic_auth(self.account, self.token),
            "Idempotency-Key": request.idempotency_key,
        }
        watch = Stopwatch()
        try:
            response = await self.transport.request(HttpRequest("POST", self.url, headers, body))
        except ProviderError as exc:  # no answer, or an address the outbound policy refuses
            return failure(ErrorClass(outcome_of(exc), exc.code), watch.ms(), exc.message)
        return result_from_gateway(response, watch.ms())

    async def close(self) -> None:
        return None
