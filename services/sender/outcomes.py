"""From a dispatch message to an outcome: validation before any provider call, then the adapter."""

from __future__ import annotations

import orjson

from services.sender.adapters import ProviderAdapter, SendRequest, SendResult
from shared.core.errors import InvalidRecipient
from shared.core.models import Channel, DispatchMessage, FallbackReason, OutcomeClass, OutcomeMessage
from shared.core.recipients import normalise


def refuse(
    message: DispatchMessage,
    code: str,
    text: str,
    outcome: OutcomeClass,
    provider: str | None = None,
    retry_after_s: float | None = None,
) -> OutcomeMessage:
    return OutcomeMessage(
        log_id=message.log_id,
        attempt=message.attempt,
        recipient=message.recipient,
        channel=message.channel,
        provider=provider or message.provider,
        outcome=outcome,
        error_code=code,
        error_message=text,
        retry_after_s=retry_after_s,
    )


CHANNELS = frozenset(c.value for c in Channel)


def validate(message: DispatchMessage, max_payload_bytes: int) -> OutcomeMessage | str:
    """Either a refusal (an outcome sent without calling anyone) or the normalised recipient."""
    if message.channel not in CHANNELS:
        return refuse(
            message, "UNKNOWN_CHANNEL", f"unknown channel {message.channel!r}", OutcomeClass.PERMANENT
        )
    try:
        recipient = normalise(message.channel, message.recipient)
    except InvalidRecipient as exc:
        return refuse(message, exc.code, exc.message, OutcomeClass.PERMANENT)
    size = len(orjson.dumps(message.payload))
    if size > max_payload_bytes:
        return refuse(
            message,
            "PAYLOAD_TOO_LARGE",
            f"payload of {size} bytes exceeds {max_payload_bytes}",
            OutcomeClass.PERMANENT,
        )
    return recipient


def precheck(
    message: DispatchMessage, chains: dict[str, list[str]], max_payload_bytes: int
) -> OutcomeMessage | tuple[str, str]:
    """Either a refusal or (provider, normalised recipient): the head of a fixed chain."""
    checked = validate(message, max_payload_bytes)
    if isinstance(checked, OutcomeMessage):
        return checked
    chain = chains.get(message.channel) or []
    provider = message.provider or (chain[0] if chain else None)
    if provider is None:
        return refuse(
            message, "NO_PROVIDER", f"no provider configured for {message.channel}", OutcomeClass.RECOVERABLE
        )
    return provider, checked


def to_outcome(
    message: DispatchMessage,
    provider: str,
    result: SendResult,
    fallback_reason: FallbackReason | None = None,
    default_cost: float = 0.0,
) -> OutcomeMessage:
    return OutcomeMessage(
        log_id=message.log_id,
        attempt=message.attempt,
        recipient=message.recipient,
        channel=message.channel,
        provider=provider,
        outcome=result.outcome,
        error_code=result.error_code,
        error_message=result.error_message,
        retry_after_s=result.retry_after_s,
        bounced=result.bounced,
        vendor_ref=result.vendor_ref,
        latency_ms=result.latency_ms,
        cost=result.cost or default_cost,
        replay=result.replay,
        fallback_reason=fallback_reason,
        details=result.details,
    )


async def attempt(
    message: DispatchMessage, adapter: ProviderAdapter, chains: dict[str, list[str]], max_payload_bytes: int
) -> OutcomeMessage:
    checked = precheck(message, chains, max_payload_bytes)
    if isinstance(checked, OutcomeMessage):
        return checked
    provider, recipient = checked
    result = await adapter.send(
        SendRequest(
            provider=provider,
            channel=message.channel,
            recipient=recipient,
            payload=message.payload,
            idempotency_key=message.idempotency_key,
            log_id=message.log_id,
            attempt=message.attempt,
        )
    )
    return to_outcome(message, provider, result)
