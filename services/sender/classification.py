"""Error classification: provider answers -> transient, recoverable or permanent (table-driven)."""

from __future__ import annotations

from shared.core.models import OutcomeClass

# Provider error codes that say more than the HTTP status does.
CODE_CLASSES: dict[str, OutcomeClass] = {
    "INVALID_NUMBER": OutcomeClass.PERMANENT,
    "INVALID_ADDRESS": OutcomeClass.PERMANENT,
    "INVALID_URL": OutcomeClass.PERMANENT,
    "UNKNOWN_CHANNEL": OutcomeClass.PERMANENT,
    "PAYLOAD_TOO_LARGE": OutcomeClass.PERMANENT,
    "BLOCKED": OutcomeClass.PERMANENT,
    "SPAM_REJECTED": OutcomeClass.PERMANENT,
    "HARD_BOUNCE": OutcomeClass.PERMANENT,
    "UNDELIVERABLE": OutcomeClass.PERMANENT,  # not reachable on this channel (another may reach them)
    "UNSUBSCRIBED": OutcomeClass.PERMANENT,
    "VALIDATION_ERROR": OutcomeClass.PERMANENT,
    "RATE_LIMITED": OutcomeClass.TRANSIENT,
    "TIMEOUT": OutcomeClass.TRANSIENT,
    "CONNECTION_ERROR": OutcomeClass.TRANSIENT,
    "CONNECTION_LOST": OutcomeClass.TRANSIENT,
    "SERVER_ERROR": OutcomeClass.TRANSIENT,
    "SOFT_BOUNCE": OutcomeClass.TRANSIENT,
    "PROVIDER_UNAVAILABLE": OutcomeClass.RECOVERABLE,
    "CIRCUIT_OPEN": OutcomeClass.RECOVERABLE,
    "QUOTA_EXCEEDED": OutcomeClass.RECOVERABLE,
    "NO_PROVIDER": OutcomeClass.RECOVERABLE,
}

BOUNCE_CODES = frozenset({"HARD_BOUNCE"})


def classify_http(status: int, code: str | None = None) -> OutcomeClass:
    """Class of a provider's HTTP answer; a known provider error code wins over the status."""
    if code is not None and code in CODE_CLASSES:
        return CODE_CLASSES[code]
    if 200 <= status < 300:
        return OutcomeClass.SUCCESS
    if status in (408, 425, 429) or (500 <= status < 600 and status not in (501, 503, 505)):
        return OutcomeClass.TRANSIENT
    if status == 503:
        return OutcomeClass.RECOVERABLE
    if status in (402,):
        return OutcomeClass.RECOVERABLE
    return OutcomeClass.PERMANENT


def default_code(status: int) -> str:
    if status == 429:
        return "RATE_LIMITED"
    if status == 503:
        return "PROVIDER_UNAVAILABLE"
    if status == 408:
        return "TIMEOUT"
    if status >= 500 and status not in (501, 505):
        return "SERVER_ERROR"
    if status == 413:
        return "PAYLOAD_TOO_LARGE"
    return f"HTTP_{status}"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header in its delta-seconds form; ``None`` when absent or unusable."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        return None
    return seconds
