"""Delivery reports as each emulated provider sends them (pure): URL, body and signature headers."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

import orjson

from services.mock_provider.behaviour import ReceiptVerdict
from shared.core.signatures import (
    GATEWAY_HEADER,
    HUB_HEADER,
    SWITCHBOARD_HEADER,
    sign_gateway,
    sign_hub,
    sign_timestamped,
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """An accepted message the provider will report on."""

    api: str  # json, sms_gateway, whatsapp_cloud, smtp
    provider: str
    channel: str
    recipient: str
    key: str  # the client reference: Switchboard's idempotency key
    ref: str = ""  # the provider's message id
    url: str | None = None  # a per-message status callback URL (SMS gateway StatusCallback)
    sender: str = ""


def public_ref(api: str, ref: str) -> str:
    """The message id an API answers with for the ledger's ``ref``; its reports carry the same one."""
    if api == "sms_gateway":
        return "SM" + uuid.uuid5(uuid.NAMESPACE_URL, ref).hex
    if api == "whatsapp_cloud":
        return "wamid." + base64.b64encode(ref.encode()).decode().rstrip("=")
    return ref


@dataclass(frozen=True, slots=True)
class Report:
    url: str
    body: bytes
    headers: dict[str, str]


SMS_STATUS = {
    ReceiptVerdict.DELIVERED: ("delivered", ""),
    ReceiptVerdict.BOUNCED: ("undelivered", "30005"),
    ReceiptVerdict.FAILED: ("failed", "30003"),
}
WHATSAPP_ERRORS = {
    ReceiptVerdict.BOUNCED: (131026, "Message undeliverable"),
    ReceiptVerdict.FAILED: (131000, "Something went wrong"),
}
EMAIL_EVENTS = {
    ReceiptVerdict.DELIVERED: ("delivered", ""),
    ReceiptVerdict.BOUNCED: ("bounce", "550 5.1.1 no such user"),
    ReceiptVerdict.FAILED: ("dropped", "554 5.7.1 rejected by policy"),
}


def build_report(
    delivery: Delivery, verdict: ReceiptVerdict, base_url: str, secret: str, now: float | None = None
) -> Report:
    now = time.time() if now is None else now
    base = base_url.rstrip("/")
    if delivery.api == "sms_gateway":
        status, code = SMS_STATUS[verdict]
        url = delivery.url or f"{base}/receipts/sms/{delivery.provider}"
        form = {
            "MessageSid": public_ref(delivery.api, delivery.ref),
            "MessageStatus": status,
            "To": delivery.recipient,
            "From": delivery.sender,
            "Reference": delivery.key,
            **({"ErrorCode": code} if code else {}),
        }
        return Report(
            url,
            urlencode(form).encode(),
            {
                "Content-Type": "application/x-www-form-urlencoded",
                GATEWAY_HEADER: sign_gateway(secret, url, form),
            },
        )
    if delivery.api == "whatsapp_cloud":
        status_row: dict[str, object] = {
            "id": public_ref(delivery.api, delivery.ref),
            "status": "delivered" if verdict == ReceiptVerdict.DELIVERED else "failed",
            "timestamp": str(int(now)),
            "recipient_id": delivery.recipient.lstrip("+"),
            "biz_opaque_callback_data": delivery.key,
        }
        if verdict in WHATSAPP_ERRORS:
            error_code, title = WHATSAPP_ERRORS[verdict]
            status_row["errors"] = [{"code": error_code, "title": title}]
        body = orjson.dumps(
            {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": "102290129340398",
                        "changes": [
                            {
                                "field": "messages",
                                "value": {
                                    "messaging_product": "whatsapp",
                                    "metadata": {"phone_number_id": delivery.sender},
                                    "statuses": [status_row],
                                },
                            }
                        ],
                    }
                ],
            }
        )
        url = f"{base}/receipts/whatsapp/{delivery.provider}"
        return Report(url, body, {"Content-Type": "application/json", HUB_HEADER: sign_hub(secret, body)})
    if delivery.api == "smtp":
        event, reason = EMAIL_EVENTS[verdict]
        body = orjson.dumps(
            [
                {
                    "event": event,
                    "email": delivery.recipient,
                    "timestamp": int(now),
                    "sg_message_id": public_ref(delivery.api, delivery.ref),
                    "reference": delivery.key,
                    "reason": reason,
                }
            ]
        )
        url = f"{base}/receipts/email/{delivery.provider}"
    else:
        body = orjson.dumps(
            {
                "id": public_ref(delivery.api, delivery.ref),
                "reference": delivery.key,
                "status": verdict.value,
                "recipient": delivery.recipient,
                "error_code": None,
            }
        )
        url = f"{base}/receipts/json/{delivery.provider}"
    return Report(
        url,
        body,
        {"Content-Type": "application/json", SWITCHBOARD_HEADER: sign_timestamped(secret, body, int(now))},
    )
