"""Provider delivery reports -> :class:`ReceiptMessage` (pure): signature check, then mapping tables.

Every report must carry Switchboard's client reference (the idempotency key ``<log id>-<attempt>``,
sent with each message: ``Reference``, ``biz_opaque_callback_data``, an email header), which names
the log and attempt; a report without one is counted as unmatched and dropped with a 200, so that
the provider does not retry it forever.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.core.errors import SwitchboardError
from shared.core.models import ReceiptMessage, ReceiptStatus
from shared.core.signatures import (
    GATEWAY_HEADER,
    HUB_HEADER,
    SWITCHBOARD_HEADER,
    verify_gateway,
    verify_hub,
    verify_timestamped,
)

D, B, F, Q = ReceiptStatus.DELIVERED, ReceiptStatus.BOUNCED, ReceiptStatus.FAILED, ReceiptStatus.QUEUED

SMS_STATUSES = {
    "accepted": Q,
    "queued": Q,
    "sending": Q,
    "sent": Q,
    "delivered": D,
    "read": D,
    "undelivered": F,
    "failed": F,
}
SMS_BOUNCE_CODES = frozenset({"30005", "30006", "21211", "21614"})  # unknown destination, landline ...
WHATSAPP_STATUSES = {"sent": Q, "delivered": D, "read": D, "failed": F}
WHATSAPP_BOUNCE_CODES = frozenset({131026})  # not a WhatsApp user, or cannot receive
EMAIL_EVENTS = {"processed": Q, "deferred": Q, "delivered": D, "bounce": B, "dropped": F}
JSON_STATUSES = {"queued": Q, "sent": Q, "delivered": D, "bounced": B, "failed": F}
_REFERENCE = re.compile(r"([1-9][0-9]{0,18})-([1-9][0-9]{0,8})")


class ReceiptError(SwitchboardError):
    """A report that is refused: ``status`` is the HTTP answer (401 bad signature, 400 malformed)."""

    def __init__(self, status: int, result: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.result = result


@dataclass
class Parsed:
    receipts: list[ReceiptMessage] = field(default_factory=list)
    unmatched: int = 0  # reports without a usable reference, or with a status we do not track


def reference(value: Any) -> tuple[int, int] | None:
    match = _REFERENCE.fullmatch(str(value or "").strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _when(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)


def _add(parsed: Parsed, provider: str, ref: Any, status: ReceiptStatus | None, **fields: Any) -> None:
    key = reference(ref)
    if key is None or status is None:
        parsed.unmatched += 1
        return
    parsed.receipts.append(
        ReceiptMessage(
            log_id=key[0],
            attempt=key[1],
            provider=provider,
            status=status,
            recipient=str(fields.pop("recipient", "") or f"ref:{key[0]}"),
            **fields,
        )
    )


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ReceiptError(400, "malformed", f"not JSON: {exc}") from exc


def parse_sms(
    provider: str, url: str, form: Mapping[str, str], headers: Mapping[str, str], secret: str
) -> Parsed:
    """SMS gateway status callback (form-encoded, ``X-Gateway-Signature`` over URL + sorted fields)."""
    if not verify_gateway(secret, url, form, headers.get(GATEWAY_HEADER)):
        raise ReceiptError(401, "bad_signature", "signature does not match")
    raw = str(form.get("MessageStatus", "")).lower()
    code = str(form.get("ErrorCode", "") or "") or None
    status = SMS_STATUSES.get(raw)
    if raw == "undelivered" and code in SMS_BOUNCE_CODES:
        status = B
    parsed = Parsed()
    _add(
        parsed,
        provider,
        form.get("Reference"),
        status,
        recipient=form.get("To"),
        vendor_ref=form.get("MessageSid") or None,
        provider_status=raw[:200],
        error_code=code,
    )
    return parsed


def parse_whatsapp(
    provider: str, body: bytes, headers: Mapping[str, str], secret: str, not_before: float | None = None
) -> Parsed:
    """WhatsApp Cloud API webhook: ``entry[].changes[].value.statuses[]``, ``X-Hub-Signature-256``.
    A status older than ``not_before`` (its signed ``timestamp``) is stale: a replay, not applied."""
    if not verify_hub(secret, body, headers.get(HUB_HEADER)):
        raise ReceiptError(401, "bad_signature", "signature does not match")
    document = _json(body)
    parsed = Parsed()
    try:
        statuses = [
            s
            for e in document.get("entry", [])
            for c in e.get("changes", [])
            for s in c.get("value", {}).get("statuses", [])
        ]
    except (AttributeError, TypeError) as exc:
        raise ReceiptError(400, "malformed", f"not a WhatsApp webhook: {exc}") from exc
    for row in statuses:
        if not isinstance(row, dict):
            parsed.unmatched += 1
            continue
        if not_before is not None and _when(row.get("timestamp")).timestamp() < not_before:
            parsed.unmatched += 1
            continue
        raw = str(row.get("status", "")).lower()
        errors = row.get("errors") if isinstance(row.get("errors"), list) else []
        code = errors[0].get("code") if errors and isinstance(errors[0], dict) else None
        status = B if raw == "failed" and code in WHATSAPP_BOUNCE_CODES else WHATSAPP_STATUSES.get(raw)
        recipient = str(row.get("recipient_id") or "")
        _add(
            parsed,
            provider,
            row.get("biz_opaque_callback_data"),
            status,
            recipient=f"+{recipient.lstrip('+')}" if recipient else "",
            vendor_ref=row.get("id"),
            provider_status=raw[:200],
            error_code=str(code) if code is not None else None,
            occurred_at=_when(row.get("timestamp")),
        )
    return parsed


def parse_email(
    provider: str, body: bytes, headers: Mapping[str, str], secret: str, now: float, max_skew_s: float
) -> Parsed:
    """Email event webhook: a JSON list of events, ``X-Switchboard-Signature`` (timestamped)."""
    if not verify_timestamped(secret, body, headers.get(SWITCHBOARD_HEADER), now, max_skew_s):
        raise ReceiptError(401, "bad_signature", "signature does not match or is too old")
    events = _json(body)
    if not isinstance(events, list):
        raise ReceiptError(400, "malformed", "expected a JSON list of events")
    parsed = Parsed()
    for event in events:
        if not isinstance(event, dict):
            parsed.unmatched += 1
            continue
        raw = str(event.get("event", "")).lower()
        status = F if raw == "bounce" and event.get("type") == "blocked" else EMAIL_EVENTS.get(raw)
        _add(
            parsed,
            provider,
            event.get("reference"),
            status,
            recipient=event.get("email"),
            vendor_ref=event.get("sg_message_id"),
            provider_status=raw[:200],
            error_code=str(event.get("reason") or "")[:200] or None,
            occurred_at=_when(event.get("timestamp")),
        )
    return parsed


def parse_json(
    provider: str, body: bytes, headers: Mapping[str, str], secret: str, now: float, max_skew_s: float
) -> Parsed:
    """The generic JSON report ``{"id", "reference", "status", "recipient", "error_code"}``."""
    if not verify_timestamped(secret, body, headers.get(SWITCHBOARD_HEADER), now, max_skew_s):
        raise ReceiptError(401, "bad_signature", "signature does not match or is too old")
    report = _json(body)
    if not isinstance(report, dict):
        raise ReceiptError(400, "malformed", "expected a JSON object")
    raw = str(report.get("status", "")).lower()
    parsed = Parsed()
    _add(
        parsed,
        provider,
        report.get("reference"),
        JSON_STATUSES.get(raw),
        recipient=report.get("recipient"),
        vendor_ref=report.get("id"),
        provider_status=raw[:200],
        error_code=report.get("error_code"),
    )
    return parsed
