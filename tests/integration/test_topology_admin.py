"""``python -m services.admin topology | check | users`` against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from shared.bus.topology import ROLE_TAGS, ServiceRole, Topology, service_user
from shared.ops.management import Management
from shared.ops.setup import dev_password
from shared.runtime.settings import Settings
from tools.stack import ROOT, environment_settings

OLD_SHARD_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-single-active-consumer": True,
    "x-delivery-limit": 10,
    "x-dead-letter-exchange": "dlx",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


AdminVhost = tuple[dict[str, str], Settings]


@pytest.fixture
async def vhost() -> AsyncIterator[AdminVhost]:
    """An empty vhost of its own (no database: these commands only touch the broker)."""
    name = f"sbadmin-{uuid.uuid4().hex[:10]}"
    env = environment_settings(name, {"shards": "2"})
    settings = Settings.model_validate({k.removeprefix("SWITCHBOARD_").lower(): v for k, v in env.items()})
    async with Management(settings) as management:
        await management.create_vhost(name)
        await management.set_permissions(name, "guest", ".*", ".*", ".*")
    try:
        yield env, settings
    finally:
        async with Management(settings) as management:
            await management.delete_vhost(name)
            for role in ServiceRole:
                await management.delete_user(service_user(role, name))


def admin(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.admin", *args],
        cwd=ROOT,
        env={**os.environ, **env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def declare_old_style(settings: Settings, *names: str, message_in: str | None = None) -> None:
    connection = await aio_pika.connect(settings.amqp_url())
    try:
        channel = await connection.channel()
        for name in names:
            await channel.declare_queue(name, durable=True, arguments=OLD_SHARD_ARGUMENTS)
        if message_in:
            await channel.default_exchange.publish(aio_pika.Message(b"in flight"), routing_key=message_in)
    finally:
        await connection.close()


async def test_conflicting_queues_are_explained_and_empty_ones_recreated(vhost: AdminVhost) -> None:
    env, settings = vhost
    # Given shard queues declared with the old arguments (delivery limit and dead-lettering baked in),
    # one of them holding a message
    await declare_old_style(settings, "dispatch.bulk.0", "responses.bulk.1", message_in="responses.bulk.1")

    # When the topology is applied
    refused = admin(env, "topology", "--no-users")
    # Then it stops and names each queue and argument, and the way out
    assert refused.returncode == 1
    assert (
        "queue 'dispatch.bulk.0': argument x-delivery-limit is 10 on the broker, the code declares absent"
        in (" ".join(refused.stderr.split()))
    )
    assert "responses.bulk.1" in refused.stderr and "--recreate-empty" in refused.stderr

    # When it is asked to recreate the empty ones while one still holds a message
    in_use = admin(env, "topology", "--no-users", "--recreate-empty")
    # Then it refuses to delete anything
    assert in_use.returncode == 1 and "responses.bulk.1 (1 messages" in " ".join(in_use.stderr.split())
    async with Management(settings) as management:
        assert (await management.queue(settings.vhost(), "dispatch.bulk.0"))[
            "arguments"
        ] == OLD_SHARD_ARGUMENTS

    # When that queue has drained and it is asked again, then twice more
    connection = await aio_pika.connect(settings.amqp_url())
    try:
        channel = await connection.channel()
        await (await channel.get_queue("responses.bulk.1", ensure=False)).purge()
    finally:
        await connection.close()
    recreated = admin(env, "topology", "--no-users", "--recreate-empty")
    again = admin(env, "topology", "--no-users")
    check = admin(env, "check")

    # Then the queues carry the code's arguments, and the topology is idempotent and checks clean
    assert recreated.returncode == 0, recreated.stderr
    assert (
        "recreated queue 'dispatch.bulk.0'" in recreated.stderr
        and "recreated queue 'responses.bulk.1'" in recreated.stderr
    )
    assert again.returncode == 0 and check.returncode == 0, check.stderr
    expected = {q.name: q.arguments for q in Topology(shards=2).queues()}
    async with Management(settings) as management:
        assert {q["name"]: q["arguments"] for q in await management.queues(settings.vhost())} == expected


async def test_check_reports_a_policy_that_takes_dead_lettering_away(vhost: AdminVhost) -> None:
    env, settings = vhost
    # Given a clean topology, then an operator's catch-all policy of higher priority
    assert admin(env, "topology", "--no-users").returncode == 0
    async with Management(settings) as management:
        await management.put_policy(
            settings.vhost(),
            {
                "name": "ops-limits",
                "pattern": ".*",
                "apply-to": "queues",
                "priority": 9,
                "definition": {"max-length": 100},
            },
        )

    # When the topology is checked
    check = admin(env, "check")

    # Then each shard queue is named as losing its dead-lettering and delivery limit
    assert check.returncode == 1
    text = " ".join(check.stderr.split())
    assert (
        "queue 'dispatch.bulk.0' gets dead-letter-exchange=None from policy 'ops-limits', needs 'dlx'" in text
    )
    assert "queue 'responses.bulk.1' gets no delivery-limit" in text


async def test_users_get_least_privilege_and_passwords_from_the_environment(vhost: AdminVhost) -> None:
    env, settings = vhost
    prefix = settings.vhost()
    assert admin(env, "topology", "--no-users").returncode == 0

    # When the users are created with the sender's password given, and again without it
    first = admin(env, "users", "--user-prefix", prefix, SWITCHBOARD_RABBITMQ_SENDER_PASSWORD="s3cret-sender")
    second = admin(env, "users", "--user-prefix", prefix)

    # Then the sender's password came from the environment, the others' from the documented dev default
    assert first.returncode == 0 and second.returncode == 0
    assert f"user {prefix}-sender: password environment" in " ".join(first.stderr.split())
    assert f"user {prefix}-poller: password dev-only default" in " ".join(first.stderr.split())
    assert f"user {prefix}-sender: password unchanged" in " ".join(second.stderr.split())
    host = settings.amqp_url().split("@", 1)[1]
    for user, password in (
        (f"{prefix}-sender", "s3cret-sender"),
        (f"{prefix}-poller", dev_password(ServiceRole.POLLER)),
    ):
        connection = await aio_pika.connect(f"amqp://{user}:{password}@{host}")
        await connection.close()
    # ... and each has exactly the permissions of the topology, and management rights only as its role says
    expected = Topology(shards=2).permissions()
    async with Management(settings) as management:
        for role, permission in expected.items():
            response = await management.client.get(f"/permissions/{prefix}/{service_user(role, prefix)}")
            granted = response.json()
            assert (granted["configure"], granted["write"], granted["read"]) == (
                permission.configure,
                permission.write,
                permission.read,
            )
            record = await management.user(service_user(role, prefix))
            assert record is not None and record["tags"] == ROLE_TAGS.get(role, [])


async def test_an_upgraded_vhost_loses_the_empty_queues_and_the_exchanges_from_before_the_lanes(
    vhost: AdminVhost,
) -> None:
    env, settings = vhost
    # Given the topology of the release before the priority lanes: a consistent-hash exchange per stage
    # with its shard queues, one of the outcome queues still holding an outcome
    connection = await aio_pika.connect(settings.amqp_url())
    try:
        channel = await connection.channel()
        for stage in ("dispatch", "responses"):
            exchange = await channel.declare_exchange(stage, "x-consistent-hash", durable=True)
            for shard in (0, 1):
                queue = await channel.declare_queue(
                    f"{stage}.{shard}", durable=True, arguments=OLD_SHARD_ARGUMENTS
                )
                await queue.bind(exchange, routing_key="1")
        await channel.default_exchange.publish(aio_pika.Message(b"an outcome"), routing_key="responses.1")
    finally:
        await connection.close()

    # When the topology is applied
    result = admin(env, "topology", "--no-users")

    # Then the old exchanges and empty queues are gone, and the queue with an outcome is kept, explained
    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stderr.split())
    assert "deleted exchange 'dispatch'" in out and "deleted exchange 'responses'" in out
    assert "kept queue 'responses.1'" in out and "1 messages" in out and "run the responder" in out
    async with Management(settings) as management:
        queues = {q["name"] for q in await management.queues(settings.vhost())}
        exchanges = {e["name"] for e in await management.exchanges(settings.vhost())}
    assert {"dispatch.0", "dispatch.1", "responses.0"}.isdisjoint(queues) and "responses.1" in queues
    assert {"dispatch", "responses"}.isdisjoint(exchanges) and "dispatch.bulk" in exchanges

    # ... and once that queue is empty, applying the topology again removes it too
    connection = await aio_pika.connect(settings.amqp_url())
    try:
        channel = await connection.channel()
        await (await channel.get_queue("responses.1")).purge()
    finally:
        await connection.close()
    again = admin(env, "topology", "--no-users")
    assert again.returncode == 0 and "deleted queue 'responses.1'" in " ".join(again.stderr.split())
