"""Every envelope Switchboard puts on RabbitMQ or takes from it, built and parsed here only.

One function per message kind returns an :class:`Envelope`: body, message id, AMQP ``type``, headers,
correlation id and routing key. :func:`decode_incoming` reads a received message by its ``type``
property (never by looking into the body) into the typed model of that kind. Message id schemes:

- dispatch ``<log id>-<attempt>`` (the provider idempotency key), outcome the same;
- receipt ``r-<log id>-<attempt>-<status>``; dead letter ``dl-<log id>-<attempt>``;
- circuit event ``<origin replica>-<time>``; a poison copy keeps the id it arrived with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.bus.topology import (
    HEADER_ATTEMPT,
    HEADER_ERROR,
    HEADER_ERROR_CLASS,
    HEADER_ERROR_CODE,
    HEADER_LOG_ID,
    HEADER_PROVIDER,
    HEADER_REASON,
    HEADER_SOURCE,
    HEADER_SOURCE_QUEUE,
)
from shared.core.circuit import CircuitEvent, CircuitState
from shared.core.errors import MalformedMessage, PayloadTooLarge
from shared.core.models import DeadLetter, DispatchMessage, OutcomeMessage, ReceiptMessage, decode, encode
from shared.core.recipients import routing_key

MESSAGE_TYPE_DISPATCH = "switchboard.dispatch.v1"
MESSAGE_TYPE_OUTCOME = "switchboard.outcome.v1"
MESSAGE_TYPE_DEAD_LETTER = "switchboard.dead_letter.v1"
MESSAGE_TYPE_RECEIPT = "switchboard.receipt.v1"
MESSAGE_TYPE_CIRCUIT = "switchboard.circuit.v1"
CONTENT_TYPE = "application/json"
POISON_REASON = "poison_message"

HeaderValue = str | int
Headers = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message ready to publish: body, AMQP properties, and the routing key it goes out with."""

    body: bytes
    message_id: str
    type: str
    routing_key: str
    headers: Mapping[str, HeaderValue] = field(default_factory=dict)
    correlation_id: str | None = None
    content_type: str = CONTENT_TYPE
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class Received:
    """What arrived: the body and the properties Switchboard reads (the transport fills it in)."""

    body: bytes
    message_id: str | None = None
    type: str | None = None
    routing_key: str = ""
    headers: Headers = field(default_factory=dict)
    content_type: str | None = None
    correlation_id: str | None = None
    redelivered: bool = False
    timestamp: datetime | None = None


Incoming = DispatchMessage | OutcomeMessage | ReceiptMessage | DeadLetter | CircuitEvent
Response = OutcomeMessage | ReceiptMessage


def dispatch(message: DispatchMessage) -> Envelope:
    """Routed by the recipient's normalised key, so every spelling of it lands on one shard."""
    return Envelope(
        encode(message),
        message_id=f"{message.log_id}-{message.attempt}",  # one id per attempt, whichever key it uses
        type=MESSAGE_TYPE_DISPATCH,
        routing_key=routing_key(message.ordering_key),
        correlation_id=str(message.log_id),
    )


def outcome(message: OutcomeMessage) -> Envelope:
    return Envelope(
        encode(message),
        message_id=f"{message.log_id}-{message.attempt}",
        type=MESSAGE_TYPE_OUTCOME,
        routing_key=routing_key(message.recipient),
        correlation_id=str(message.log_id),
    )


def receipt(message: ReceiptMessage) -> Envelope:
    """Routed like the outcome of the same log, so both usually reach one responder shard."""
    return Envelope(
        encode(message),
        message_id=f"r-{message.log_id}-{message.attempt}-{message.status.value}",
        type=MESSAGE_TYPE_RECEIPT,
        routing_key=routing_key(message.recipient),
        correlation_id=str(message.log_id),
    )


def letter_id(log_id: int, attempt: int) -> str:
    """The message id of a dead letter: how the relay finds a letter it may have published already."""
    return f"dl-{log_id}-{attempt}"


def dead_letter(letter: DeadLetter) -> Envelope:
    """The full context in the body, and the essentials in headers (readable in the management UI)."""
    headers: dict[str, HeaderValue] = {
        HEADER_REASON: letter.reason.value,
        HEADER_ERROR_CLASS: letter.error_class.value,
        HEADER_ERROR_CODE: letter.error_code or "",
        HEADER_LOG_ID: letter.log_id,
        HEADER_ATTEMPT: letter.attempt,
        HEADER_PROVIDER: letter.provider or "",
        HEADER_SOURCE: "responder",
    }
    return Envelope(
        encode(letter),
        message_id=letter_id(letter.log_id, letter.attempt),
        type=MESSAGE_TYPE_DEAD_LETTER,
        routing_key=letter.channel,
        headers=headers,
        correlation_id=str(letter.log_id),
    )


def circuit_event(event: CircuitEvent) -> Envelope:
    body = orjson.dumps({**asdict(event), "state": int(event.state)})
    return Envelope(body, message_id=f"{event.origin}-{event.at}", type=MESSAGE_TYPE_CIRCUIT, routing_key="")


def poison_copy(message: Received, reason: str, stage: str, queue: str) -> Envelope:
    """An unusable message as it arrived, with why and where in headers, for the dead-letter exchange."""
    headers: dict[str, Any] = dict(message.headers)
    headers.update({HEADER_REASON: POISON_REASON, HEADER_ERROR: reason, HEADER_SOURCE: stage})
    headers[HEADER_SOURCE_QUEUE] = queue
    return Envelope(
        message.body,
        message_id=message.message_id or "",
        type=message.type or "unknown",
        routing_key=message.routing_key,
        headers=headers,
        content_type=message.content_type or "application/octet-stream",
        timestamp=datetime.now(UTC),
    )


def _circuit(body: bytes, max_bytes: int | None) -> CircuitEvent:
    if max_bytes is not None and len(body) > max_bytes:
        raise PayloadTooLarge(f"message of {len(body)} bytes exceeds the limit of {max_bytes}")
    try:
        data: Any = orjson.loads(body)
        return CircuitEvent(
            provider=str(data["provider"]),
            state=CircuitState(int(data["state"])),
            origin=str(data["origin"]),
            owner=str(data["owner"]),
            open_until=float(data["open_until"]),
            at=float(data["at"]),
        )
    except (ValueError, KeyError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise MalformedMessage(f"invalid circuit event: {exc!r}") from exc


def _model(model: type[DispatchMessage | OutcomeMessage | ReceiptMessage | DeadLetter]) -> Decoder:
    return lambda body, max_bytes: decode(model, body, max_bytes)


Decoder = Callable[[bytes, int | None], Incoming]
DECODERS: dict[str, Decoder] = {
    MESSAGE_TYPE_DISPATCH: _model(DispatchMessage),
    MESSAGE_TYPE_OUTCOME: _model(OutcomeMessage),
    MESSAGE_TYPE_RECEIPT: _model(ReceiptMessage),
    MESSAGE_TYPE_DEAD_LETTER: _model(DeadLetter),
    MESSAGE_TYPE_CIRCUIT: _circuit,
}


def decode_incoming(message: Received, max_bytes: int | None = None) -> Incoming:
    """The typed model of ``message``, chosen by its AMQP ``type``; a :class:`MessageError` says why not."""
    if not message.type:
        raise MalformedMessage("no AMQP type property: cannot tell what this message is")
    decoder = DECODERS.get(message.type)
    if decoder is None:
        raise MalformedMessage(f"unknown message type {message.type!r}")
    return decoder(message.body, max_bytes)


def is_dead_letter(message: Received) -> bool:
    """A letter the responder published (by its type, or its log id header), as opposed to poison that
    reached the DLQ some other way. A letter moved by the broker (``x-death``) is not one."""
    if "x-death" in message.headers:
        return False
    return message.type == MESSAGE_TYPE_DEAD_LETTER or HEADER_LOG_ID in message.headers


def decode_dead_letter(message: Received, max_bytes: int | None = None) -> DeadLetter:
    """The :class:`DeadLetter` of a message :func:`is_dead_letter` accepts; a MessageError says why not."""
    return decode(DeadLetter, message.body, max_bytes)


def decode_dispatch(message: Received, max_bytes: int | None = None) -> DispatchMessage:
    decoded = decode_incoming(message, max_bytes)
    if not isinstance(decoded, DispatchMessage):
        raise MalformedMessage(f"a {message.type} message where a dispatch was expected")
    return decoded


def decode_response(message: Received, max_bytes: int | None = None) -> Response:
    decoded = decode_incoming(message, max_bytes)
    if not isinstance(decoded, OutcomeMessage | ReceiptMessage):
        raise MalformedMessage(f"a {message.type} message where an outcome or a receipt was expected")
    return decoded


def decode_circuit_event(message: Received) -> CircuitEvent:
    decoded = decode_incoming(message)
    if not isinstance(decoded, CircuitEvent):
        raise MalformedMessage(f"a {message.type} message where a circuit event was expected")
    return decoded
