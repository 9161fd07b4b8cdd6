"""Typed messages exchanged over RabbitMQ, and their wire encoding (orjson)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.core.errors import MalformedMessage, PayloadTooLarge

SCHEMA_VERSION = 1


class Channel(StrEnum):
    SMS = "sms"
    MMS = "mms"
    EMAIL = "email"
    WHATSAPP = "whatsapp"
    WEBHOOK = "webhook"
    SIGNAL = "signal"


class Status(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    BOUNCED = "BOUNCED"
    CANCELLED = "CANCELLED"
    # Held for an operator: an attempt may or may not have reached a provider that does not honour
    # idempotency keys, so sending it again could send it twice (dead letter ``in_doubt``).
    IN_DOUBT = "IN_DOUBT"


TERMINAL_STATUSES = frozenset(
    {Status.SENT, Status.DELIVERED, Status.FAILED, Status.BOUNCED, Status.CANCELLED, Status.IN_DOUBT}
)


class OutcomeClass(StrEnum):
    SUCCESS = "success"
    TRANSIENT = "transient"
    RECOVERABLE = "recoverable"
    PERMANENT = "permanent"
    # The attempt may or may not have reached a provider that does not honour idempotency keys, and
    # its in-doubt policy is ``hold``: the log is held for an operator, never sent again blindly.
    IN_DOUBT = "in_doubt"
    # The request was written and no answer came (timeout, connection lost): the provider may have
    # accepted it. Retried on the same provider under the same idempotency key.
    UNKNOWN = "unknown"
    # Refused locally before any provider call (pacing, rate limit, every circuit open): not an
    # attempt. The log goes back to PENDING at ``retry_after_s``, its attempt count unchanged.
    DEFERRED = "deferred"


class DeadLetterReason(StrEnum):
    PERMANENT_ERROR = "permanent_error"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    IN_DOUBT = "in_doubt"


class FallbackReason(StrEnum):
    """Why an attempt went to a provider other than the one first in line (``delivery_attempts``)."""

    PRIMARY_FAILED = "primary_failed"
    PROVIDER_UNAVAILABLE = "provider_unavailable"  # its circuit breaker is open
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    COST_THRESHOLD = "cost_threshold"
    QUALITY_THRESHOLD = "quality_threshold"
    CHANNEL_FALLBACK = "channel_fallback"  # the first attempt on a fallback channel


class ReceiptStatus(StrEnum):
    """A provider's delivery report, mapped onto Switchboard's words."""

    ACCEPTED = "ACCEPTED"  # written by the responder when a provider took the message
    QUEUED = "QUEUED"  # the provider reports progress, nothing final yet
    DELIVERED = "DELIVERED"
    BOUNCED = "BOUNCED"
    FAILED = "FAILED"


FINAL_RECEIPTS = frozenset({ReceiptStatus.DELIVERED, ReceiptStatus.BOUNCED, ReceiptStatus.FAILED})


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = SCHEMA_VERSION


class DispatchMessage(Message):
    """One claimed communication log on its way to a sender (exchange ``dispatch``)."""

    log_id: int = Field(gt=0)
    attempt: int = Field(ge=1)
    tenant: str
    campaign_id: int | None = None
    channel: str
    recipient: str = Field(min_length=1, max_length=320)
    # The recipient spelled one way (communication_logs.recipient_key): routing and ordering use it.
    recipient_key: str | None = Field(default=None, max_length=320)
    # communication_logs.ordering_group (services/poller/gate.py): strict order holds within it.
    ordering_group: str | None = Field(default=None, max_length=600)
    payload: dict[str, Any]
    priority: int = Field(ge=0, le=2)
    provider: str | None = None
    created_at: datetime
    claimed_at: datetime
    # After an unknown outcome: the earlier attempt whose idempotency key this call reuses, so that a
    # provider honouring keys answers from its ledger if it did accept that earlier call.
    key_attempt: int | None = Field(default=None, ge=1)

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.log_id, self.key_attempt or self.attempt)

    @property
    def ordering_key(self) -> str:
        return self.ordering_group or self.recipient_key or self.recipient


class OutcomeMessage(Message):
    """What happened when a sender tried one attempt (exchange ``responses``)."""

    log_id: int = Field(gt=0)
    attempt: int = Field(ge=1)
    recipient: str
    channel: str
    provider: str | None
    outcome: OutcomeClass
    error_code: str | None = None
    error_message: str | None = None
    retry_after_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    bounced: bool = False
    vendor_ref: str | None = None
    latency_ms: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    cost: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    replay: bool = False
    finished_at: datetime = Field(default_factory=utcnow)
    fallback_reason: FallbackReason | None = None
    # The provider's own details of this attempt (status text, segments, codes; seed 000's
    # AdditionalMetadata), kept with the attempt row: a small flat object.
    details: dict[str, str | int | float | bool] | None = Field(default=None, max_length=16)
    kind: Literal["outcome"] = "outcome"


class ReceiptMessage(Message):
    """A provider's delivery report for one attempt (exchange ``responses``, type ``receipt``).

    Routed like the outcome of the same log (key = recipient), so both usually reach one responder
    shard; the responder applies them in any order (see docs/providers.md).
    """

    log_id: int = Field(gt=0)
    attempt: int = Field(ge=1)
    recipient: str = Field(min_length=1, max_length=320)
    provider: str
    vendor_ref: str | None = None
    status: ReceiptStatus
    provider_status: str = Field(default="", max_length=200)
    error_code: str | None = Field(default=None, max_length=200)
    occurred_at: datetime = Field(default_factory=utcnow)
    kind: Literal["receipt"] = "receipt"


class DeadLetter(Message):
    """The full context of a log that will not be delivered (exchange ``dlx``, queue ``dlq``)."""

    log_id: int
    attempt: int
    max_attempts: int
    tenant: str
    campaign_id: int | None
    channel: str
    recipient: str
    provider: str | None
    status: Status
    reason: DeadLetterReason
    error_class: OutcomeClass
    error_code: str | None
    error_message: str | None
    created_at: datetime
    dead_lettered_at: datetime
    # What was to be sent (the log's payload), so that an operator sees the message itself.
    payload: dict[str, Any] | None = None


def idempotency_key(log_id: int, attempt: int) -> str:
    return f"{log_id}-{attempt}"


def encode(message: BaseModel) -> bytes:
    return orjson.dumps(message.model_dump(mode="json"))


M = TypeVar("M", bound=BaseModel)


def decode(model: type[M], body: bytes, max_bytes: int | None = None) -> M:
    """Parse ``body`` into ``model`` or raise a :class:`MessageError` that says why."""
    if max_bytes is not None and len(body) > max_bytes:
        raise PayloadTooLarge(f"message of {len(body)} bytes exceeds the limit of {max_bytes}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedMessage(f"expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise MalformedMessage(f"invalid {model.__name__}: {problems}") from exc
