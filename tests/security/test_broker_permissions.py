"""Threat: a compromised service (the internet-facing receipts receiver first) uses its broker user to
delete the DLQ, re-bind queues, or publish forged messages where its role never publishes. Each
role's user is tried against the real broker: what it needs works, everything else is refused; and a
forged dead letter makes ``dlq requeue`` reset nothing (it trusts PostgreSQL, not letters)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import aiormq
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from services.dlq import actions
from services.dlq.filters import EntryFilter
from services.dlq.requeue import Verdict
from shared.bus.amqp import declare
from shared.bus.topology import (
    CIRCUIT_EVENTS_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DISPATCH,
    RESPONSES,
    Lane,
    Topology,
    lane_exchange,
)
from tests.helpers import all_terminal, drain_queue, insert_logs, status_counts, wait_until
from tests.integration.dlq_support import dead_letter, failed_logs, relay
from tests.integration.test_providers import QUIET, start_stack
from tools.stack import Environment, Stack, create_environment, destroy_environment

DISPATCH_EXCHANGE = lane_exchange(DISPATCH, Lane.BULK)
URGENT_DISPATCH_EXCHANGE = lane_exchange(DISPATCH, Lane.URGENT)
RESPONSES_EXCHANGE = lane_exchange(RESPONSES, Lane.BULK)
URGENT_RESPONSES_EXCHANGE = lane_exchange(RESPONSES, Lane.URGENT)

Action = Callable[[AbstractChannel], Awaitable[object]]
FORGED = b'{"forged": true}'


@pytest.fixture(scope="module")
async def users() -> AsyncIterator[Environment]:
    env = await create_environment("sbperm", service_users=True)
    try:
        yield env
    finally:
        await destroy_environment(env)


async def attempt(url: str, action: Action) -> str:
    """``ok``, or ``refused`` when the broker answers ACCESS_REFUSED."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        try:
            await action(channel)
        except aiormq.exceptions.ChannelAccessRefused:
            return "refused"
        return "ok"
    finally:
        await connection.close()


def publish(exchange: str, body: bytes = FORGED) -> Action:
    async def go(channel: AbstractChannel) -> None:
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(body), routing_key="+14155550100")

    return go


def delete_queue(name: str) -> Action:
    async def go(channel: AbstractChannel) -> None:
        await channel.queue_delete(name)

    return go


def declare_queue(name: str) -> Action:
    async def go(channel: AbstractChannel) -> None:
        await channel.declare_queue(name, durable=True)

    return go


def bind(queue: str, exchange: str) -> Action:
    async def go(channel: AbstractChannel) -> None:
        q = await channel.get_queue(queue, ensure=False)
        await q.bind(exchange, routing_key="#")

    return go


def consume(queue: str) -> Action:
    async def go(channel: AbstractChannel) -> None:
        q = await channel.get_queue(queue, ensure=False)

        async def ignore(message: AbstractIncomingMessage) -> None:
            return None

        tag = await q.consume(ignore)
        await q.cancel(tag)

    return go


async def check_topology(channel: AbstractChannel) -> None:
    await declare(channel, Topology(), passive=True)


EVERYONE_REFUSED: list[tuple[str, Action]] = [
    ("delete the DLQ", delete_queue(DEAD_LETTER_QUEUE)),
    ("delete a shard queue", delete_queue("dispatch.urgent.0")),
    ("declare a queue of its own", declare_queue("stolen")),
    ("bind the DLQ elsewhere", bind(DEAD_LETTER_QUEUE, RESPONSES_EXCHANGE)),
    ("re-declare the topology", lambda channel: declare(channel, Topology())),
]

ROLE_RULES: dict[str, tuple[list[tuple[str, Action]], list[tuple[str, Action]]]] = {
    # role: (what it needs, what it must not do beyond EVERYONE_REFUSED)
    "poller": (
        [
            ("publish dispatches", publish(DISPATCH_EXCHANGE)),
            ("publish urgent dispatches", publish(URGENT_DISPATCH_EXCHANGE)),
        ],
        [
            ("publish outcomes", publish(RESPONSES_EXCHANGE)),
            ("publish to dlx", publish(DEAD_LETTER_EXCHANGE)),
            ("read dispatches", consume("dispatch.bulk.0")),
        ],
    ),
    "sender": (
        [
            ("publish outcomes", publish(RESPONSES_EXCHANGE)),
            ("publish urgent outcomes", publish(URGENT_RESPONSES_EXCHANGE)),
            ("publish circuit events", publish(CIRCUIT_EVENTS_EXCHANGE)),
            ("consume dispatches", consume("dispatch.bulk.0")),
            ("consume urgent dispatches", consume("dispatch.urgent.0")),
            ("declare its own circuit queue", declare_queue("circuit-events.r1")),
            ("bind it to circuit events", bind("circuit-events.r1", CIRCUIT_EVENTS_EXCHANGE)),
        ],
        [
            ("publish forged dead letters", publish(DEAD_LETTER_EXCHANGE)),
            ("publish dispatches", publish(DISPATCH_EXCHANGE)),
            ("read the DLQ", consume(DEAD_LETTER_QUEUE)),
            ("bind its queue to dispatch", bind("circuit-events.r1", DISPATCH_EXCHANGE)),
        ],
    ),
    "responder": (
        [
            ("publish dead letters", publish(DEAD_LETTER_EXCHANGE, b"{}")),
            ("consume outcomes", consume("responses.bulk.0")),
        ],
        [
            ("publish dispatches", publish(DISPATCH_EXCHANGE)),
            ("publish outcomes", publish(RESPONSES_EXCHANGE)),
        ],
    ),
    "receipts": (
        [("publish receipts", publish(RESPONSES_EXCHANGE))],
        [
            ("publish to dlx", publish(DEAD_LETTER_EXCHANGE)),
            ("publish dispatches", publish(DISPATCH_EXCHANGE)),
            ("publish urgent outcomes", publish(URGENT_RESPONSES_EXCHANGE)),
            ("read outcomes", consume("responses.bulk.0")),
            ("read the DLQ", consume(DEAD_LETTER_QUEUE)),
        ],
    ),
    "dlq": (
        [("read the DLQ", consume(DEAD_LETTER_QUEUE))],
        [
            ("publish to dlx", publish(DEAD_LETTER_EXCHANGE)),
            ("publish dispatches", publish(DISPATCH_EXCHANGE)),
        ],
    ),
    "monitor": (
        [],
        [("read the DLQ", consume(DEAD_LETTER_QUEUE)), ("publish outcomes", publish(RESPONSES_EXCHANGE))],
    ),
}


@pytest.mark.parametrize("role", sorted(ROLE_RULES))
async def test_each_role_can_do_its_job_and_nothing_else(users: Environment, role: str) -> None:
    url = users.amqp_url_for(role)
    assert url is not None
    needed, forbidden = ROLE_RULES[role]
    # Given the role's own user: it can check the topology exists (passive declares) and do its job
    results = {"check the topology": await attempt(url, check_topology)}
    results |= {what: await attempt(url, action) for what, action in needed}
    assert set(results.values()) == {"ok"}, results
    # When it tries what its role never does / Then the broker refuses each
    refusals = {what: await attempt(url, action) for what, action in [*EVERYONE_REFUSED, *forbidden]}
    assert set(refusals.values()) == {"refused"}, refusals
    # ... and nothing forged reached the DLQ
    assert all(m.body != FORGED for m in await drain_queue(users.amqp_url, DEAD_LETTER_QUEUE))


# ---- the pipeline runs as its least-privilege users ------------------------------------------------


@pytest.fixture
async def environment() -> AsyncIterator[Environment]:
    env = await create_environment("sbperm", service_users=True)
    try:
        yield env
    finally:
        await destroy_environment(env)


@pytest.mark.e2e
async def test_the_pipeline_runs_as_service_users_and_a_poison_dispatch_still_reaches_the_dlq(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    # Given every process running as its own user (no configure rights, the sender none on dlx)
    start_stack(stack, receipts=True, **QUIET)
    await stack.start()
    # When messages are sent, and an unparseable message lands on a dispatch shard
    await insert_logs(pool, [{"channel": "sms", "recipient": f"+1415555{n:04d}"} for n in range(20)])
    connection = await aio_pika.connect(stack.environment.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        dispatch = await channel.get_exchange(DISPATCH_EXCHANGE, ensure=False)
        await dispatch.publish(aio_pika.Message(b"\x00 not json", message_id="poison-1"), routing_key="+1")
    finally:
        await connection.close()
    # Then every log is delivered through the real broker permissions
    await wait_until(lambda: all_terminal(pool), timeout=60, what="every log terminal")
    assert (await status_counts(pool)).get("FAILED", 0) == 0
    # ... and the poison message is in the DLQ, moved there by the shard queue's dead-letter policy
    letters: list[AbstractIncomingMessage] = []

    async def poison_arrived() -> bool:
        letters.extend(await drain_queue(stack.environment.amqp_url, DEAD_LETTER_QUEUE))
        return any(m.message_id == "poison-1" for m in letters)

    await wait_until(poison_arrived, timeout=30, what="the poison message in the DLQ")
    (poison,) = [m for m in letters if m.message_id == "poison-1"]
    assert poison.headers["x-death"][0]["reason"] == "rejected"  # type: ignore[index]


async def test_requeue_trusts_postgresql_not_a_forged_letter(
    environment: Environment, pool: asyncpg.Pool
) -> None:
    # Given a dead letter claiming another tenant's log FAILED, while PostgreSQL says it was DELIVERED
    # (a letter forged by whoever could publish to the DLQ, or one that outlived its log's recovery)
    (log_id,) = await failed_logs(pool, 1, attempts=2)
    await dead_letter(pool, [log_id])
    await relay(pool, environment.amqp_url)
    await pool.execute("UPDATE communication_logs SET status = 'DELIVERED' WHERE id = $1", log_id)
    # When the operator requeues everything
    connection = await actions.connect(environment.settings)
    try:
        report = await actions.requeue(connection, pool, EntryFilter(), 5)
    finally:
        await connection.close()
    # Then the log was not reset: requeue read its state from PostgreSQL, and the letter was stale
    assert (report.tally.counts[Verdict.REQUEUED], report.tally.counts[Verdict.STALE]) == (0, 1)
    row = await pool.fetchrow("SELECT status, attempts FROM communication_logs WHERE id = $1", log_id)
    assert (row["status"], row["attempts"]) == ("DELIVERED", 2)
