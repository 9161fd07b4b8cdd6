"""Signal through a self-hosted signal-cli REST API (github.com/bbernhard/signal-cli-rest-api):
``POST {base}/v2/send`` with ``{"message", "number", "recipients", "base64_attachments"}``.

``number`` is our registered Signal account (the sender identity; setting ``number``); the answer
to a send is ``201 {"timestamp": "..."}``, which identifies the message and is kept as its vendor
reference. Errors are ``{"error": "<text>"}``; signal-cli's exceptions are recognised by their text
(the table below). signal-cli takes no idempotency key: the adapter sends ``Idempotency-Key`` as a
header, which the mock provider honours and the real service ignores (docs/providers.md, "Signal").
"""

from __future__ import annotations

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
from services.sender.adapters.transport import (
    HttpRequest,
    HttpResponse,
    HttpTransport,
    TransportError,
    basic_auth,
)
from services.sender.classification import parse_retry_after
from shared.core.models import OutcomeClass

P, T, R = OutcomeClass.PERMANENT, OutcomeClass.TRANSIENT, OutcomeClass.RECOVERABLE

# signal-cli's error texts (lower-cased substrings), first match wins: our class and code.
SIGNAL_ERRORS: tuple[tuple[str, ErrorClass], ...] = (
    ("unregistered user", ErrorClass(P, "NOT_ON_SIGNAL", bounced=True)),  # the recipient has no account
    ("is not registered", ErrorClass(R, "ACCOUNT_NOT_REGISTERED")),  # our number, on this server
    ("invalid phone number", ErrorClass(P, "INVALID_NUMBER")),
    ("invalid number", ErrorClass(P, "INVALID_NUMBER")),
    ("untrusted identity", ErrorClass(P, "UNTRUSTED_IDENTITY")),  # the recipient's safety number changed
    ("untrustedidentity", ErrorClass(P, "UNTRUSTED_IDENTITY")),
    ("proofrequired", ErrorClass(R, "CAPTCHA_REQUIRED")),  # Signal asks our account for a captcha
    ("proof required", ErrorClass(R, "CAPTCHA_REQUIRED")),
    ("captcha", ErrorClass(R, "CAPTCHA_REQUIRED")),
    ("ratelimit", ErrorClass(T, "RATE_LIMITED")),
    ("rate limit", ErrorClass(T, "RATE_LIMITED")),
    ("too many", ErrorClass(T, "RATE_LIMITED")),
    ("message too long", ErrorClass(P, "VALIDATION_ERROR")),
    ("attachment", ErrorClass(P, "VALIDATION_ERROR")),
    ("timeout", ErrorClass(T, "TIMEOUT")),
    ("timed out", ErrorClass(T, "TIMEOUT")),
)


def error_class(status: int, text: str) -> ErrorClass:
    """signal-cli's answer -> our class: by its error text first, else by the HTTP status."""
    lowered = text.lower()
    for needle, row in SIGNAL_ERRORS:
        if needle in lowered:
            return row
    if status == 429:
        return ErrorClass(T, "RATE_LIMITED")
    if status == 400:
        return ErrorClass(P, "VALIDATION_ERROR")
    if status in (401, 403):
        return ErrorClass(R, "AUTH_FAILED")
    if status == 404:
        return ErrorClass(R, "PROVIDER_UNAVAILABLE")  # no such endpoint: a wrong base_url or an old API
    return http_status_row(status)


def build_body(request: SendRequest, number: str) -> dict[str, Any]:
    payload = request.payload
    body: dict[str, Any] = {
        "message": str(payload.get("body") or payload.get("text") or ""),
        "number": str(payload.get("from") or number),
        "recipients": [request.recipient],
    }
    attachments = payload.get("attachments")
    if isinstance(attachments, list) and attachments:
        body["base64_attachments"] = [str(a) for a in attachments]
    if payload.get("text_mode") in ("normal", "styled"):
        body["text_mode"] = payload["text_mode"]
    return body


def result_from_signal(response: HttpResponse, latency_ms: float) -> SendResult:
    data = response.json()
    body: dict[str, Any] = data if isinstance(data, dict) else {}
    if 200 <= response.status < 300:
        timestamp = body.get("timestamp")
        return SendResult(
            OutcomeClass.SUCCESS,
            latency_ms,
            vendor_ref=str(timestamp) if timestamp is not None else None,
            replay=bool(body.get("replay", False)),
        )
    text = body.get("error")
    message = text if isinstance(text, str) and text else f"HTTP {response.status}"
    row = error_class(response.status, message)
    return failure(row, latency_ms, message, parse_retry_after(response.headers.get("retry-after")))


class SignalCliAdapter:
    def __init__(self, base_url: str, settings: Any, transport: HttpTransport) -> None:
        self.url = f"{base_url.rstrip('/')}/v2/send"
        self.number = str(setting(settings, "number", ""))
        user, password = setting(settings, "username"), setting(settings, "password")
        self.auth = basic_auth(str(user), str(password)) if user and password else None
        self.transport = transport

    async def send(self, request: SendRequest) -> SendResult:
        body = build_body(request, self.number)
        watch = Stopwatch()
        if not body["number"]:
            return failure(ErrorClass(R, "ACCOUNT_NOT_REGISTERED"), watch.ms(), "no Signal number configured")
        if not body["message"] and "base64_attachments" not in body:
            return failure(ErrorClass(P, "VALIDATION_ERROR"), watch.ms(), "a Signal message needs a body")
        headers = {"Content-Type": "application/json", "Idempotency-Key": request.idempotency_key}
        if self.auth is not None:
            headers["Authorization"] = self.auth
        try:
            response = await self.transport.request(
                HttpRequest("POST", self.url, headers, orjson.dumps(body))
            )
        except TransportError as exc:
            return failure(ErrorClass(T, exc.code), watch.ms(), exc.message)
        return result_from_signal(response, watch.ms())

    async def close(self) -> None:
        return None
