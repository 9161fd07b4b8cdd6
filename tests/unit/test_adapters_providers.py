"""The HTTP provider adapters against a fake transport: request shape, answer mapping, error tables."""

from __future__ import annotations

import base64
import time
from urllib.parse import parse_qs

import orjson
import pytest

from services.sender.adapters import AdapterPool, SendRequest
from services.sender.adapters.base import ErrorClass
from services.sender.adapters.mockjson import MockJsonAdapter
from services.sender.adapters.sms import SMS_ERRORS, SmsGatewayAdapter
from services.sender.adapters.smtp import SmtpAdapter
from services.sender.adapters.transport import HttpRequest, HttpResponse, MockTransport, TransportError
from services.sender.adapters.webhook import WebhookAdapter
from services.sender.adapters.whatsapp import WHATSAPP_ERRORS, WhatsAppCloudAdapter
from services.sender.settings import SenderSettings
from shared.core.errors import DestinationRefused
from shared.core.models import OutcomeClass
from shared.core.routing import ProviderSpec
from shared.core.signatures import SWITCHBOARD_HEADER, verify_timestamped

P, T, R, S = OutcomeClass.PERMANENT, OutcomeClass.TRANSIENT, OutcomeClass.RECOVERABLE, OutcomeClass.SUCCESS


def request(channel: str = "sms", recipient: str = "+447911123456", **payload: object) -> SendRequest:
    return SendRequest("gw", channel, recipient, payload or {"body": "hello"}, "42-3", 42, 3)


def answer(status: int, body: object = None, **headers: str) -> MockTransport:
    content = orjson.dumps(body) if body is not None else b""
    return MockTransport(
        lambda _: HttpResponse(status, content, {k.replace("_", "-"): v for k, v in headers.items()})
    )


def raising(code: str, written: bool = False) -> MockTransport:
    def handler(_: HttpRequest) -> HttpResponse:
        raise TransportError(code, "boom", written=written)

    return MockTransport(handler)


# ---- SMS / MMS gateway --------------------------------------------------------------------------------


async def test_sms_posts_a_signed_in_form_with_the_reference_and_idempotency_key() -> None:
    transport = answer(201, {"sid": "SM1", "status": "queued", "price": "-0.00750"})
    adapter = SmsGatewayAdapter(
        "http://gw/gw",
        {"account_sid": "AC1", "auth_token": "tok", "from": "Acme", "status_callback": "http://cb/x"},
        transport,
    )
    result = await adapter.send(request())
    (sent,) = transport.requests
    assert sent.url == "http://gw/gw/2010-04-01/Accounts/AC1/Messages.json"
    assert sent.headers["Authorization"] == "Basic " + base64.b64encode(b"AC1:tok").decode()
    assert sent.headers["Idempotency-Key"] == "42-3"
    form = parse_qs(sent.content.decode())
    assert form == {
        "To": ["+447911123456"],
        "From": ["Acme"],
        "Body": ["hello"],
        "Reference": ["42-3"],
        "StatusCallback": ["http://cb/x"],
    }
    assert (result.outcome, result.vendor_ref, result.cost) == (S, "SM1", 0.0075)


async def test_mms_carries_its_media_urls() -> None:
    transport = answer(201, {"sid": "MM1"})
    adapter = SmsGatewayAdapter("http://gw", {"account_sid": "AC1"}, transport, default_token="t")
    await adapter.send(request("mms", body="pic", media_urls=["https://x/1.png", "https://x/2.png"]))
    assert parse_qs(transport.requests[0].content.decode())["MediaUrl"] == [
        "https://x/1.png",
        "https://x/2.png",
    ]


@pytest.mark.parametrize(("code", "row"), sorted(SMS_ERRORS.items()))
async def test_sms_error_codes_follow_the_table(code: int, row: ErrorClass) -> None:
    adapter = SmsGatewayAdapter(
        "http://gw", {"account_sid": "AC1"}, answer(400, {"code": code, "message": "nope", "status": 400})
    )
    result = await adapter.send(request())
    assert (result.outcome, result.error_code) == (row.outcome, row.code)


@pytest.mark.parametrize(
    ("status", "body", "outcome", "code"),
    [
        (429, {"code": 20429}, T, "RATE_LIMITED"),
        (503, {"code": 20503}, R, "PROVIDER_UNAVAILABLE"),
        (400, {"code": 21211}, P, "INVALID_NUMBER"),
        (401, {"code": 20003}, R, "AUTH_FAILED"),
        (400, {"code": 99999}, P, "HTTP_400:99999"),
        (502, None, T, "SERVER_ERROR"),
    ],
)
async def test_sms_answers_map_onto_our_classes(
    status: int, body: object, outcome: OutcomeClass, code: str
) -> None:
    result = await SmsGatewayAdapter(
        "http://gw", {"account_sid": "AC1"}, answer(status, body, retry_after="2")
    ).send(request())
    assert (result.outcome, result.error_code, result.retry_after_s) == (outcome, code, 2.0)


@pytest.mark.parametrize("code", ["TIMEOUT", "CONNECTION_ERROR"])
async def test_no_answer_at_all_is_transient(code: str) -> None:
    for adapter in (
        SmsGatewayAdapter("http://gw", {"account_sid": "AC1"}, raising(code)),
        WhatsAppCloudAdapter("http://wa", {"phone_number_id": "1"}, raising(code)),
        WebhookAdapter({}, raising(code)),
    ):
        result = await adapter.send(request(recipient="https://hooks.example/x"))
        assert (result.outcome, result.error_code) == (T, code)


async def test_an_address_the_outbound_policy_refuses_at_connect_time_is_permanent_by_its_type() -> None:
    def refuse(_: HttpRequest) -> HttpResponse:
        raise DestinationRefused("ADDRESS_NOT_ALLOWED", "the URL points at a loopback address")

    for adapter in (
        SmsGatewayAdapter("http://gw", {"account_sid": "AC1"}, MockTransport(refuse)),
        WhatsAppCloudAdapter("http://wa", {"phone_number_id": "1"}, MockTransport(refuse)),
        WebhookAdapter({}, MockTransport(refuse)),
        MockJsonAdapter("http://mock", MockTransport(refuse)),
    ):
        result = await adapter.send(request(recipient="https://hooks.example/x"))
        assert (result.outcome, result.error_code) == (OutcomeClass.PERMANENT, "ADDRESS_NOT_ALLOWED")


@pytest.mark.parametrize("code", ["TIMEOUT", "CONNECTION_LOST"])
async def test_no_answer_to_a_request_that_was_written_is_an_unknown_outcome(code: str) -> None:
    for adapter in (
        SmsGatewayAdapter("http://gw", {"account_sid": "AC1"}, raising(code, written=True)),
        WhatsAppCloudAdapter("http://wa", {"phone_number_id": "1"}, raising(code, written=True)),
        WebhookAdapter({}, raising(code, written=True)),
        MockJsonAdapter("http://mock", raising(code, written=True)),
    ):
        result = await adapter.send(request(recipient="https://hooks.example/x"))
        assert (result.outcome, result.error_code) == (OutcomeClass.UNKNOWN, code)


# ---- WhatsApp Cloud API -------------------------------------------------------------------------------


async def test_whatsapp_text_message_is_graph_api_json_with_callback_data() -> None:
    transport = answer(200, {"messaging_product": "whatsapp", "messages": [{"id": "wamid.X"}]})
    adapter = WhatsAppCloudAdapter(
        "http://wa/p", {"phone_number_id": "123", "access_token": "tok"}, transport
    )
    result = await adapter.send(request("whatsapp"))
    (sent,) = transport.requests
    assert sent.url == "http://wa/p/v19.0/123/messages"
    assert sent.headers["Authorization"] == "Bearer tok"
    assert orjson.loads(sent.content) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "447911123456",
        "biz_opaque_callback_data": "42-3",
        "type": "text",
        "text": {"preview_url": False, "body": "hello"},
    }
    assert (result.outcome, result.vendor_ref) == (S, "wamid.X")


async def test_whatsapp_template_message() -> None:
    transport = answer(200, {"messages": [{"id": "wamid.T"}]})
    template = {
        "name": "order_update",
        "language": "en_GB",
        "components": [{"type": "body", "parameters": []}],
    }
    await WhatsAppCloudAdapter("http://wa", {"phone_number_id": "1"}, transport).send(
        request("whatsapp", template=template)
    )
    body = orjson.loads(transport.requests[0].content)
    assert body["type"] == "template"
    assert body["template"] == {
        "name": "order_update",
        "language": {"code": "en_GB"},
        "components": [{"type": "body", "parameters": []}],
    }


@pytest.mark.parametrize(("code", "row"), sorted(WHATSAPP_ERRORS.items()))
async def test_whatsapp_error_codes_follow_the_table(code: int, row: ErrorClass) -> None:
    body = {"error": {"message": "x", "type": "OAuthException", "code": code, "fbtrace_id": "f"}}
    result = await WhatsAppCloudAdapter("http://wa", {"phone_number_id": "1"}, answer(400, body)).send(
        request("whatsapp")
    )
    assert (result.outcome, result.error_code, result.bounced) == (
        row.outcome,
        row.code,
        row.bounced,
    )


# ---- webhooks -------------------------------------------------------------------------------------------


async def test_webhook_is_signed_with_hmac_sha256_and_carries_the_key() -> None:
    transport = answer(202, None, x_request_id="req-1")
    result = await WebhookAdapter({"secret": "s3cret"}, transport).send(
        request("webhook", "https://h.example/in")
    )
    (sent,) = transport.requests
    assert sent.url == "https://h.example/in"
    assert verify_timestamped("s3cret", sent.content, sent.headers[SWITCHBOARD_HEADER], time.time(), 60)
    assert not verify_timestamped("other", sent.content, sent.headers[SWITCHBOARD_HEADER], time.time(), 60)
    assert orjson.loads(sent.content) == {"id": "42-3", "log_id": 42, "attempt": 3, "data": {"body": "hello"}}
    assert (result.outcome, result.vendor_ref) == (S, "req-1")


@pytest.mark.parametrize(
    ("status", "outcome", "code"),
    [
        (410, P, "ENDPOINT_GONE"),
        (301, P, "REDIRECT_REFUSED"),
        (404, P, "HTTP_404"),
        (429, T, "RATE_LIMITED"),
        (500, T, "SERVER_ERROR"),
        (503, R, "PROVIDER_UNAVAILABLE"),
    ],
)
async def test_webhook_statuses(status: int, outcome: OutcomeClass, code: str) -> None:
    result = await WebhookAdapter({}, answer(status)).send(request("webhook", "https://h.example/in"))
    assert (result.outcome, result.error_code) == (outcome, code)


async def test_https_only_refuses_plain_http_before_any_call() -> None:
    transport = answer(200)
    result = await WebhookAdapter({"https_only": True}, transport).send(
        request("webhook", "http://h.example/in")
    )
    assert (result.outcome, result.error_code, transport.requests) == (P, "INVALID_URL", [])


# ---- the pool ---------------------------------------------------------------------------------------------


async def test_pool_builds_one_adapter_per_provider_and_rebuilds_on_change() -> None:
    pool = AdapterPool(SenderSettings(), MockTransport(lambda _: HttpResponse(200)))
    sms = ProviderSpec("gw", "sms_gateway", settings={"account_sid": "A"})
    assert pool.get(sms) is pool.get(sms)
    assert isinstance(pool.get(ProviderSpec("m", "smtp")).inner, SmtpAdapter)
    changed = ProviderSpec("gw", "sms_gateway", settings={"account_sid": "B"})
    assert pool.get(changed) is not pool.get(sms)
    await pool.close()
