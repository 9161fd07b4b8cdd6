"""RabbitMQ at the edge: connections, idempotent declaration, confirmed publishing."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq.exceptions import DeliveryError
from pamqp.commands import Basic

from shared.errors import PublishError
from shared.topology import CONTENT_TYPE, Topology


def connection_name(process: str) -> str:
    """``<process>-<host>-<pid>``: what the management UI shows for a connection."""
    return f"{process}-{socket.gethostname()}-{os.getpid()}"


def named_url(url: str, process: str) -> str:
    """``url`` with ``?name=<process>-<host>-<pid>``; aio-pika ignores ``client_properties`` when it is
    given a URL (mosquito/aio-pika#551), but it sends the URL's ``name`` as the connection name."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "name"]
    query.append(("name", connection_name(process)))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


async def connect(url: str, name: str) -> AbstractRobustConnection:
    """A connection that reconnects by itself (and restores its channels and consumers), named after
    its process."""
    return await aio_pika.connect_robust(named_url(url, name), timeout=10)


async def confirming_channel(connection: AbstractRobustConnection) -> AbstractChannel:
    """A channel on which every publish is confirmed and an unroutable message is an error."""
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


async def declare(channel: AbstractChannel, topology: Topology) -> None:
    """Declare every exchange, queue and binding; safe to run any number of times."""
    exchanges: dict[str, AbstractExchange] = {}
    for spec in topology.exchanges():
        exchanges[spec.name] = await channel.declare_exchange(spec.name, spec.type, durable=True)
    for queue_spec in topology.queues():
        queue = await channel.declare_queue(queue_spec.name, durable=True, arguments=queue_spec.arguments)
        if queue_spec.bound_to:
            await queue.bind(exchanges[queue_spec.bound_to], routing_key=queue_spec.binding_key)


async def queue_has_consumer(connection: AbstractRobustConnection, queue: str) -> bool:
    """Whether ``queue`` has a consumer now (a passive declare, on a short-lived channel)."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return bool(declared.declaration_result.consumer_count)
    finally:
        await channel.close()


def make_message(
    body: bytes,
    *,
    message_id: str,
    message_type: str,
    headers: dict[str, Any] | None = None,
    correlation_id: str | None = None,
) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=correlation_id,
        type=message_type,
        headers=headers or {},
    )


async def publish_confirmed(
    exchange: AbstractExchange, items: Sequence[tuple[aio_pika.Message, str]], timeout: float = 30.0
) -> list[BaseException | None]:
    """Publish every (message, routing key) with mandatory flag and wait for all confirms at once.

    Returns, per item, ``None`` when the broker confirmed it, or the error (nack, return of an
    unroutable message, lost channel, timeout). Publishes are pipelined: one window, not a round
    trip per message.
    """

    async def one(message: aio_pika.Message, key: str) -> None:
        try:
            confirmation = await exchange.publish(message, routing_key=key, mandatory=True, timeout=None)
        except DeliveryError as exc:  # a nack, or a return of an unroutable message
            raise PublishError(f"broker refused message {message.message_id}: {exc!r}") from exc
        if not isinstance(confirmation, Basic.Ack):
            raise PublishError(f"broker did not confirm message {message.message_id}: {confirmation!r}")

    if not items:
        return []
    if len(items) == 1:  # the sender's case: no task, no waiter, just the deadline
        try:
            async with asyncio.timeout(timeout):
                await one(*items[0])
        except TimeoutError:
            return [PublishError(f"no confirm within {timeout}s")]
        except Exception as exc:
            return [exc]
        return [None]
    # One deadline for the whole window (a per-message timeout costs a wait_for task each).
    tasks = [asyncio.ensure_future(one(m, k)) for m, k in items]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    results: list[BaseException | None] = []
    for task in tasks:
        if task in pending:
            results.append(PublishError(f"no confirm within {timeout}s"))
        elif task.cancelled():
            results.append(PublishError("publish cancelled"))
        else:
            results.append(task.exception())
    return results
