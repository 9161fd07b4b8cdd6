"""Bad input on every queue: dead-lettered with a reason or a terminal FAILED log; no process dies."""

from __future__ import annotations

import aio_pika
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.bus.topology import DEAD_LETTER_QUEUE, DISPATCH, LANES, RESPONSES, lane_exchange
from tests.helpers import all_terminal, drain_queue, insert_logs, wait_until
from tests.integration.test_pipeline import start_pipeline
from tools.stack import Stack

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
bad_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(orjson.dumps),
    st.fixed_dictionaries({"log_id": st.text(max_size=5), "attempt": st.integers()}).map(orjson.dumps),
    st.fixed_dictionaries(
        {"log_id": st.integers(min_value=1), "attempt": st.integers(min_value=1)},
        optional={"channel": st.text(max_size=8), "outcome": st.text(max_size=8)},
    ).map(orjson.dumps),
)


def sample_bad_bodies(n: int) -> list[bytes]:
    found: list[bytes] = []

    @settings(max_examples=n, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(bad_bodies)
    def collect(body: bytes) -> None:
        found.append(body)

    collect()
    return list(dict.fromkeys(found))


async def publish_raw(amqp_url: str, exchange_name: str, bodies: list[bytes]) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name)
        for n, body in enumerate(bodies):
            await exchange.publish(aio_pika.Message(body, message_id=f"bad-{n}"), routing_key=f"key-{n}")
    finally:
        await connection.close()


@pytest.mark.e2e
async def test_garbage_on_every_queue_is_dead_lettered_with_a_reason(stack: Stack, pool) -> None:
    # Given the whole pipeline running
    start_pipeline(stack, senders=1)
    await stack.start()
    garbage = sample_bad_bodies(40)
    oversized = orjson.dumps({"log_id": 1, "attempt": 1, "filler": "x" * 300_000})
    # When random bytes, wrong JSON and oversized messages arrive on the dispatch and the response shards
    # of every lane
    for lane in LANES:
        await publish_raw(stack.environment.amqp_url, lane_exchange(DISPATCH, lane), [*garbage, oversized])
        await publish_raw(stack.environment.amqp_url, lane_exchange(RESPONSES, lane), [*garbage, oversized])
    # ... and real logs with an unknown channel, invalid recipients and an oversized payload are inserted
    bad_logs = [
        {"channel": "pigeon", "recipient": "+14155550123"},
        {"channel": "sms", "recipient": "12"},
        {"channel": "whatsapp", "recipient": "+0123"},
        {"channel": "email", "recipient": "no-at-sign.example.com"},
        {"channel": "sms", "recipient": "+14155550124", "payload": {"body": "y" * 100_000}},
    ]
    ids = await insert_logs(pool, [*bad_logs, {"channel": "sms", "recipient": "+14155550125"}])
    await wait_until(lambda: all_terminal(pool), timeout=60, what="every log terminal")
    # Then every bad log is FAILED with an error code, without any provider call, and the good one is SENT
    rows = {
        r["id"]: r for r in await pool.fetch("SELECT id, status, last_error_code FROM communication_logs")
    }
    codes = [rows[i]["last_error_code"] for i in ids[:5]]
    assert [rows[i]["status"] for i in ids] == ["FAILED"] * 5 + ["SENT"]
    assert codes == [
        "UNKNOWN_CHANNEL",
        "INVALID_NUMBER",
        "INVALID_NUMBER",
        "INVALID_ADDRESS",
        "PAYLOAD_TOO_LARGE",
    ]
    # ... every garbage message is in the DLQ, next to the five dead letters: the responder's copies
    # with the reason in a header; the sender's (its user may not write to dlx) moved there by the
    # shard queue's dead-letter policy, with RabbitMQ's x-death (the reason is in the sender's log)
    per_stage = len(LANES) * (len(garbage) + 1)
    expected = 2 * per_stage + 5
    messages = []
    await wait_until(lambda: _collect(stack, messages, expected), timeout=30, what="dead letters")
    poison = [m for m in messages if m.headers.get("x-switchboard-reason") == "poison_message"]
    assert len(poison) == per_stage
    assert all(m.headers.get("x-switchboard-error") for m in poison)
    assert {m.headers.get("x-switchboard-source") for m in poison} == {"responder"}
    rejected = [m for m in messages if m.headers.get("x-death")]
    assert len(rejected) == per_stage
    assert {d["reason"] for m in rejected for d in m.headers["x-death"]} == {"rejected"}
    assert all(str(m.headers["x-death"][0]["queue"]).startswith("dispatch.") for m in rejected)
    # ... and no process died
    assert all(p.alive() for p in stack.processes.values())


async def _collect(stack: Stack, into: list, expected: int) -> bool:
    into.extend(await drain_queue(stack.environment.amqp_url, DEAD_LETTER_QUEUE, timeout=0.5))
    return len(into) >= expected
