"""Preparing an environment: database, migrations, vhost, topology and policies (idempotent)."""

from __future__ import annotations

import orjson

from shared.amqp import connect, declare
from shared.db import ensure_database, migrate
from shared.management import Management
from shared.settings import Settings
from shared.topology import Topology


def topology_for(settings: Settings) -> Topology:
    return Topology(shards=settings.shards, delivery_limit=settings.delivery_limit)


async def prepare_database(settings: Settings) -> list[str]:
    await ensure_database(settings.database_dsn())
    return await migrate(settings.database_dsn())


async def prepare_broker(settings: Settings, user_for_vhost: str = "guest") -> None:
    """Create the vhost, grant the set-up user, apply policies and declare the topology."""
    vhost = settings.vhost()
    topology = topology_for(settings)
    async with Management(settings) as management:
        await management.create_vhost(vhost)
        await management.set_permissions(vhost, user_for_vhost, ".*", ".*", ".*")
        for policy in topology.policies():
            await management.put_policy(vhost, policy)
    connection = await connect(settings.amqp_url(), "setup")
    try:
        channel = await connection.channel()
        await declare(channel, topology)
    finally:
        await connection.close()


def definitions_json(settings: Settings, vhost: str = "switchboard") -> bytes:
    document = topology_for(settings).definitions(vhost)
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
