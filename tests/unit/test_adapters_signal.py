"""The Signal adapter (signal-cli REST API) against the fake transport: request shape, answers, error map."""

from __future__ import annotations

import base64

import orjson
import pytest

from services.sender.adapters import SendRequest, build_adapter
from services.sender.adapters.signal import SIGNAL_ERRORS, SignalCliAdapter, error_class
from services.sender.adapters.transport import HttpRequest, HttpResponse, MockTransport, TransportError
from services.sender.settings import SenderSettings
from shared.core.models import OutcomeClass
from shared.core.routing import ProviderSpec

P, T, R, S = OutcomeClass.PERMANENT, OutcomeClass.TRANSIENT, OutcomeClass.RECOVERABLE, OutcomeClass.SUCCESS


def request(**payload: object) -> SendRequest:
    return SendRequest("sig", "signal", "+447400123456", payload or {"body": "hello"}, "42-3", 42, 3)


def answer(status: int, body: object = None, **headers: str) -> MockTransport:
    content = orjson.dumps(body) if body is not None else b""
    return MockTransport(
        lambda _: HttpResponse(status, content, {k.replace("_", "-"): v for k, v in headers.items()})
    )


async def test_a_message_is_posted_to_v2_send_from_our_number_with_the_idempotency_key() -> None:
    transport = answer(201, {"timestamp": "1700000000123"})
    adapter = SignalCliAdapter(
        "http://signal:8080/", {"number": "+15550001", "username": "u", "password": "p"}, transport
    )
    result = await adapter.send(request(body="hi there", attachments=["aGVsbG8="], text_mode="styled"))
    (sent,) = transport.requests
    assert (sent.method, sent.url) == ("POST", "http://signal:8080/v2/send")
    assert sent.headers["Idempotency-Key"] == "42-3"
    assert sent.headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    assert orjson.loads(sent.content) == {
        "message": "hi there",
        "number": "+15550001",
        "recipients": ["+447400123456"],
        "base64_attachments": ["aGVsbG8="],
        "text_mode": "styled",
    }
    assert (result.outcome, result.vendor_ref, result.replay) == (S, "1700000000123", False)


async def test_the_messages_own_from_wins_and_no_auth_header_without_credentials() -> None:
    transport = answer(201, {"timestamp": 1})
    await SignalCliAdapter("http://s", {"number": "+15550001"}, transport).send(
        request(body="x", **{"from": "+15550002"})
    )
    (sent,) = transport.requests
    assert orjson.loads(sent.content)["number"] == "+15550002" and "Authorization" not in sent.headers


@pytest.mark.parametrize(
    ("status", "text", "outcome", "code", "bounced"),
    [
        (400, 'Failed to send message: Unregistered user "+447400123456"', P, "NOT_ON_SIGNAL", True),
        (400, "User +15550001 is not registered.", R, "ACCOUNT_NOT_REGISTERED", False),
        (400, "Invalid phone number: +44", P, "INVALID_NUMBER", False),
        (400, "Failed to send message: UntrustedIdentityException", P, "UNTRUSTED_IDENTITY", False),
        (400, "Failed to send message: ProofRequiredException: captcha", R, "CAPTCHA_REQUIRED", False),
        (413, "Failed to send message: RateLimitException: Rate limit exceeded", T, "RATE_LIMITED", False),
        (429, "slow down", T, "RATE_LIMITED", False),
        (400, "Couldn't process request - message is empty", P, "VALIDATION_ERROR", False),
        (401, "Unauthorized", R, "AUTH_FAILED", False),
        (404, "404 page not found", R, "PROVIDER_UNAVAILABLE", False),
        (500, "Failed to send message: IOException: Connection reset", T, "SERVER_ERROR", False),
        (502, "", T, "SERVER_ERROR", False),
    ],
)
async def test_signal_cli_answers_map_onto_our_classes(
    status: int, text: str, outcome: OutcomeClass, code: str, bounced: bool
) -> None:
    body = {"error": text} if text else None
    result = await SignalCliAdapter(
        "http://s", {"number": "+1555"}, answer(status, body, retry_after="4")
    ).send(request())
    assert (result.outcome, result.error_code, result.bounced) == (outcome, code, bounced)
    assert result.retry_after_s == 4.0 and result.error_message


def test_every_row_of_the_table_is_reachable_by_its_own_text() -> None:
    for needle, row in SIGNAL_ERRORS:
        assert error_class(400, f"Failed: {needle.upper()} here") == next(
            r for n, r in SIGNAL_ERRORS if n in needle
        )
        assert row.code


@pytest.mark.parametrize("code", ["TIMEOUT", "CONNECTION_ERROR"])
async def test_no_answer_at_all_is_transient(code: str) -> None:
    def handler(_: HttpRequest) -> HttpResponse:
        raise TransportError(code, "boom")

    result = await SignalCliAdapter("http://s", {"number": "+1555"}, MockTransport(handler)).send(request())
    assert (result.outcome, result.error_code) == (T, code)


async def test_refused_before_any_call_without_a_number_or_a_body() -> None:
    transport = answer(201, {"timestamp": 1})
    no_number = await SignalCliAdapter("http://s", {}, transport).send(request())
    empty = await SignalCliAdapter("http://s", {"number": "+1555"}, transport).send(request(subject="x"))
    assert (no_number.outcome, no_number.error_code) == (R, "ACCOUNT_NOT_REGISTERED")
    assert (empty.outcome, empty.error_code) == (P, "VALIDATION_ERROR")
    assert transport.requests == []


async def test_a_signal_adapter_is_built_for_the_signal_cli_kind() -> None:
    spec = ProviderSpec("sig", "signal_cli", settings={"number": "+1555"})
    adapter = build_adapter(spec, SenderSettings(), answer(201, {"timestamp": 1}))
    assert isinstance(adapter, SignalCliAdapter) and adapter.url == "http://127.0.0.1:8081/sig/v2/send"
