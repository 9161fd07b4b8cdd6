"""In-doubt attempts (pure): when a result does not say whether the provider took the message, and
the outcome the responder gets for an attempt that is held for an operator."""

from __future__ import annotations

from services.sender.adapters.base import SendResult
from shared.core.models import DispatchMessage, OutcomeClass, OutcomeMessage

IN_DOUBT_CODE = "IN_DOUBT"
# Transport failures after which the request may have reached the provider: no answer in time, or the
# connection lost once the request was written. A refused connection (CONNECTION_ERROR) sent nothing.
MAYBE_SENT_CODES = frozenset({"TIMEOUT", "CONNECTION_LOST"})
UNKNOWN_OUTCOME = "unknown"  # an outcome class that says the same, where the adapters report one


def may_have_been_sent(result: SendResult) -> bool:
    if result.outcome.value == UNKNOWN_OUTCOME:
        return True
    return result.outcome == OutcomeClass.TRANSIENT and result.error_code in MAYBE_SENT_CODES


def held(
    message: DispatchMessage,
    provider: str,
    why: str,
    latency_ms: float = 0.0,
) -> OutcomeMessage:
    """The outcome of an attempt held for an operator: the log becomes IN_DOUBT with a dead letter."""
    return OutcomeMessage(
        log_id=message.log_id,
        attempt=message.attempt,
        recipient=message.recipient,
        channel=message.channel,
        provider=provider,
        outcome=OutcomeClass.IN_DOUBT,
        error_code=IN_DOUBT_CODE,
        error_message=why[:500],
        latency_ms=latency_ms,
    )
