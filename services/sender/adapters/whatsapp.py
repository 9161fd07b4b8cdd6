"""WhatsApp Business Cloud API (official Graph API): ``POST {base}/{version}/{phone number id}/messages``.

Text messages (``{"body"}``) and template messages (``{"template": {"name", "language", ...}}``),
bearer token, ``biz_opaque_callback_data`` set to the idempotency key so that status webhooks can be
matched to the attempt. Errors are ``{"error": {"code", "message", "error_subcode", ...}}``; the
table maps Meta's codes. Pacing (a minimum gap per business number) is configured per provider.
"""

from __future__ import annotations

from typing import Any

import orjson

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
from services.sender.adapters.transport import HttpRequest, HttpResponse, HttpTransport
from services.sender.classification import parse_retry_after
from shared.core.errors import ProviderError
from shared.core.models import OutcomeClass

P, T, R = OutcomeClass.PERMANENT, OutcomeClass.TRANSIENT, OutcomeClass.RECOVERABLE

WHATSAPP_ERRORS: dict[int, ErrorClass] = {
    0: ErrorClass(R, "AUTH_FAILED"),
    1: ErrorClass(T, "SERVER_ERROR"),  # API unknown
    2: ErrorClass(T, "SERVER_ERROR"),  # API service temporarily down
    4: ErrorClass(T, "RATE_LIMITED"),  # application request limit
    10: ErrorClass(R, "PERMISSION_DENIED"),
    100: ErrorClass(P, "VALIDATION_ERROR"),  # invalid parameter
    190: ErrorClass(R, "AUTH_FAILED"),  # access token expired
    200: ErrorClass(R, "PERMISSION_DENIED"),
    368: ErrorClass(R, "ACCOUNT_BLOCKED"),  # temporarily blocked for policy violations
    80007: ErrorClass(T, "RATE_LIMITED"),  # business account rate limit
    130429: ErrorClass(T, "RATE_LIMITED"),  # Cloud API throughput reached
    131000: ErrorClass(T, "SERVER_ERROR"),  # something went wrong
    131005: ErrorClass(R, "PERMISSION_DENIED"),
    131008: ErrorClass(P, "VALIDATION_ERROR"),  # required parameter missing
    131009: ErrorClass(P, "VALIDATION_ERROR"),  # parameter value invalid
    131016: ErrorClass(R, "PROVIDER_UNAVAILABLE"),  # service unavailable
    131021: ErrorClass(P, "INVALID_NUMBER"),  # recipient cannot be the sender
    131026: ErrorClass(P, "UNDELIVERABLE", bounced=True),  # not a WhatsApp user, or cannot receive
    131030: ErrorClass(P, "INVALID_NUMBER"),  # recipient not in the allowed list
    131031: ErrorClass(R, "ACCOUNT_LOCKED"),
    131042: ErrorClass(R, "PAYMENT_REQUIRED"),
    131045: ErrorClass(R, "CERTIFICATE_ERROR"),
    131047: ErrorClass(P, "REENGAGEMENT_REQUIRED"),  # 24 h window closed: only a template may go
    131048: ErrorClass(R, "SPAM_RATE_LIMITED"),
    131051: ErrorClass(P, "VALIDATION_ERROR"),  # unsupported message type
    131056: ErrorClass(T, "PAIR_RATE_LIMITED"),  # too many messages to this user just now
    132000: ErrorClass(P, "TEMPLATE_PARAMS"),
    132001: ErrorClass(P, "TEMPLATE_NOT_FOUND"),
    133010: ErrorClass(R, "NUMBER_NOT_REGISTERED"),  # our business number is not registered
}


def build_body(request: SendRequest) -> dict[str, Any]:
    payload = request.payload
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": request.recipient.lstrip("+"),
        "biz_opaque_callback_data": request.idempotency_key,
    }
    template = payload.get("template")
    if isinstance(template, dict):
        language = template.get("language", "en_US")
        body["type"] = "template"
        body["template"] = {
            "name": str(template.get("name", "")),
            "language": language if isinstance(language, dict) else {"code": str(language)},
            **({"components": template["components"]} if "components" in template else {}),
        }
    else:
        body["type"] = "text"
        body["text"] = {
            "preview_url": bool(payload.get("preview_url", False)),
            "body": str(payload.get("body") or payload.get("text") or ""),
        }
    return body


def result_from_graph(response: HttpResponse, latency_ms: float) -> SendResult:
    data = response.json()
    body: dict[str, Any] = data if isinstance(data, dict) else {}
    if 200 <= response.status < 300:
        messages = body.get("messages")
        first = (
            messages[0] if isinstance(messages, list) and messages and isinstance(messages[0], dict) else {}
        )
        contacts = body.get("contacts")
        contact = (
            contacts[0] if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict) else {}
        )
        ref = first.get("id")
        return SendResult(
            OutcomeClass.SUCCESS,
            latency_ms,
            vendor_ref=str(ref) if ref else None,
            replay=bool(body.get("replay", False)),
            details=details(message_status=first.get("message_status"), wa_id=contact.get("wa_id")),
        )
    raw_error = body.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    code = error.get("code")
    row = error_row(WHATSAPP_ERRORS, code, response.status)
    message = error.get("message") if isinstance(error.get("message"), str) else f"HTTP {response.status}"
    subcode = error.get("error_subcode")
    return failure(
        row,
        latency_ms,
        str(message),
        parse_retry_after(response.headers.get("retry-after")),
        details(
            http_status=response.status,
            provider_code=code if isinstance(code, int) else None,
            error_subcode=subcode if isinstance(subcode, int) else None,
            fbtrace_id=error.get("fbtrace_id"),
        ),
    )


class WhatsAppCloudAdapter:
    def __init__(
        self, base_url: str, settings: Any, transport: HttpTransport, default_token: str = ""
    ) -> None:
        version = str(setting(settings, "api_version", "v19.0"))
        self.phone_number_id = str(required_setting(settings, "phone_number_id", "whatsapp_cloud"))
        self.token = str(setting(settings, "access_token", default_token))
        self.url = f"{base_url.rstrip('/')}/{version}/{self.phone_number_id}/messages"
        self.transport = transport

    async def send(self, request: SendRequest) -> SendResult:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.token}",
            "Idempotency-Key": request.idempotency_key,
        }
        watch = Stopwatch()
        try:
            response = await self.transport.request(
                HttpRequest("POST", self.url, headers, orjson.dumps(build_body(request)))
            )
        except ProviderError as exc:  # no answer, or an address the outbound policy refuses
            return failure(ErrorClass(outcome_of(exc), exc.code), watch.ms(), exc.message)
        return result_from_graph(response, watch.ms())

    async def close(self) -> None:
        return None
