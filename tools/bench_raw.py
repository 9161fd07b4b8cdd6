"""The raw baseline: a bare aio-pika relay through the pipeline's two hops, plus batched row updates.

Three processes, standing where the poller, the sender and the responder stand, on the same broker
and database (own exchanges and queues ``bench-raw.*`` in the bench vhost, same shard arguments):

- ``publisher``: N messages, persistent, mandatory, with pipelined publisher confirms (a window of
  ``window`` in flight) to a consistent-hash exchange over ``shards`` quorum shard queues;
- ``relay``: consumes those shards (prefetch ``prefetch``), publishes each body on to the second
  consistent-hash exchange with a confirm, then acks it (one channel, like the sender);
- ``sink``: consumes the second shards, gathers batches (up to ``batch`` or ``batch_wait_s``), runs one
  UPDATE statement per batch on ``communication_logs`` (status SENT, sent_at) and acks the batch.

Run as ``python -m tools.bench_raw ROLE`` with the configuration as JSON in ``$BENCH_RAW_CONFIG`` (not on
the command line, where ``ps`` would show the URLs); each role reports JSON lines on stdout.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pamqp.commands import Basic

from shared.bus import wire
from shared.bus.amqp import to_message
from shared.bus.topology import (
    CONSISTENT_HASH,
    Topology,
    shard_queue,
)
from tools.bench_common import sustained_rate

RAW_DISPATCH = "bench-raw.dispatch"
RAW_RESPONSES = "bench-raw.responses"
CONFIG_VARIABLE = "BENCH_RAW_CONFIG"
UPDATE_SQL = """
UPDATE communication_logs AS l SET status = 'SENT', sent_at = now(), updated_at = now(), lease_until = NULL
FROM unnest($1::bigint[]) AS u(id) WHERE l.id = u.id
"""


@dataclass(frozen=True)
class RawConfig:
    amqp_url: str
    database_url: str
    count: int
    first_id: int = 1
    shards: int = 4
    delivery_limit: int = 10
    prefetch: int = 500
    window: int = 1000
    batch: int = 500
    batch_wait_s: float = 0.02


async def from_parent() -> str:
    """The next line the parent writes on stdin ("go", "exit"); empty when it closed the pipe."""
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def emit(event: str, **data: Any) -> None:
    sys.stdout.write(orjson.dumps({"event": event, **data}).decode() + "\n")
    sys.stdout.flush()


async def declare_raw(channel: AbstractChannel, shards: int, delivery_limit: int) -> None:
    """The baseline's own exchanges and quorum shard queues, with the real shards' arguments."""
    arguments = Topology(shards=shards, delivery_limit=delivery_limit).shard_arguments()
    for exchange_name in (RAW_DISPATCH, RAW_RESPONSES):
        exchange = await channel.declare_exchange(exchange_name, CONSISTENT_HASH, durable=True)
        for n in range(shards):
            queue = await channel.declare_queue(
                shard_queue(exchange_name, n), durable=True, arguments=arguments
            )
            await queue.bind(exchange, routing_key="1")


def recipient(i: int) -> tuple[str, str]:
    channel = ("sms", "email", "whatsapp")[i % 3]
    if channel == "email":
        return channel, f"user{i}@example.com"
    return channel, (f"+1646{i:07d}" if channel == "sms" else f"+4477{i:08d}")


class Series:
    """(wall time, cumulative count), at most one point per ``step`` items, for the sustained rate."""

    def __init__(self, step: int = 100) -> None:
        self.points: list[tuple[float, float]] = []
        self.count = 0
        self.step = step
        self.first: float | None = None

    def add(self, n: int = 1) -> None:
        now = time.time()
        self.first = self.first or now
        self.count += n
        if not self.points or self.count - self.points[-1][1] >= self.step:
            self.points.append((now, self.count))

    def summary(self, total: int) -> dict[str, Any]:
        last = time.time()
        if self.points and self.points[-1][1] < self.count:
            self.points.append((last, self.count))
        elapsed = last - (self.first or last)
        return {
            "count": self.count,
            "first": self.first,
            "last": last,
            "elapsed_s": elapsed,
            "rate_per_s": self.count / elapsed if elapsed > 0 else None,
            "sustained_per_s": sustained_rate(self.points, total),
        }


async def publisher(config: RawConfig) -> None:
    connection = await aio_pika.connect(
        config.amqp_url, client_properties={"connection_name": "bench-publisher"}
    )
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await channel.get_exchange(RAW_DISPATCH)
    emit("ready")
    await from_parent()  # "go"
    series, cursor, errors = Series(), iter(range(config.first_id, config.first_id + config.count)), 0

    async def worker() -> None:
        nonlocal errors
        for log_id in cursor:
            channel_name, to = recipient(log_id)
            body = orjson.dumps(
                {
                    "log_id": log_id,
                    "attempt": 1,
                    "channel": channel_name,
                    "recipient": to,
                    "payload": {"body": f"Benchmark message {log_id}: your order has shipped."},
                    "published_at": time.time(),
                }
            )
            message = to_message(
                wire.Envelope(body, message_id=f"{log_id}-1", type=wire.MESSAGE_TYPE_DISPATCH, routing_key=to)
            )
            confirmation = await exchange.publish(message, routing_key=to, mandatory=True)
            if not isinstance(confirmation, Basic.Ack):
                errors += 1
            series.add()

    await asyncio.gather(*(worker() for _ in range(config.window)))
    emit("done", **series.summary(config.count), errors=errors)
    await from_parent()  # stay until the parent's last CPU sample
    await connection.close()


async def relay(config: RawConfig) -> None:
    connection = await aio_pika.connect(config.amqp_url, client_properties={"connection_name": "bench-relay"})
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    await channel.set_qos(prefetch_count=config.prefetch)
    out = await channel.get_exchange(RAW_RESPONSES)
    series, done = Series(), asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        outgoing = to_message(
            wire.Envelope(
                message.body,
                message_id=message.message_id or "",
                type=wire.MESSAGE_TYPE_OUTCOME,
                routing_key=message.routing_key or "",
            )
        )
        await out.publish(outgoing, routing_key=message.routing_key or "", mandatory=True)
        await message.ack()
        series.add()
        if series.count >= config.count:
            done.set()

    for n in range(config.shards):
        queue = await channel.get_queue(shard_queue(RAW_DISPATCH, n), ensure=False)
        await queue.consume(on_message)
    emit("ready")
    await done.wait()
    emit("done", **series.summary(config.count))
    await from_parent()
    await connection.close()


async def sink(config: RawConfig) -> None:
    pool = await asyncpg.create_pool(config.database_url, min_size=1, max_size=2)
    connection = await aio_pika.connect(config.amqp_url, client_properties={"connection_name": "bench-sink"})
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=max(config.prefetch, config.batch))
    inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    for n in range(config.shards):
        queue = await channel.get_queue(shard_queue(RAW_RESPONSES, n), ensure=False)
        await queue.consume(inbox.put)
    emit("ready")
    series, batches, reported = Series(), 0, time.monotonic()
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    while series.count < config.count:
        batch = [await inbox.get()]
        deadline = loop.time() + config.batch_wait_s
        while len(batch) < config.batch:
            if inbox.empty():
                try:
                    batch.append(await asyncio.wait_for(inbox.get(), max(deadline - loop.time(), 0)))
                except TimeoutError:
                    break
            else:
                batch.append(inbox.get_nowait())
        bodies = [orjson.loads(m.body) for m in batch]
        await pool.execute(UPDATE_SQL, [b["log_id"] for b in bodies])
        await max(batch, key=lambda m: m.delivery_tag or 0).ack(multiple=True)
        now = time.time()
        latencies.extend(now - b["published_at"] for b in bodies)
        series.add(len(batch))
        batches += 1
        if time.monotonic() - reported > 0.5:
            emit("progress", count=series.count)
            reported = time.monotonic()
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    emit(
        "done",
        **series.summary(config.count),
        batches=batches,
        latency_ms={
            "p50": cuts[49] * 1000,
            "p95": cuts[94] * 1000,
            "p99": cuts[98] * 1000,
            "max": max(latencies) * 1000,
        },
    )
    await from_parent()
    await connection.close()
    await pool.close()


ROLES = {"publisher": publisher, "relay": relay, "sink": sink}


def main() -> None:
    role, config = sys.argv[1], RawConfig(**orjson.loads(os.environ[CONFIG_VARIABLE]))
    import uvloop

    uvloop.run(ROLES[role](config))


def config_json(config: RawConfig) -> str:
    return orjson.dumps(asdict(config)).decode()


if __name__ == "__main__":
    main()
