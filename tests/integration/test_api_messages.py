"""The API's message endpoints against the real database: ingest, idempotency, status, list, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from tests.integration.test_api_support import Api, api_for, sms
from tools.stack import Environment


@pytest.fixture
async def api(environment: Environment) -> AsyncIterator[Api]:
    async with api_for(environment) as running:
        yield running


async def test_one_message_is_accepted_and_stored_pending_with_its_normalised_recipient(
    api: Api, pool: asyncpg.Pool
) -> None:
    # Given a tenant's key
    headers = await api.key("acme")
    # When it sends one SMS to a number written with spaces
    response = await api.client.post(
        "/v1/messages", json=sms("+44 7911 123456", priority=0, max_attempts=3), headers=headers
    )
    # Then it is accepted with an id, and the row is PENDING for that tenant, normalised
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "PENDING" and body["recipient"] == "+447911123456"
    row = await pool.fetchrow("SELECT * FROM communication_logs WHERE id = $1", body["id"])
    assert (row["tenant"], row["recipient"], row["status"], row["priority"], row["max_attempts"]) == (
        "acme",
        "+447911123456",
        "PENDING",
        0,
        3,
    )
    assert row["payload"] == {"body": "hello"}


async def test_a_batch_is_inserted_in_order_or_not_at_all(api: Api, pool: asyncpg.Pool) -> None:
    headers = await api.key("acme")
    # Given a batch of 500 messages over three channels
    messages = [
        sms(f"+1415555{i:04d}")
        if i % 2
        else {"channel": "email", "recipient": f"u{i}@Example.com", "payload": {"subject": "s"}}
        for i in range(500)
    ]
    # When it is sent
    response = await api.client.post("/v1/messages/batch", json={"messages": messages}, headers=headers)
    # Then all are accepted, ids in the order of the request
    assert response.status_code == 202, response.text
    ids = response.json()["ids"]
    assert response.json()["count"] == 500 and ids == sorted(ids)
    rows = await pool.fetch("SELECT id, recipient FROM communication_logs ORDER BY id")
    assert [r["id"] for r in rows] == ids
    assert rows[2]["recipient"] == "u2@example.com" and rows[1]["recipient"] == "+14155550001"
    # When a batch has one invalid message among valid ones
    bad = [sms("+447911123456"), sms("not a number"), sms("+447911123457")]
    response = await api.client.post("/v1/messages/batch", json={"messages": bad}, headers=headers)
    # Then nothing of it is inserted, and the error points at the message
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["loc"][:3] == ["body", "messages", 1]
    assert "E.164" in error["details"][0]["message"]
    assert await pool.fetchval("SELECT count(*) FROM communication_logs") == 500
    # ... and more than 1 000 messages are refused
    response = await api.client.post("/v1/messages/batch", json={"messages": [sms()] * 1001}, headers=headers)
    assert response.status_code == 422


async def test_the_same_idempotency_key_replays_and_another_body_is_a_conflict(
    api: Api, pool: asyncpg.Pool
) -> None:
    headers = await api.key("acme")
    keyed = {**headers, "Idempotency-Key": "order-42"}
    # Given a message sent with an idempotency key
    first = await api.client.post("/v1/messages", json=sms(), headers=keyed)
    assert first.status_code == 202
    # When the same request comes again (keys in another order)
    again = await api.client.post("/v1/messages", json=dict(reversed(list(sms().items()))), headers=keyed)
    # Then the original answer is replayed and nothing new is inserted
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await pool.fetchval("SELECT count(*) FROM communication_logs") == 1
    # When the same key comes with another body, or on the batch endpoint
    other = await api.client.post("/v1/messages", json=sms("+447911999999"), headers=keyed)
    batch = await api.client.post("/v1/messages/batch", json={"messages": [sms()]}, headers=keyed)
    # Then both are conflicts
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    assert batch.status_code == 409
    # ... another tenant may use the same key for its own request
    theirs = await api.client.post(
        "/v1/messages", json=sms(), headers={**await api.key("globex"), "Idempotency-Key": "order-42"}
    )
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
    # When the key has expired (kept 24 h), it may be used again
    await pool.execute("UPDATE api_idempotency SET expires_at = now() - interval '1 second'")
    reused = await api.client.post("/v1/messages", json=sms("+447911999999"), headers=keyed)
    assert reused.status_code == 202 and reused.json()["id"] not in {first.json()["id"], theirs.json()["id"]}


async def test_concurrent_requests_with_one_key_insert_once(api: Api, pool: asyncpg.Pool) -> None:
    headers = {**await api.key("acme"), "Idempotency-Key": "same"}
    body = {"messages": [sms(f"+44791112345{i}") for i in range(10)]}
    # When the same keyed batch is sent eight times at once
    responses = await asyncio.gather(
        *(api.client.post("/v1/messages/batch", json=body, headers=headers) for _ in range(8))
    )
    # Then every answer is the same, and the messages exist once
    assert {r.status_code for r in responses} == {202}
    assert len({tuple(r.json()["ids"]) for r in responses}) == 1
    assert await pool.fetchval("SELECT count(*) FROM communication_logs") == 10


async def test_concurrent_single_sends_with_one_key_insert_once_and_answer_alike(
    api: Api, pool: asyncpg.Pool
) -> None:
    headers = {**await api.key("acme"), "Idempotency-Key": "otp-7"}
    # When the same keyed single send comes eight times at once
    responses = await asyncio.gather(
        *(api.client.post("/v1/messages", json=sms(priority=0), headers=headers) for _ in range(8))
    )
    # Then every answer is the first one's, byte for byte, seven of them replays
    assert {r.status_code for r in responses} == {202}
    assert len({r.content for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 7
    # ... and the message exists once, its key kept with the answer
    assert await pool.fetchval("SELECT count(*) FROM communication_logs") == 1
    kept = await pool.fetchrow("SELECT status_code, response FROM api_idempotency WHERE key = 'otp-7'")
    assert kept["status_code"] == 202 and kept["response"]["id"] == responses[0].json()["id"]


async def test_the_quick_path_and_the_full_handler_answer_alike(api: Api, pool: asyncpg.Pool) -> None:
    headers = await api.key("acme")
    body = orjson.dumps(sms(priority=0))
    # Given one send taking the quick path (application/json) and one the full FastAPI handler
    # (a JSON content type the quick path leaves to it), each with its own key
    quick = await api.client.post(
        "/v1/messages",
        content=body,
        headers={**headers, "Content-Type": "application/json", "Idempotency-Key": "q"},
    )
    full = await api.client.post(
        "/v1/messages",
        content=body,
        headers={**headers, "Content-Type": "application/vnd.api+json", "Idempotency-Key": "f"},
    )
    # Then both are accepted with answers of the same shape, both rows stored alike
    assert quick.status_code == full.status_code == 202
    assert quick.headers["content-type"] == full.headers["content-type"]
    assert {k: v for k, v in quick.json().items() if k not in ("id", "created_at", "send_at")} == {
        k: v for k, v in full.json().items() if k not in ("id", "created_at", "send_at")
    }
    assert await pool.fetchval("SELECT count(*) FROM communication_logs WHERE priority = 0") == 2
    # When each key comes again by the other path, Then each first answer is replayed
    again_quick = await api.client.post(
        "/v1/messages",
        content=body,
        headers={**headers, "Content-Type": "application/vnd.api+json", "Idempotency-Key": "q"},
    )
    again_full = await api.client.post(
        "/v1/messages",
        content=body,
        headers={**headers, "Content-Type": "application/json", "Idempotency-Key": "f"},
    )
    assert again_quick.content == quick.content and again_full.content == full.content
    # ... and a bad key or a bad body is refused the same way by both
    answers = []
    for content_type in ("application/json", "application/vnd.api+json"):
        refused = await api.client.post(
            "/v1/messages", content=body, headers={"X-API-Key": "sbk_bad", "Content-Type": content_type}
        )
        invalid = await api.client.post(
            "/v1/messages",
            content=orjson.dumps({**sms(), "recipient": "nope"}),
            headers={**headers, "Content-Type": content_type},
        )
        answers.append((refused.status_code, refused.json(), invalid.status_code, invalid.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401 and answers[0][2] == 422


async def test_failed_keys_on_the_quick_path_count_toward_the_callers_throttle(
    environment: Environment,
) -> None:
    async with api_for(environment, api_auth_failures_per_window=3) as api:
        good = await api.key("acme")
        # When one source sends plain (quick-path) sends with wrong keys
        guesses = [
            (
                await api.client.post(
                    "/v1/messages", json=sms(), headers={"X-API-Key": f"sbk_guess{n:04d}_{'x' * 32}"}
                )
            ).status_code
            for n in range(4)
        ]
        # Then they are refused, and after 3 the same source is throttled on every path, a valid key too
        quick = await api.client.post("/v1/messages", json=sms(), headers=good)
        full = await api.client.get("/v1/messages", headers=good)
    assert guesses == [401, 401, 401, 429]
    assert quick.status_code == full.status_code == 429


async def test_status_shows_attempts_and_receipts(api: Api, pool: asyncpg.Pool) -> None:
    headers = await api.key("acme")
    log_id = (await api.client.post("/v1/messages", json=sms(), headers=headers)).json()["id"]
    # Given the pipeline tried twice and the second attempt was accepted
    await pool.execute(
        "UPDATE communication_logs SET status = 'SENT', attempts = 2, provider = 'mocksms', sent_at = now()"
        " WHERE id = $1",
        log_id,
    )
    await pool.execute(
        "INSERT INTO delivery_attempts (log_id, attempt, provider, outcome, error_code, latency_ms, cost,"
        " finished_at) VALUES ($1, 1, 'mocksms', 'transient', 'TIMEOUT', 100, 0, now()),"
        "        ($1, 2, 'mocksms', 'success', NULL, 12.5, 0.0075, now())",
        log_id,
    )
    await pool.execute(
        "INSERT INTO delivery_receipts (log_id, attempt, provider, vendor_ref, status, provider_status)"
        " VALUES ($1, 2, 'mocksms', 'v1', 'ACCEPTED', 'accepted')",
        log_id,
    )
    # When its status is read
    response = await api.client.get(f"/v1/messages/{log_id}", headers=headers)
    # Then it has both attempts and the receipt
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "SENT" and body["attempts"] == 2 and not body["paused"]
    assert [(a["attempt"], a["outcome"], a["error_code"]) for a in body["attempt_history"]] == [
        (1, "transient", "TIMEOUT"),
        (2, "success", None),
    ]
    assert body["attempt_history"][1]["cost"] == 0.0075
    assert [r["status"] for r in body["receipts"]] == ["ACCEPTED"]
    # ... and an unknown id is a 404 in the error shape
    missing = await api.client.get("/v1/messages/999999", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_list_filters_and_pages_with_a_cursor(api: Api, pool: asyncpg.Pool) -> None:
    headers = await api.key("acme")
    batch = [sms(f"+1415555{i:04d}") for i in range(7)] + [
        {"channel": "email", "recipient": "a@example.com", "payload": {}}
    ]
    ids = (await api.client.post("/v1/messages/batch", json={"messages": batch}, headers=headers)).json()[
        "ids"
    ]
    await pool.execute("UPDATE communication_logs SET status = 'SENT' WHERE id = ANY($1::bigint[])", ids[:2])
    # When the SMS messages are listed three at a time
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {
            "channel": "sms",
            "limit": 3,
            **({"cursor": cursor} if cursor else {}),
        }
        page = (await api.client.get("/v1/messages", params=params, headers=headers)).json()
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # Then every SMS comes once, newest first
    assert seen == sorted(ids[:7], reverse=True)
    # ... and the filters combine
    sent = (await api.client.get("/v1/messages", params={"status": "SENT"}, headers=headers)).json()
    assert sorted(m["id"] for m in sent["items"]) == ids[:2]
    by_recipient = await api.client.get(
        "/v1/messages", params={"recipient": "a@example.com"}, headers=headers
    )
    assert [m["id"] for m in by_recipient.json()["items"]] == [ids[7]]
    bad = await api.client.get("/v1/messages", params={"cursor": "nonsense"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"


async def test_only_pending_or_scheduled_messages_can_be_cancelled(api: Api, pool: asyncpg.Pool) -> None:
    headers = await api.key("acme")
    scheduled = await api.client.post(
        "/v1/messages", json=sms(send_at="2099-01-01T00:00:00Z"), headers=headers
    )
    assert scheduled.json()["send_at"].startswith("2099-01-01")
    log_id = scheduled.json()["id"]
    # When a scheduled message is cancelled
    response = await api.client.post(f"/v1/messages/{log_id}/cancel", headers=headers)
    # Then it is CANCELLED
    assert response.status_code == 200 and response.json()["status"] == "CANCELLED"
    # When messages being processed or already sent are cancelled, it is a conflict that says why
    for status in ("PROCESSING", "SENT"):
        other = (await api.client.post("/v1/messages", json=sms(), headers=headers)).json()["id"]
        await pool.execute("UPDATE communication_logs SET status = $2 WHERE id = $1", other, status)
        refused = await api.client.post(f"/v1/messages/{other}/cancel", headers=headers)
        assert refused.status_code == 409 and status in refused.json()["error"]["message"]
    assert (await api.client.post("/v1/messages/424242/cancel", headers=headers)).status_code == 404
    assert (await api.client.post(f"/v1/messages/{log_id}/cancel", headers=headers)).status_code == 409


INVALID_BODIES = [
    (b"{not json", 400, "malformed_json"),
    (b'{"channel": "fax", "recipient": "+447911123456"}', 422, "validation_error"),
    (
        b'{"channel": "sms", "recipient": "+447911123456", "payload": {"x": "\\u0000"}}',
        422,
        "validation_error",
    ),
    (b'{"channel": "sms", "recipient": "\\ud800"}', 422, "validation_error"),
    (b'{"channel": "sms", "recipient": "+447911123456", "payload": {"n": 1e999}}', 422, "validation_error"),
    (
        b'{"channel": "sms", "recipient": "+447911123456", "payload": {"n": 99999999999999999999}}',
        422,
        "validation_error",
    ),
    (b'{"channel": "sms", "recipient": "+447911123456", "priority": true}', 422, "validation_error"),
    (b"[]", 422, "validation_error"),
]


async def test_invalid_input_gets_a_4xx_with_a_clear_message(api: Api) -> None:
    headers = {**await api.key("acme"), "Content-Type": "application/json"}
    for body, status, code in INVALID_BODIES:
        response = await api.client.post("/v1/messages", content=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == code and error["message"], body
    # ... unknown query parameters and ids that cannot exist are refused too
    typo = await api.client.get("/v1/messages", params={"stauts": "SENT"}, headers=headers)
    assert typo.status_code == 422 and "stauts" in typo.json()["error"]["message"]
    twice = await api.client.get(
        "/v1/messages", params=[("recipient", "+447911123456"), ("recipient", "+1")], headers=headers
    )
    assert twice.status_code == 422 and twice.json()["error"]["code"] == "repeated_parameter"
    huge = await api.client.get(f"/v1/messages/{2**64}", headers=headers)
    assert huge.status_code == 422
    assert (await api.client.get("/v1/messages/abc", headers=headers)).status_code == 404
    wrong_method = await api.client.delete("/v1/messages", headers=headers)
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "GET, POST"


async def test_oversized_bodies_are_refused_with_413(environment: Environment) -> None:
    async with api_for(environment, api_max_body_bytes=2048) as api:
        headers = await api.key("acme")
        # Given a body over the limit, declared or streamed
        big = {"channel": "sms", "recipient": "+447911123456", "payload": {"body": "x" * 5000}}
        declared = await api.client.post("/v1/messages", json=big, headers=headers)

        async def stream() -> AsyncIterator[bytes]:
            yield b'{"channel": "sms", "recipient": "+447911123456", "payload": {"body": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}}'

        streamed = await api.client.post("/v1/messages", content=stream(), headers=headers)
    # Then both are 413 with the error body
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "payload_too_large"


async def test_requests_without_a_valid_key_are_401(api: Api) -> None:
    await api.key("acme")
    for headers in ({}, {"X-API-Key": "nonsense"}, {"X-API-Key": "sbk_0123456789ab_" + "a" * 43}):
        response = await api.client.get("/v1/messages", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert "WWW-Authenticate" in response.headers


async def test_an_ordering_key_is_stored_and_groups_the_messages_of_a_tenant(
    api: Api, pool: asyncpg.Pool
) -> None:
    # Given two tenants' keys
    acme, globex = await api.key("acme"), await api.key("globex")
    # When each sends messages with the same ordering key, and acme an urgent one without a key
    sent = [
        await api.client.post(
            "/v1/messages", json=sms("+447911123456", ordering_key="order-7"), headers=acme
        ),
        await api.client.post(
            "/v1/messages", json=sms("+447911000000", ordering_key="order-7"), headers=acme
        ),
        await api.client.post(
            "/v1/messages", json=sms("+447911123456", ordering_key="order-7"), headers=globex
        ),
        await api.client.post("/v1/messages", json=sms("+447911123456", priority=0), headers=acme),
    ]
    assert [r.status_code for r in sent] == [202] * 4, [r.text for r in sent]
    ids = [r.json()["id"] for r in sent]
    groups = {
        r["id"]: r["ordering_group"]
        for r in await pool.fetch("SELECT id, ordering_group FROM communication_logs WHERE id = ANY($1)", ids)
    }
    # Then one tenant's key is one group whatever the recipient, and not the other tenant's group
    assert groups[ids[0]] == groups[ids[1]] == "key:acme:order-7"
    assert groups[ids[2]] == "key:globex:order-7"
    # ... an urgent message without a key is its recipient's urgent group, and the status shows the key
    assert groups[ids[3]] == "urgent:+447911123456"
    shown = await api.client.get(f"/v1/messages/{ids[0]}", headers=acme)
    assert shown.json()["ordering_key"] == "order-7"
    # ... and an empty or oversized key is refused
    for key in ("", "k" * 201):
        refused = await api.client.post(
            "/v1/messages", json=sms("+447911123456", ordering_key=key), headers=acme
        )
        assert refused.status_code == 422, refused.text
