"""``rabbitmq/definitions.json`` loaded into a fresh broker vhost: the services run on it with a
least-privilege user each, declare nothing new, and each user is refused outside its permissions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aio_pika
import aiormq.exceptions
import pytest

from shared.bus.topology import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DISPATCH,
    RESPONSES,
    Lane,
    ServiceRole,
    lane_exchange,
    service_user,
)
from shared.db.migrate import drop_database
from shared.db.pool import create_pool
from shared.ops.management import Management
from shared.ops.setup import dev_password, dev_password_hashes, prepare_database, topology_for
from shared.runtime.settings import Settings
from tests.helpers import all_terminal, drain_queue, insert_logs, wait_until
from tools.stack import Environment, Stack, environment_settings

DISPATCH_URGENT, DISPATCH_BULK = lane_exchange(DISPATCH, Lane.URGENT), lane_exchange(DISPATCH, Lane.BULK)
RESPONSES_URGENT, RESPONSES_BULK = lane_exchange(RESPONSES, Lane.URGENT), lane_exchange(RESPONSES, Lane.BULK)


@dataclass
class Imported:
    environment: Environment
    prefix: str
    document: dict[str, Any]

    def url(self, role: ServiceRole) -> str:
        broker = urlsplit(self.environment.amqp_url)
        user, password = quote(service_user(role, self.prefix), safe=""), quote(dev_password(role), safe="")
        return f"amqp://{user}:{password}@{broker.hostname}:{broker.port or 5672}{broker.path}"


@pytest.fixture
async def imported() -> AsyncIterator[Imported]:
    """A vhost that only the definitions document created (its users named after the vhost)."""
    name = f"sbdefs-{uuid.uuid4().hex[:10]}"
    env = environment_settings(name)
    settings = Settings.model_validate({k.removeprefix("SWITCHBOARD_").lower(): v for k, v in env.items()})
    await prepare_database(settings)
    document = topology_for(settings).definitions(name, users=dev_password_hashes(name), user_prefix=name)
    async with Management(settings) as management:
        await management.import_definitions(document)
    try:
        yield Imported(Environment(name, settings, env), name, document)
    finally:
        async with Management(settings) as management:
            await management.delete_vhost(name)
            for role in ServiceRole:
                await management.delete_user(service_user(role, name))
        await drop_database(settings.database_dsn())


async def vhost_entities(settings: Settings) -> tuple[dict[str, Any], set[Any], set[Any]]:
    vhost = settings.vhost()
    async with Management(settings) as management:
        queues = {q["name"]: q["arguments"] for q in await management.queues(vhost)}
        exchanges = {
            e["name"]: e["type"]
            for e in await management.exchanges(vhost)
            if e["name"] and not e["name"].startswith("amq.")
        }
        bindings = {
            (b["source"], b["destination"], b["routing_key"])
            for b in await management.bindings(vhost)
            if b["source"]
        }
    return queues, set(exchanges.items()), bindings


@pytest.mark.e2e
async def test_services_run_on_imported_definitions_with_their_own_users(
    imported: Imported, tmp_path: Path
) -> None:
    # Given a vhost created only by importing the definitions
    settings = imported.environment.settings
    before = await vhost_entities(settings)
    document = imported.document
    assert before[0] == {q["name"]: q["arguments"] for q in document["queues"]}

    # When the mock provider, poller, sender and responder start, each with its own user
    stack = Stack(imported.environment, tmp_path / "logs")
    fast = {
        "backoff_base_s": "0.2",
        "backoff_cap_s": "1",
        "mock_latency_ms": "2",
        "poll_interval_s": "0.05",
        "mock_permanent_rate": "0",
    }  # only the magic +999 recipients fail for good
    mock = stack.add("mock_provider", **fast)
    for role in (ServiceRole.POLLER, ServiceRole.SENDER, ServiceRole.RESPONDER):
        stack.add(
            role.value, **fast, provider_url=f"http://127.0.0.1:{mock.port}", rabbitmq_url=imported.url(role)
        )
    pool = await create_pool(settings.database_dsn(), max_size=2)
    try:
        await stack.start()
        # ... and 30 logs go through, 5 of which the provider rejects for good
        rows = [{"channel": "sms", "recipient": f"+1415555{i:04d}"} for i in range(25)]
        rows += [{"channel": "sms", "recipient": f"+999555{i:04d}"} for i in range(5)]
        ids = await insert_logs(pool, rows)
        # ... and a poison message reaches a sender, which dead-letters it
        connection = await aio_pika.connect(imported.environment.amqp_url)
        try:
            channel = await connection.channel()
            dispatch = await channel.get_exchange(DISPATCH_BULK)
            await dispatch.publish(aio_pika.Message(b"\x00 not a dispatch"), routing_key="+14155550000")
        finally:
            await connection.close()
        await wait_until(lambda: all_terminal(pool), timeout=60, what="every log terminal")
        failed = {
            r["id"] for r in await pool.fetch("SELECT id FROM communication_logs WHERE status = 'FAILED'")
        }

        async def relayed() -> bool:
            left: int = await pool.fetchval("SELECT count(*) FROM dead_letter_outbox")
            return left == 0

        await wait_until(relayed, timeout=30, what="dead letters relayed")
    finally:
        codes = stack.stop()
        await pool.close()

    # Then the logs were processed under least privilege: sent, or dead-lettered by the responder
    assert failed == set(ids[25:])
    letters = await drain_queue(imported.environment.amqp_url, DEAD_LETTER_QUEUE)
    dead = [m for m in letters if "x-switchboard-log-id" in m.headers]
    assert sorted(int(m.headers["x-switchboard-log-id"]) for m in dead) == sorted(failed)
    (poison,) = [m for m in letters if m not in dead]
    assert poison.body == b"\x00 not a dispatch"
    # rejected by the sender (whose user may not write to dlx) and moved by the queue's dead-letter policy
    assert poison.headers["x-death"][0]["queue"].startswith("dispatch.")
    assert set(codes.values()) == {0}
    # And nothing was declared beyond the definitions: same queues and arguments, exchanges, bindings
    assert await vhost_entities(settings) == before
    assert before[2] == {(b["source"], b["destination"], b["routing_key"]) for b in document["bindings"]}


async def give_back(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    await message.nack(requeue=True)


async def attempt(url: str, action: str, target: str) -> bool:
    """Whether the broker lets the user at ``url`` do ``action`` on ``target`` (True) or refuses (False)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        if action == "publish":
            exchange = await channel.get_exchange(target, ensure=False)
            await exchange.publish(aio_pika.Message(b"{}"), routing_key="probe")
        elif action == "consume":
            queue = await channel.get_queue(target, ensure=False)
            tag = await queue.consume(give_back)
            await queue.cancel(tag)
        elif action == "declare":
            await channel.declare_queue(target, durable=True, arguments={"x-queue-type": "quorum"})
        return True
    except aiormq.exceptions.ChannelAccessRefused:
        return False
    finally:
        await asyncio.shield(connection.close())


# (service, action, target, allowed): what each service needs, and a sample of what it must not do
PERMISSION_CASES = [
    (ServiceRole.SENDER, "publish", RESPONSES_URGENT, True),
    (ServiceRole.SENDER, "publish", RESPONSES_BULK, True),
    (ServiceRole.SENDER, "consume", "dispatch.urgent.0", True),
    (ServiceRole.SENDER, "consume", "dispatch.bulk.0", True),
    (ServiceRole.SENDER, "publish", DEAD_LETTER_EXCHANGE, False),  # only the responder (docs/security.md)
    (ServiceRole.SENDER, "publish", DISPATCH_BULK, False),
    (ServiceRole.SENDER, "consume", "responses.bulk.0", False),
    (ServiceRole.RECEIPTS, "publish", RESPONSES_BULK, True),
    (ServiceRole.RECEIPTS, "publish", RESPONSES_URGENT, False),
    (ServiceRole.SENDER, "consume", DEAD_LETTER_QUEUE, False),
    (ServiceRole.POLLER, "publish", DISPATCH_URGENT, True),
    (ServiceRole.POLLER, "publish", DISPATCH_BULK, True),
    (ServiceRole.POLLER, "consume", "dispatch.bulk.0", False),
    (ServiceRole.POLLER, "publish", DEAD_LETTER_EXCHANGE, False),
    (ServiceRole.RESPONDER, "consume", "responses.urgent.1", True),
    (ServiceRole.RESPONDER, "consume", "responses.bulk.1", True),
    (ServiceRole.RESPONDER, "publish", DEAD_LETTER_EXCHANGE, True),
    (ServiceRole.RESPONDER, "publish", RESPONSES_BULK, False),
    (ServiceRole.RESPONDER, "consume", "dispatch.bulk.1", False),
    (ServiceRole.DLQ, "consume", DEAD_LETTER_QUEUE, True),
    (ServiceRole.DLQ, "publish", DEAD_LETTER_EXCHANGE, False),
    (ServiceRole.DLQ, "consume", "dispatch.urgent.0", False),
    (ServiceRole.DLQ, "declare", DEAD_LETTER_QUEUE, False),
    (ServiceRole.POLLER, "declare", "dispatch.bulk.99-new", False),
    (ServiceRole.SENDER, "declare", "extra", False),
]


async def test_each_service_user_is_refused_outside_its_permissions(imported: Imported) -> None:
    # Given the users the definitions created
    # When each tries what it needs and what it must not do
    results = [(case, await attempt(imported.url(case[0]), case[1], case[2])) for case in PERMISSION_CASES]
    # Then the broker allows exactly what the permissions say
    wrong = [
        f"{role.value} {action} {target}: {'allowed' if got else 'refused'}"
        for (role, action, target, allowed), got in results
        if got is not allowed
    ]
    assert not wrong, wrong
