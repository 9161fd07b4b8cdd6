"""Every adapter against fuzzed payloads, recipients and provider answers: the result is always an outcome.

A payload an adapter cannot turn into a request may only raise ``InvalidPayload`` (the guard makes it a
permanent ``INVALID_PAYLOAD``); nothing else may escape, whatever the provider answers, because an
exception escaping the sender leaves the dispatch unacked and its shard stalls (issue 14, item 6).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any

import aiosmtplib
import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.sender.adapters import SendRequest, SendResult
from services.sender.adapters.base import ProviderAdapter
from services.sender.adapters.batching import BatchingAdapter
from services.sender.adapters.guard import GuardedAdapter
from services.sender.adapters.mockjson import MockJsonAdapter
from services.sender.adapters.sms import SmsGatewayAdapter
from services.sender.adapters.smtp import SmtpAdapter
from services.sender.adapters.transport import HttpRequest, HttpResponse, MockTransport, TransportError
from services.sender.adapters.webhook import WebhookAdapter
from services.sender.adapters.whatsapp import WhatsAppCloudAdapter
from shared.core.errors import InvalidPayload
from shared.core.models import OutcomeClass

PAYLOAD_KEYS = [
    "subject",
    "body",
    "text",
    "from",
    "reply_to",
    "html",
    "template",
    "media_urls",
    "media_url",
    "preview_url",
    "name",
    "language",
    "components",
]
# Text with the characters that break protocols: CR/LF, NUL, non-ASCII, very long lines.
nasty_text = st.text() | st.builds(lambda a, b: f"{a}\r\n{b}", st.text(max_size=20), st.text(max_size=20))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | nasty_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(PAYLOAD_KEYS) | st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
payloads = st.dictionaries(st.sampled_from(PAYLOAD_KEYS) | st.text(max_size=8), json_values, max_size=6)
recipients = (
    st.sampled_from(["+14155550100", "jo@example.com", "https://hooks.example/in", "http://h.example/x"])
    | nasty_text
)
json_bodies = json_values.map(lambda v: orjson.dumps(v))
answers = st.builds(
    HttpResponse,
    st.sampled_from(
        [200, 201, 202, 204, 301, 302, 400, 401, 403, 404, 408, 410, 422, 429, 500, 502, 503, 504]
    ),
    st.binary(max_size=64) | json_bodies,
    st.dictionaries(st.sampled_from(["retry-after", "x-request-id", "x-replay"]), nasty_text, max_size=3),
)
transport_failures = st.sampled_from(["TIMEOUT", "CONNECTION_ERROR"])


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def transport_for(answer: HttpResponse | str) -> MockTransport:
    def handler(_: HttpRequest) -> HttpResponse:
        if isinstance(answer, str):
            raise TransportError(answer, "no answer")
        return answer

    return MockTransport(handler)


def http_adapters(transport: MockTransport) -> list[ProviderAdapter]:
    return [
        SmsGatewayAdapter("http://gw/gw", {"account_sid": "AC1"}, transport, default_token="t"),
        WhatsAppCloudAdapter("http://wa/wa", {"access_token": "t", "phone_number_id": "pn-1"}, transport),
        WebhookAdapter({"secret": "s"}, transport),
        MockJsonAdapter("http://mock", transport),
    ]


def assert_outcome(result: SendResult) -> None:
    assert isinstance(result, SendResult)
    assert isinstance(result.outcome, OutcomeClass)
    assert result.latency_ms >= 0
    if result.outcome != OutcomeClass.SUCCESS:
        assert result.error_code


async def send_raw(adapter: ProviderAdapter, request: SendRequest) -> SendResult | InvalidPayload:
    """The adapter's own answer: a result, or InvalidPayload (the only exception it may raise)."""
    try:
        return await adapter.send(request)
    except InvalidPayload as exc:
        return exc


def request_for(channel: str, recipient: str, payload: dict[str, Any], n: int = 7) -> SendRequest:
    return SendRequest("prov", channel, recipient, payload, f"{n}-1", n, 1)


@given(
    payload=payloads,
    recipient=recipients,
    channel=st.sampled_from(["sms", "mms", "whatsapp", "webhook", "email"]),
    answer=answers | transport_failures,
)
def test_http_adapters_answer_every_payload_with_an_outcome(
    payload: dict[str, Any], recipient: str, channel: str, answer: HttpResponse | str
) -> None:
    async def scenario() -> None:
        request = request_for(channel, recipient, payload)
        for adapter in http_adapters(transport_for(answer)):
            raw = await send_raw(adapter, request)
            guarded = await GuardedAdapter(adapter).send(request)
            assert_outcome(guarded)
            if isinstance(raw, InvalidPayload):
                assert (guarded.outcome, guarded.error_code) == (OutcomeClass.PERMANENT, "INVALID_PAYLOAD")
            else:
                assert_outcome(raw)

    run(scenario())


@given(
    batch=st.lists(st.tuples(payloads, recipients), min_size=1, max_size=5),
    answer=answers | transport_failures,
)
def test_bulk_requests_answer_every_message_of_a_fuzzed_batch(
    batch: list[tuple[dict[str, Any], str]], answer: HttpResponse | str
) -> None:
    async def scenario() -> None:
        adapter = GuardedAdapter(BatchingAdapter(MockJsonAdapter("http://mock", transport_for(answer)), 10))
        requests = [request_for("sms", r, p, n + 1) for n, (p, r) in enumerate(batch)]
        results = await asyncio.gather(*(adapter.send(r) for r in requests))
        assert len(results) == len(requests)
        for result in results:
            assert_outcome(result)
        await adapter.close()

    run(scenario())


class FakeSmtp:
    """What the adapter sees of an aiosmtplib client: it flattens the message as aiosmtplib does."""

    def __init__(self, reply: Callable[[], tuple[dict[str, Any], str]]) -> None:
        self.reply = reply
        self.sent: list[bytes] = []
        self.is_connected = True

    async def send_message(self, message: EmailMessage) -> tuple[dict[str, Any], str]:
        self.sent.append(message.as_bytes(policy=SMTP_POLICY))
        return self.reply()


class FakeConnectionSmtpAdapter(SmtpAdapter):
    def __init__(self, client: FakeSmtp) -> None:
        super().__init__({}, "127.0.0.1", 2525, 5)
        self.client = client

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosmtplib.SMTP]:
        yield self.client  # type: ignore[misc]


smtp_replies = st.sampled_from(
    [
        ("ok", 250, "2.0.0 Ok: queued as ABC123"),
        ("refused", 550, "5.1.1 no such mailbox"),
        ("refused", 451, "4.7.1 try later"),
        ("error", 421, "service not available"),
        ("error", 554, "5.7.1 spam"),
    ]
)


@given(payload=payloads, recipient=recipients, reply=smtp_replies)
def test_smtp_answers_every_payload_with_an_outcome(
    payload: dict[str, Any], recipient: str, reply: tuple[str, int, str]
) -> None:
    kind, code, text = reply

    def answer() -> tuple[dict[str, Any], str]:
        if kind == "refused":
            raise aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(code, text, recipient)])
        if kind == "error":
            raise aiosmtplib.SMTPResponseException(code, text)
        return {}, text

    async def scenario() -> None:
        adapter = FakeConnectionSmtpAdapter(FakeSmtp(answer))
        request = request_for("email", recipient, payload)
        raw = await send_raw(adapter, request)
        guarded = await GuardedAdapter(adapter).send(request)
        assert_outcome(guarded)
        if isinstance(raw, InvalidPayload):
            assert guarded.error_code == "INVALID_PAYLOAD"
        else:
            assert_outcome(raw)

    run(scenario())


def test_an_email_subject_with_crlf_is_a_permanent_invalid_payload_before_any_connection() -> None:
    # Given an SMTP adapter whose connection would record anything it sent
    client = FakeSmtp(lambda: ({}, "2.0.0 Ok: queued as X"))
    adapter = GuardedAdapter(FakeConnectionSmtpAdapter(client))
    # When an email's subject carries a header injection
    result = run(
        adapter.send(request_for("email", "jo@example.com", {"subject": "Hi\r\nBcc: all@example.com"}))
    )
    # Then it is refused as bad input, permanently, and nothing was sent
    assert (result.outcome, result.error_code) == (OutcomeClass.PERMANENT, "INVALID_PAYLOAD")
    assert "linefeed" in (result.error_message or "") or "carriage" in (result.error_message or "")
    assert client.sent == []


def test_an_unexpected_exception_in_an_adapter_is_a_permanent_adapter_error() -> None:
    class Broken:
        async def send(self, request: SendRequest) -> SendResult:
            raise KeyError("surprise")

        async def close(self) -> None:
            return None

    result = run(GuardedAdapter(Broken()).send(request_for("sms", "+14155550100", {})))
    assert (result.outcome, result.error_code) == (OutcomeClass.PERMANENT, "ADAPTER_ERROR")
    assert "KeyError" in (result.error_message or "")


def test_a_cancelled_send_stays_a_cancellation() -> None:
    class Slow:
        async def send(self, request: SendRequest) -> SendResult:
            await asyncio.sleep(10)
            raise AssertionError("not reached")

        async def close(self) -> None:
            return None

    async def scenario() -> None:
        task = asyncio.create_task(GuardedAdapter(Slow()).send(request_for("sms", "+1", {})))
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return
        raise AssertionError("the cancellation was swallowed")

    run(scenario())
