"""The adapter seam: one request in, one classified result out; every provider API behind it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.sender.adapters.transport import TransportError
from services.sender.classification import classify_http, default_code
from shared.core.errors import ConfigurationError, PermanentProviderError, ProviderError
from shared.core.models import OutcomeClass


@dataclass(frozen=True, slots=True)
class SendRequest:
    provider: str
    channel: str
    recipient: str  # normalised (shared/core/recipients.py)
    payload: dict[str, Any]
    idempotency_key: str  # "<log id>-<attempt>": sent to every provider, echoed in its receipts
    log_id: int
    attempt: int
    tenant: str = ""
    urgent: bool = False  # priority 0: never held back to share a bulk request


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: OutcomeClass
    latency_ms: float
    vendor_ref: str | None = None
    cost: float = 0.0
    replay: bool = False
    error_code: str | None = None
    error_message: str | None = None
    retry_after_s: float | None = None
    bounced: bool = False
    # The provider's own words (status text, segments, codes): informational, so not part of equality
    # or hashing (results are compared and grouped by what they decide).
    details: dict[str, Any] | None = field(default=None, compare=False, hash=False)


MAX_DETAIL_KEYS = 12
MAX_DETAIL_TEXT = 200


def details(**fields: Any) -> dict[str, Any] | None:
    """A small JSON object of provider details for the attempt row: empty values dropped, text cut
    short, at most a dozen keys (a provider's answer must not grow the attempts table)."""
    kept: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None or value == "" or len(kept) >= MAX_DETAIL_KEYS:
            continue
        if isinstance(value, bool | int | float):
            kept[key] = value
        else:
            kept[key] = str(value)[:MAX_DETAIL_TEXT]
    return kept or None


class ProviderAdapter(Protocol):
    async def send(self, request: SendRequest) -> SendResult: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ErrorClass:
    """One row of a provider's error table: our class and our code for its code."""

    outcome: OutcomeClass
    code: str
    bounced: bool = False


def http_status_row(status: int) -> ErrorClass:
    """The row for an HTTP answer that no provider code explains (services.sender.classification's table)."""
    return ErrorClass(classify_http(status), default_code(status))


def error_row(table: dict[int, ErrorClass], code: object, status: int) -> ErrorClass:
    """A provider's numeric error code looked up in its table; unknown codes fall back to the HTTP
    status, keeping the provider's code in ours (``SERVER_ERROR:1234``) for the operator."""
    if isinstance(code, int):
        row = table.get(code)
        if row is not None:
            return row
        fallback = http_status_row(status)
        return ErrorClass(fallback.outcome, f"{fallback.code}:{code}")
    return http_status_row(status)


def outcome_of(error: ProviderError) -> OutcomeClass:
    """A provider call that raised instead of answering: permanent only if retrying cannot help;
    unknown when the request may have reached the provider (no answer once it was written)."""
    if isinstance(error, PermanentProviderError):
        return OutcomeClass.PERMANENT
    if isinstance(error, TransportError) and error.written:
        return OutcomeClass.UNKNOWN
    return OutcomeClass.TRANSIENT


@dataclass
class Stopwatch:
    started: float = field(default_factory=time.perf_counter)

    def ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


def failure(
    row: ErrorClass,
    latency_ms: float,
    message: str,
    retry_after_s: float | None = None,
    detail: dict[str, Any] | None = None,
) -> SendResult:
    return SendResult(
        outcome=row.outcome,
        latency_ms=latency_ms,
        error_code=row.code,
        error_message=message[:500],
        retry_after_s=retry_after_s,
        bounced=row.bounced,
        details=detail,
    )


def required_setting(settings: Any, key: str, kind: str) -> Any:
    """A setting the adapter cannot work without; missing, it is a :class:`ConfigurationError`."""
    value = setting(settings, key)
    if value is None:
        raise ConfigurationError(f"a {kind} provider needs settings.{key}")
    return value


def setting(settings: Any, key: str, default: Any = None) -> Any:
    value = settings.get(key, default) if hasattr(settings, "get") else default
    return default if value in (None, "") else value
