"""Requests and responses of /v1/messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.api.schemas.common import Id, Page, Priority, Text, Timestamp, check_json
from shared.core.errors import InvalidRecipient
from shared.core.models import Channel, Status
from shared.core.recipients import normalise, reachable_on

MAX_PAYLOAD_BYTES = 64 * 1024


class SendMessage(BaseModel):
    """One message to send now, or at ``send_at``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"channel": "sms", "recipient": "+14155550100", "payload": {"body": "Your code is 123456"}},
                {
                    "channel": "email",
                    "recipient": "ada@example.com",
                    "payload": {"subject": "Welcome", "body": "Hello Ada"},
                    "priority": 0,
                    "send_at": "2030-01-01T09:00:00Z",
                },
            ]
        },
    )

    channel: Channel
    recipient: Text = Field(min_length=1, max_length=320, description="E.164 number, email address or URL.")
    payload: dict[str, Any] = Field(
        default_factory=dict,
        description="What the provider gets (e.g. body, subject), at most 64 KiB as JSON.",
    )
    priority: Priority = 1
    max_attempts: int | None = Field(None, ge=1, le=100, strict=True)
    send_at: Timestamp | None = Field(None, description="Not before this time (a scheduled message).")
    ordering_key: Text | None = Field(
        None,
        min_length=1,
        max_length=200,
        description=(
            "Strict order holds within an ordering group: messages with the same key (per tenant) are sent"
            " one at a time, by due time then id. Default: the recipient; urgent messages (priority 0)"
            " form a group of their own per recipient (docs/ordering.md)."
        ),
    )
    fallback_channels: list[Channel] = Field(
        default_factory=list,
        max_length=4,
        description="Channels to try, in order, when the message cannot be delivered on its own (e.g. "
        '["sms"] for a WhatsApp message: same phone number). Empty: your tenant\'s channel fallback.',
    )

    @field_validator("payload")
    @classmethod
    def _payload_fits(cls, payload: dict[str, Any]) -> dict[str, Any]:
        check_json(payload)
        size = len(orjson.dumps(payload))
        if size > MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload of {size} bytes exceeds {MAX_PAYLOAD_BYTES}")
        return payload

    @model_validator(mode="after")
    def _normalise_recipient(self) -> SendMessage:
        try:
            self.recipient = normalise(self.channel.value, self.recipient)
        except InvalidRecipient as exc:
            raise ValueError(f"recipient: {exc.message}") from exc
        for fallback in self.fallback_channels:
            if fallback == self.channel or self.fallback_channels.count(fallback) > 1:
                raise ValueError(f"fallback_channels: {fallback.value} is named twice")
            if not reachable_on(self.channel.value, fallback.value):
                raise ValueError(
                    f"fallback_channels: a {self.channel.value} recipient cannot be reached"
                    f" on {fallback.value}"
                )
        return self


class SendBatch(BaseModel):
    """Up to 1 000 messages, accepted all together or not at all."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "messages": [
                        {"channel": "sms", "recipient": "+14155550100", "payload": {"body": "hi"}},
                        {"channel": "whatsapp", "recipient": "+447700900123", "payload": {"body": "hi"}},
                    ]
                }
            ]
        },
    )

    messages: list[SendMessage] = Field(min_length=1, max_length=1000)


class MessageAccepted(BaseModel):
    id: int
    status: Status
    channel: Channel
    recipient: str
    priority: int
    created_at: datetime
    send_at: datetime


class BatchItem(BaseModel):
    """What became of one message of a batch (all were accepted, or none)."""

    index: int = Field(description="Position of the message in the request, from 0.")
    id: int
    status: Status
    channel: Channel
    recipient: str = Field(description="The recipient in its normalised form (E.164, lower-case domain).")
    send_at: datetime


class BatchTotals(BaseModel):
    accepted: int
    scheduled: int = Field(description="Accepted messages due later than now (`send_at` in the future).")
    by_channel: dict[str, int]


class BatchAccepted(BaseModel):
    count: int
    ids: list[int] = Field(description="The new message ids, in the order of the request.")
    totals: BatchTotals
    results: list[BatchItem] = Field(description="One result per message, in the order of the request.")


class Attempt(BaseModel):
    attempt: int
    channel: str | None = Field(description="The channel this attempt went out on.")
    provider: str | None
    outcome: str = Field(description="success, transient, recoverable, permanent, unknown or in_doubt.")
    error_code: str | None
    error_message: str | None
    fallback_reason: str | None = Field(
        description="Why this attempt went to another provider than the first in line (null: it did not)."
    )
    vendor_ref: str | None = Field(description="The provider's reference of this attempt's send.")
    replay: bool = Field(description="The provider answered from its first send of this attempt's key.")
    details: dict[str, Any] | None = Field(
        description="The provider's own details: status text, segments, error codes (null: none given)."
    )
    latency_ms: float
    cost: float
    finished_at: datetime


class Receipt(BaseModel):
    attempt: int
    provider: str | None
    status: str
    provider_status: str | None
    received_at: datetime


class MessageOut(BaseModel):
    id: int
    campaign_id: int | None
    channel: str
    recipient: str
    payload: dict[str, Any]
    priority: int
    ordering_key: str | None
    status: Status
    paused: bool = Field(description="Held by a paused campaign; `next_attempt_at` is when it was due.")
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    provider: str | None
    vendor_ref: str | None
    last_error_code: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    fallback_channels: list[str]
    delivered_channel: str | None = Field(
        description="The channel that delivered it (a fallback channel, or its own); null until SENT."
    )


class MessageDetail(MessageOut):
    attempt_history: list[Attempt]
    receipts: list[Receipt]


class MessagePage(Page):
    items: list[MessageOut]


class MessageFilters(BaseModel):
    """Filters of the message list (query parameters)."""

    status: Status | None = None
    channel: Channel | None = None
    campaign_id: Id | None = None
    recipient: Text | None = Field(None, max_length=320)
    created_from: Timestamp | None = None
    created_to: Timestamp | None = None
    limit: int = Field(50, ge=1, le=200)
    cursor: Text | None = Field(None, max_length=200)


class RetryFailed(BaseModel):
    """Which FAILED messages to put back to PENDING (every filter optional; all must match)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"channel": "sms", "error_code": "SERVER_ERROR", "dry_run": True}]},
    )

    campaign_id: Id | None = None
    channel: Channel | None = None
    error_code: Text | None = Field(
        None, max_length=100, description="The last error code, e.g. SERVER_ERROR."
    )
    failed_from: Timestamp | None = Field(None, description="Failed at or after this time.")
    failed_to: Timestamp | None = Field(None, description="Failed before this time.")
    limit: int = Field(1000, ge=1, le=10_000, strict=True, description="At most this many per call.")
    max_attempts: int | None = Field(
        None, ge=1, le=100, strict=True, description="Fresh attempts each (default: the server's default)."
    )
    dry_run: bool = Field(False, description="Only say which messages would be retried.")

    @model_validator(mode="after")
    def _window(self) -> RetryFailed:
        if self.failed_from is not None and self.failed_to is not None and self.failed_to <= self.failed_from:
            raise ValueError("failed_to must be after failed_from")
        return self


class RetryFailedResult(BaseModel):
    dry_run: bool
    retried: int = Field(description="Messages put back to PENDING (a dry run: that would be).")
    ids: list[int] = Field(description="Their ids, ascending.")
    more: bool = Field(description="More FAILED messages match the filters than this call's limit.")
