"""What the demo checks and reads around the run: one demo at a time, a prepared database and vhost
that nobody else consumes, the providers the senders route to (and the outage to simulate), and the
broker's view (dlq depth, queued messages).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncpg
import httpx

from shared.bus.amqp import AmqpBroker, connect_plain
from shared.bus.topology import DEAD_LETTER_QUEUE, shard_queues
from shared.core.errors import ChannelGone
from shared.db.migrate import database_name
from shared.ops.management import Management
from shared.runtime.settings import ProviderChains
from tools.demo_outage import OutagePlan, plan_outage, provider_order, routing_config
from tools.stack import Environment


class DemoError(Exception):
    """The demo cannot start: the message says why and what to do."""


@contextlib.contextmanager
def demo_lock(root: Path) -> Iterator[None]:
    """One demo at a time per checkout: an exclusive ``flock`` on ``<root>/demo.lock`` (freed if we die)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "demo.lock"
    handle: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise DemoError(
                f"another demo is running (pid {holder}, lock {path}); stop it (Ctrl-C) first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


async def preflight(environment: Environment, shards: int) -> int:
    """Check the database and broker are prepared and nobody consumes the shards; returns the dlq depth."""
    where = f"database {database_name(environment.database_url)!r}"
    try:
        conn = await asyncpg.connect(environment.database_url, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        raise DemoError(f"{where} does not exist: run `make setup`") from None
    except (OSError, asyncpg.PostgresError) as exc:
        raise DemoError(f"cannot reach PostgreSQL ({exc}); is it running? `make services`") from None
    try:
        await conn.fetchval("SELECT count(*) FROM campaigns WHERE false")
    except asyncpg.UndefinedTableError:
        raise DemoError(f"{where} has no Switchboard schema: run `make setup`") from None
    finally:
        await conn.close()
    try:
        broker = AmqpBroker(await connect_plain(environment.amqp_url, "demo"))
    except Exception as exc:
        raise DemoError(
            f"cannot reach RabbitMQ vhost {environment.vhost!r} ({exc!r}); run `make setup`"
        ) from None
    try:
        names = shard_queues(shards)
        counts = await queue_counts(broker, [*names, DEAD_LETTER_QUEUE])
    finally:
        await broker.close()
    busy = {name: consumers for name, (_, consumers) in counts.items() if consumers and name in names}
    if busy:
        raise DemoError(
            f"vhost {environment.vhost!r} already has consumers on {', '.join(sorted(busy))}: another demo "
            "or other Switchboard processes run against it; stop them first"
        )
    return counts[DEAD_LETTER_QUEUE][0]


async def queue_counts(broker: AmqpBroker, names: list[str]) -> dict[str, tuple[int, int]]:
    """Exact (messages ready, consumers) per queue, by passive declaration."""
    result: dict[str, tuple[int, int]] = {}
    for name in names:
        channel = await broker.channel()
        try:
            depth = await channel.queue_depth(name)
        except ChannelGone:
            raise DemoError(f"queue {name!r} does not exist: run `make setup`") from None
        result[name] = (depth.ready, depth.consumers)
        await channel.close()
    return result


async def dlq_depth(environment: Environment) -> int:
    broker = AmqpBroker(await connect_plain(environment.amqp_url, "demo"))
    try:
        return (await queue_counts(broker, [DEAD_LETTER_QUEUE]))[DEAD_LETTER_QUEUE][0]
    finally:
        await broker.close()


async def broker_view(management: Management, vhost: str) -> tuple[int | None, dict[str, int]]:
    """What the management UI shows: the dlq depth and the messages queued per exchange's shards."""
    try:
        queues = await management.queues(vhost)
    except httpx.HTTPError:
        return None, {}
    backlog: dict[str, int] = {}
    dlq = None
    for queue in queues:
        name, messages = queue["name"], int(queue.get("messages") or 0)
        if name == DEAD_LETTER_QUEUE:
            dlq = messages
        else:
            prefix = name.split(".")[0]
            backlog[prefix] = backlog.get(prefix, 0) + messages
    return dlq, backlog


@dataclass(frozen=True, slots=True)
class Routing:
    providers: list[str]  # every provider, in the order the channels' chains name them
    outage: OutagePlan | None


async def routing(
    environment: Environment, outage: bool, provider: str | None, after_s: float, seconds: float
) -> Routing:
    """The providers the senders will use, and the outage to simulate (refused early if impossible)."""
    conn = await asyncpg.connect(environment.database_url, timeout=10)
    try:
        config = await routing_config(conn, ProviderChains())
    finally:
        await conn.close()
    plan = None
    if outage:
        try:
            plan = plan_outage(config, provider, after_s, seconds)
        except ValueError as exc:
            raise DemoError(str(exc)) from None
    return Routing(provider_order(config), plan)
