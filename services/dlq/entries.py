"""What one DLQ message is, read from its body and headers (pure; a letter is decoded by
:mod:`shared.bus.wire`, which also tells a letter from poison).

Three shapes reach the ``dlq``:

* a dead letter from the responder: body = :class:`shared.core.models.DeadLetter` JSON, type
  ``switchboard.dead_letter.v1``, message id ``dl-<log id>-<attempt>``, ``x-switchboard-*`` headers;
* a poison message a service copied to ``dlx`` itself: the original body, with the reason
  (``x-switchboard-reason: poison_message``), the error and the source queue in headers;
* a poison message rejected by a service (or redelivered past the delivery limit) and moved by the
  broker: the original body, untouched, and an ``x-death`` header (reason ``rejected`` or
  ``delivery_limit``, source queue, time).

A dead letter can be requeued; a poison message cannot (there is nothing valid to send): it can be
inspected, exported and purged.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from shared.bus import wire
from shared.bus.topology import (
    HEADER_ERROR,
    HEADER_REASON,
    HEADER_SOURCE,
    HEADER_SOURCE_QUEUE,
)
from shared.bus.wire import Received
from shared.core.errors import MessageError
from shared.core.models import DeadLetter
from shared.core.recipients import mask

HEADER_DELIVERY_COUNT = "x-delivery-count"


class EntryKind(StrEnum):
    DEAD_LETTER = "dead_letter"
    POISON = "poison"


class DlqEntry(BaseModel):
    """One message of the DLQ as an operator sees it; ``body`` only when asked for."""

    model_config = ConfigDict(frozen=True)

    kind: EntryKind
    key: str  # the message id, or ``sha-<digest of the body>`` when it has none
    message_id: str | None
    log_id: int | None
    attempt: int | None
    tenant: str | None
    campaign_id: int | None
    channel: str | None
    recipient: str | None
    provider: str | None
    status: str | None
    reason: str
    error_class: str | None
    error_code: str | None
    error_message: str | None
    dead_lettered_at: datetime | None
    source_queue: str | None
    source: str | None
    message_type: str | None
    content_type: str | None
    body_size: int
    delivery_count: int  # how often the DLQ has handed it out before (each read gives it back)
    letter: DeadLetter | None = None

    @property
    def masked_recipient(self) -> str:
        return mask(self.recipient) if self.recipient else ""

    def public(self, reveal: bool = False) -> dict[str, Any]:
        """JSON-ready fields, the recipient masked unless ``reveal``."""
        data = self.model_dump(mode="json", exclude={"letter"})
        if not reveal:
            data["recipient"] = self.masked_recipient or None
        return data


def body_fields(body: bytes) -> dict[str, Any]:
    """The body as JSON text when it is UTF-8, else base64: for ``show`` and ``export``."""
    try:
        return {"body": body.decode("utf-8"), "body_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(body).decode(), "body_encoding": "base64"}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = _text(value) if isinstance(value, str | bytes) else None
    return int(text) if text and text.isdigit() else None


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list | tuple) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


_NUMBER_FIELD = re.compile(rb'"(log_id|attempt)"\s*:\s*(\d{1,18})')


def _json_object(body: bytes) -> dict[str, Any]:
    """The body's fields when it is a JSON object; from broken JSON, at least the log id and attempt."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {k.decode(): int(v) for k, v in _NUMBER_FIELD.findall(body[:4096])}
    return data if isinstance(data, dict) else {}


def content_key(body: bytes) -> str:
    return "sha-" + hashlib.blake2b(body, digest_size=6).hexdigest()


def parse_entry(
    body: bytes,
    headers: Mapping[str, Any] | None,
    *,
    message_id: str | None = None,
    message_type: str | None = None,
    content_type: str | None = None,
    timestamp: datetime | None = None,
) -> DlqEntry:
    """:func:`entry_of` a message given by its parts."""
    return entry_of(
        Received(
            body,
            message_id=message_id,
            type=message_type,
            headers=headers or {},
            content_type=content_type,
            timestamp=timestamp,
        )
    )


def entry_of(message: Received) -> DlqEntry:
    """Classify and describe one DLQ message; never raises (unreadable bodies are poison)."""
    body, headers, timestamp = message.body, message.headers, message.timestamp
    common: dict[str, Any] = {
        "key": message.message_id or content_key(body),
        "message_id": message.message_id or None,
        "message_type": message.type,
        "content_type": message.content_type,
        "body_size": len(body),
        "delivery_count": _int(headers.get(HEADER_DELIVERY_COUNT)) or 0,
    }
    death = _first_death(headers)
    if wire.is_dead_letter(message):
        try:
            letter: DeadLetter = wire.decode_dead_letter(message)
        except MessageError as exc:
            return _poison(body, headers, death, common, timestamp, "malformed_dead_letter", str(exc))
        return DlqEntry(
            kind=EntryKind.DEAD_LETTER,
            log_id=letter.log_id,
            attempt=letter.attempt,
            tenant=letter.tenant,
            campaign_id=letter.campaign_id,
            channel=letter.channel,
            recipient=letter.recipient,
            provider=letter.provider,
            status=letter.status.value,
            reason=letter.reason.value,
            error_class=letter.error_class.value,
            error_code=letter.error_code,
            error_message=letter.error_message,
            dead_lettered_at=letter.dead_lettered_at,
            source_queue=None,
            source=_text(headers.get(HEADER_SOURCE)) or "responder",
            letter=letter,
            **common,
        )
    return _poison(body, headers, death, common, timestamp, None, None)


def _poison(
    body: bytes,
    headers: Mapping[str, Any],
    death: Mapping[str, Any],
    common: dict[str, Any],
    timestamp: datetime | None,
    reason: str | None,
    error: str | None,
) -> DlqEntry:
    # What the original message says about itself (a dispatch or an outcome), when it is JSON at all.
    original = _json_object(body)
    when = death.get("time")
    return DlqEntry(
        kind=EntryKind.POISON,
        log_id=_int(original.get("log_id")),
        attempt=_int(original.get("attempt")),
        tenant=_text(original.get("tenant")),
        campaign_id=_int(original.get("campaign_id")),
        channel=_text(original.get("channel")),
        recipient=_text(original.get("recipient")),
        provider=_text(original.get("provider")),
        status=None,
        reason=reason
        or _text(headers.get(HEADER_REASON))
        or _text(death.get("reason"))
        or _text(headers.get("x-first-death-reason"))
        or "unknown",
        error_class=None,
        error_code=None,
        error_message=error or _text(headers.get(HEADER_ERROR)),
        dead_lettered_at=when if isinstance(when, datetime) else timestamp,
        source_queue=_text(headers.get(HEADER_SOURCE_QUEUE))
        or _text(death.get("queue"))
        or _text(headers.get("x-first-death-queue")),
        source=_text(headers.get(HEADER_SOURCE)) or ("broker" if death else None),
        **common,
    )
