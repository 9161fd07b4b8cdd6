"""The mock provider's generic JSON API (``POST {base}/{provider}/{channel}``): the default while no
routing is configured in PostgreSQL (``Settings.provider_chains``)."""

from __future__ import annotations

from typing import Any

import orjson

from services.sender.adapters.base import SendRequest, SendResult, Stopwatch, details, outcome_of
from services.sender.adapters.transport import HttpRequest, HttpResponse, HttpTransport
from services.sender.classification import BOUNCE_CODES, classify_http, default_code, parse_retry_after
from shared.core.errors import ProviderError
from shared.core.models import OutcomeClass


def _number(value: Any) -> float:
    try:
        number = float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number and number >= 0 and number != float("inf") else 0.0


def result_from_http(status: int, body: bytes, retry_after: str | None, latency_ms: float) -> SendResult:
    """Map a provider's HTTP answer onto a :class:`SendResult` (pure, unit-tested)."""
    data: dict[str, Any] = {}
    try:
        parsed = orjson.loads(body) if body else {}
        if isinstance(parsed, dict):
            data = parsed
    except orjson.JSONDecodeError:
        pass
    return result_from_answer(status, data, retry_after, latency_ms)


def results_from_batch(response: HttpResponse, count: int, latency_ms: float) -> list[SendResult]:
    """Map a bulk answer (``{"results": [...]}``, one per message in order) onto one result per
    message; an answer that is not that (an error status, a short list) fails every message alike."""
    data = response.json()
    items = data.get("results") if isinstance(data, dict) and response.status < 300 else None
    if not isinstance(items, list) or len(items) != count:
        if response.status < 300:  # a 2xx we cannot read: the messages may have gone; say so
            one = SendResult(
                OutcomeClass.TRANSIENT,
                latency_ms,
                error_code="SERVER_ERROR",
                error_message=f"bulk answer without {count} results",
            )
        else:
            one = result_from_http(
                response.status, response.content, response.headers.get("retry-after"), latency_ms
            )
        return [one] * count
    results = []
    for item in items:
        item = item if isinstance(item, dict) else {}
        status = item.get("http_status")
        retry_after = item.get("retry_after")
        results.append(
            result_from_answer(
                status if isinstance(status, int) and not isinstance(status, bool) else 502,
                item,
                None if retry_after is None else str(retry_after),
                latency_ms,
            )
        )
    return results


def result_from_answer(
    status: int, data: dict[str, Any], retry_after: str | None, latency_ms: float
) -> SendResult:
    """One answer (HTTP status, JSON object, Retry-After) as a :class:`SendResult`."""
    raw_error = data.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), str) else None
    outcome = classify_http(status, code if status >= 300 else None)
    if outcome == OutcomeClass.SUCCESS:
        return SendResult(
            outcome=outcome,
            latency_ms=latency_ms,
            vendor_ref=str(data.get("id")) if data.get("id") is not None else None,
            cost=_number(data.get("cost")),
            replay=bool(data.get("replay", False)),
            details=details(provider_status=data.get("status")),
        )
    code = code or default_code(status)
    text = error.get("message")
    message = text if isinstance(text, str) else f"HTTP {status}"
    return SendResult(
        outcome=outcome,
        latency_ms=latency_ms,
        error_code=code,
        error_message=message[:500],
        retry_after_s=parse_retry_after(retry_after),
        bounced=code in BOUNCE_CODES,
        details=details(http_status=status),
    )


class MockJsonAdapter:
    def __init__(self, base_url: str, transport: HttpTransport) -> None:
        self.base_url = base_url.rstrip("/")
        self.transport = transport

    async def send(self, request: SendRequest) -> SendResult:
        body = orjson.dumps({"to": request.recipient, "payload": request.payload})
        headers = {"Content-Type": "application/json", "Idempotency-Key": request.idempotency_key}
        watch = Stopwatch()
        try:
            response = await self.transport.request(
                HttpRequest("POST", f"{self.base_url}/{request.provider}/{request.channel}", headers, body)
            )
        except ProviderError as exc:  # no answer, or an address the outbound policy refuses
            return SendResult(outcome_of(exc), watch.ms(), error_code=exc.code, error_message=exc.message)
        return result_from_http(
            response.status, response.content, response.headers.get("retry-after"), watch.ms()
        )

    def batch_key(self, request: SendRequest) -> tuple[str, str]:
        return request.provider, request.channel

    async def send_batch(self, requests: list[SendRequest]) -> list[SendResult]:
        """Requests of one provider and channel in one bulk call (``POST .../batch``)."""
        first = requests[0]
        body = orjson.dumps(
            {
                "messages": [
                    {"to": r.recipient, "payload": r.payload, "idempotency_key": r.idempotency_key}
                    for r in requests
                ]
            }
        )
        watch = Stopwatch()
        url = f"{self.base_url}/{first.provider}/{first.channel}/batch"
        try:
            response = await self.transport.request(
                HttpRequest("POST", url, {"Content-Type": "application/json"}, body)
            )
        except ProviderError as exc:
            failed = SendResult(outcome_of(exc), watch.ms(), error_code=exc.code, error_message=exc.message)
            return [failed] * len(requests)
        return results_from_batch(response, len(requests), watch.ms())

    async def close(self) -> None:
        return None  # the transport is shared: its owner (the AdapterPool) closes it
