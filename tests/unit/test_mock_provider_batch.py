"""The mock provider's bulk route (``POST /{provider}/{channel}/batch``) over a real aiohttp server on
localhost: ledger, replays, magic recipients, outages, validation; and the sender's adapter against it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.mock_provider.app import MAX_BATCH_ITEMS, MockProvider, build_app
from services.mock_provider.behaviour import FailureMix
from services.mock_provider.ledger import Ledger
from services.sender.adapters.base import SendRequest
from services.sender.adapters.batching import BatchingAdapter
from services.sender.adapters.mockjson import MockJsonAdapter
from services.sender.adapters.transport import AiohttpTransport
from shared.core.models import OutcomeClass

P, T, R, S = OutcomeClass.PERMANENT, OutcomeClass.TRANSIENT, OutcomeClass.RECOVERABLE, OutcomeClass.SUCCESS


@pytest.fixture
def mock() -> MockProvider:
    return MockProvider(FailureMix(0, 0, 0), 0, 0, Ledger())


@pytest.fixture
async def client(mock: MockProvider) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(build_app(mock), host="127.0.0.1")) as test_client:
        yield test_client


def message(n: int, to: str | None = None) -> dict[str, object]:
    return {"to": to or f"+4479111{n:05d}", "payload": {"body": f"hi {n}"}, "idempotency_key": f"{n}-1"}


async def post_batch(
    client: TestClient[Any, Any], body: object, path: str = "/gw/sms/batch"
) -> tuple[int, Any]:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = await client.post(path, data=content, headers={"Content-Type": "application/json"})
    return response.status, orjson.loads(await response.read())


async def batch_results(client: TestClient[Any, Any], *messages: object) -> list[dict[str, Any]]:
    status, body = await post_batch(client, {"messages": list(messages)})
    assert status == 200
    results: list[dict[str, Any]] = body["results"]
    assert len(results) == len(messages)
    return results


def codes(results: list[dict[str, Any]]) -> list[tuple[int, str | None]]:
    return [(r["http_status"], r.get("error", {}).get("code")) for r in results]


async def test_a_batch_is_ledgered_once_per_message_with_its_key(
    mock: MockProvider, client: TestClient[Any, Any]
) -> None:
    results = await batch_results(client, message(1), message(2), message(3))
    assert [(r["http_status"], r["status"], r["replay"], r["cost"]) for r in results] == [
        (200, "accepted", False, 0.0075)
    ] * 3
    assert all(r["id"].startswith("gw-") for r in results) and len({r["id"] for r in results}) == 3
    response = await client.get("/ledger")
    rows = await response.json()
    assert [(r["idempotency_key"], r["log_id"], r["attempt"], r["replay"]) for r in rows] == [
        ("1-1", 1, 1, False),
        ("2-1", 2, 1, False),
        ("3-1", 3, 1, False),
    ]
    assert {(r["provider"], r["channel"]) for r in rows} == {("gw", "sms")}
    assert [r["recipient"] for r in rows] == ["+447911100001", "+447911100002", "+447911100003"]
    assert mock.requests == 1  # one bulk request


async def test_the_same_batch_again_is_answered_as_replays(client: TestClient[Any, Any]) -> None:
    first = await batch_results(client, message(1), message(2))
    again = await batch_results(client, message(1), message(2))
    assert [r["replay"] for r in again] == [True, True]
    assert [r["id"] for r in again] == [r["id"] for r in first]
    stats = await (await client.get("/ledger/stats")).json()
    assert (stats["accepted"], stats["replays"]) == (2, 2)


async def test_magic_recipients_are_refused_per_item_and_the_others_go(
    mock: MockProvider, client: TestClient[Any, Any]
) -> None:
    results = await batch_results(
        client,
        message(1),
        message(2, "+999000111"),
        message(3, "+777000111"),
        message(4, "+888000111"),
        message(5),
    )
    assert codes(results) == [
        (200, None),
        (400, "INVALID_NUMBER"),
        (403, "BLOCKED"),
        (500, "SERVER_ERROR"),
        (200, None),
    ]
    assert [row["idempotency_key"] for row in mock.ledger.rows] == ["1-1", "5-1"]


async def test_an_outage_refuses_every_item_with_retry_after(
    mock: MockProvider, client: TestClient[Any, Any]
) -> None:
    response = await client.post("/admin/outage", json={"provider": "gw", "seconds": 5})
    assert response.status == 200
    results = await batch_results(client, message(1), message(2))
    assert codes(results) == [(503, "PROVIDER_UNAVAILABLE")] * 2
    assert [r["retry_after"] for r in results] == [5.0, 5.0]
    assert mock.ledger.rows == []


async def test_unusable_items_are_refused_alone(mock: MockProvider, client: TestClient[Any, Any]) -> None:
    results = await batch_results(
        client,
        message(1),
        {"payload": {}, "idempotency_key": "2-1"},
        {"to": "+447911100003", "payload": {}},
        {"to": "", "idempotency_key": "4-1"},
        {"to": "+447911100005", "idempotency_key": 5},
        "not an object",
        message(7),
    )
    assert codes(results) == [(200, None), *[(400, "VALIDATION_ERROR")] * 5, (200, None)]
    assert [row["idempotency_key"] for row in mock.ledger.rows] == ["1-1", "7-1"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        [message(1)],
        {"msgs": [message(1)]},
        {"messages": "nope"},
        {"messages": []},
        {"messages": [message(n) for n in range(MAX_BATCH_ITEMS + 1)]},
    ],
    ids=["not-json", "a-list", "no-messages", "messages-not-a-list", "empty", "too-many"],
)
async def test_an_unusable_body_is_refused_as_a_whole(
    mock: MockProvider, client: TestClient[Any, Any], body: object
) -> None:
    status, answer = await post_batch(client, body)
    assert (status, answer["error"]["code"]) == (400, "VALIDATION_ERROR")
    assert mock.ledger.rows == []


async def test_the_largest_batch_is_taken(mock: MockProvider, client: TestClient[Any, Any]) -> None:
    results = await batch_results(client, *(message(n) for n in range(1, MAX_BATCH_ITEMS + 1)))
    assert {r["http_status"] for r in results} == {200}
    assert len(mock.ledger.rows) == MAX_BATCH_ITEMS


async def test_an_unknown_channel_is_404(client: TestClient[Any, Any]) -> None:
    status, answer = await post_batch(client, {"messages": [message(1)]}, "/gw/pigeon/batch")
    assert (status, answer["error"]["code"]) == (404, "UNKNOWN_CHANNEL")


async def test_a_key_repeated_in_one_batch_is_sent_once_and_replayed_once(
    mock: MockProvider, client: TestClient[Any, Any]
) -> None:
    results = await batch_results(client, message(1), message(2), message(1))
    assert [(r["http_status"], r["replay"]) for r in results] == [(200, False), (200, False), (200, True)]
    assert results[2]["id"] == results[0]["id"]
    assert [(r["idempotency_key"], r["replay"]) for r in mock.ledger.rows] == [
        ("1-1", False),
        ("2-1", False),
        ("1-1", True),
    ]


async def test_a_key_in_flight_in_another_request_is_answered_from_it(
    mock: MockProvider, client: TestClient[Any, Any]
) -> None:
    """A single send and a batch carrying the same key at once: one accepted send, one replay."""
    mock.latency_ms = 30
    single = client.post("/gw/sms", json={"to": "+447911100001"}, headers={"Idempotency-Key": "1-1"})
    alone, batch = await asyncio.gather(single, batch_results(client, message(1), message(2)))
    answer = await alone.json()
    assert batch[0]["id"] == answer["id"]
    assert sorted([answer["replay"], batch[0]["replay"]]) == [False, True]
    stats = await (await client.get("/ledger/stats")).json()
    assert (stats["accepted"], stats["replays"]) == (2, 1)


# ---- the sender's adapter against the real server -----------------------------------------------------


def send_request(n: int, to: str | None = None) -> SendRequest:
    return SendRequest("gw", "sms", to or f"+4479111{n:05d}", {"body": f"hi {n}"}, f"{n}-1", n, 1)


async def test_the_sender_adapter_maps_every_item(mock: MockProvider, client: TestClient[Any, Any]) -> None:
    transport = AiohttpTransport(5, 8)
    adapter = MockJsonAdapter(str(client.make_url("/")), transport)
    try:
        results = await adapter.send_batch(
            [send_request(1), send_request(2), send_request(3, "+999000111"), send_request(4)]
        )
        again = await adapter.send_batch([send_request(1)])  # one message is still a batch here
    finally:
        await transport.close()
    assert [(r.outcome, r.error_code, r.replay) for r in results] == [
        (S, None, False),
        (S, None, False),
        (P, "INVALID_NUMBER", False),
        (S, None, False),
    ]
    assert all(r.vendor_ref and r.vendor_ref.startswith("gw-") for r in (results[0], results[1], results[3]))
    assert results[0].cost == 0.0075
    assert (again[0].outcome, again[0].replay, again[0].vendor_ref) == (S, True, results[0].vendor_ref)
    assert [row["idempotency_key"] for row in mock.ledger.rows] == ["1-1", "2-1", "4-1", "1-1"]


async def test_the_batching_adapter_sends_concurrent_messages_as_one_request(
    mock: MockProvider, client: TestClient[Any, Any]
) -> None:
    transport = AiohttpTransport(5, 8)
    adapter = BatchingAdapter(MockJsonAdapter(str(client.make_url("/")), transport), 100, max_in_flight=4)
    try:
        results = await asyncio.gather(*(adapter.send(send_request(n)) for n in range(1, 5)))
        await adapter.close()
    finally:
        await transport.close()
    assert [r.outcome for r in results] == [S] * 4
    assert mock.requests == 1
    assert [row["idempotency_key"] for row in mock.ledger.rows] == ["1-1", "2-1", "3-1", "4-1"]


async def test_a_fresh_mock_welcomes_its_first_first_attempts_then_takes_chances() -> None:
    # Given a mock that refuses every draw permanently, started with three welcome sends
    mock = MockProvider(FailureMix(0, 1, 0), 0, 0, Ledger(), welcome_sends=3)
    async with TestClient(TestServer(build_app(mock), host="127.0.0.1")) as client:
        # When a retry (attempt 2), a magic number and then four first attempts arrive
        retry = {**message(9), "idempotency_key": "9-2"}
        first = await batch_results(client, retry, message(8, to="+9991234567"))
        then = await batch_results(client, *(message(n) for n in range(1, 5)))
    # Then the retry takes its chance, the magic number keeps its answer (and uses a welcome), and two
    # of the first attempts are welcomed before the draw applies again
    assert [status for status, _ in codes(first)] == [400, 400]
    assert codes(first)[1] == (400, "INVALID_NUMBER")
    assert [r["http_status"] for r in then] == [200, 200, 400, 400]


async def test_a_mix_set_through_admin_config_ends_the_welcome() -> None:
    mock = MockProvider(FailureMix(0, 0, 0), 0, 0, Ledger(), welcome_sends=5)
    async with TestClient(TestServer(build_app(mock), host="127.0.0.1")) as client:
        response = await client.post("/admin/config", json={"permanent_rate": 1.0})
        assert response.status == 200
        results = await batch_results(client, message(1))
    assert results[0]["http_status"] == 400


def test_failure_rates_set_on_purpose_turn_the_welcome_off() -> None:
    from services.mock_provider.__main__ import welcome_sends
    from services.mock_provider.settings import MockProviderSettings

    assert welcome_sends(MockProviderSettings()) == MockProviderSettings().mock_welcome_sends > 0
    assert welcome_sends(MockProviderSettings(mock_permanent_rate=1.0)) == 0
    assert welcome_sends(MockProviderSettings(mock_welcome_sends=0)) == 0
