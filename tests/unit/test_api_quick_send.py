"""services/api/quick_send.py: which requests take the quick path, and what it reads from them."""

from __future__ import annotations

import orjson
import pytest
from starlette.requests import Request
from starlette.types import Message

from services.api.quick_send import is_json, plain_send

SMS = {"channel": "sms", "recipient": "+44 7911 123456", "payload": {"body": "Your code is 123456"}}


def request(
    body: bytes | dict[str, object] = SMS,
    content_type: str | None = "application/json",
    query: bytes = b"",
    keys: tuple[str, ...] = (),
) -> Request:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = [(b"x-api-key", b"sbk_x")]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    headers += [(b"idempotency-key", k.encode()) for k in keys]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/messages",
        "query_string": query,
        "headers": headers,
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": raw, "more_body": False}

    return Request(scope, receive)


async def test_a_plain_request_gives_the_validated_message_and_its_key() -> None:
    plain = await plain_send(request(keys=("otp-1",)))
    assert plain is not None
    message, key = plain
    assert message.recipient == "+447911123456" and message.channel.value == "sms"
    assert key == "otp-1"
    assert (await plain_send(request(content_type="application/json; charset=utf-8"))) is not None


@pytest.mark.parametrize(
    "odd",
    [
        request(query=b"x=1"),
        request(content_type=None),
        request(content_type="text/plain"),
        request(content_type="application/vnd.api+json"),
        request(keys=("a", "b")),
        request(keys=("",)),
        request(keys=("has space",)),
        request(keys=("x" * 256,)),
        request(body=b""),
        request(body=b"{not json"),
        request(body=b"[1, 2]"),
        request(body={**SMS, "recipient": "not a number"}),
        request(body={**SMS, "unknown": 1}),
    ],
)
async def test_anything_else_goes_the_full_way(odd: Request) -> None:
    assert await plain_send(odd) is None


async def test_the_body_read_stays_on_the_request_for_the_full_handler() -> None:
    odd = request(body={**SMS, "unknown": 1})
    assert await plain_send(odd) is None
    assert orjson.loads(await odd.body())["unknown"] == 1


def test_json_content_types() -> None:
    assert is_json("application/json") and is_json("Application/JSON ; charset=utf-8")
    assert not is_json(None) and not is_json("application/jsonx") and not is_json("text/json")
