"""RabbitMQ at the edge (aio-pika): connections, idempotent declaration, confirmed publishing, and the
:class:`AmqpBroker` / :class:`AmqpChannel` implementation of the transport seam."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
import aiormq.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelInvalidStateError
from aiormq.exceptions import DeliveryError
from pamqp.commands import Basic

from shared.bus.topology import Topology
from shared.bus.transport import Channel, Delivery, OnDelivery, QueueDepth
from shared.bus.wire import Envelope, Received
from shared.core.errors import ChannelGone, PublishError, PublishRefused, PublishUnconfirmed
from shared.runtime.identity import connection_name

# The connection a service holds (it reconnects by itself); other modules name the type through here.
RobustConnection = AbstractRobustConnection
# A plain channel of such a connection (setup tooling declares and deletes on one).
PlainChannel = AbstractChannel

# What a settle on a channel that went away raises (aio-pika checks first, aiormq on the wire).
CHANNEL_LOST = (ChannelInvalidStateError, aiormq.exceptions.AMQPError, ConnectionError)
# What talking to the broker can raise, for a command-line tool's last-resort error line.
BROKER_ERRORS: tuple[type[Exception], ...] = CHANNEL_LOST


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


async def connect_plain(url: str, name: str) -> AbstractConnection:
    """A named connection that does not reconnect: a reconnect in the middle of a DLQ scan would
    resume it with other delivery tags."""
    return await aio_pika.connect(named_url(url, name), timeout=10)


async def confirming_channel(connection: AbstractConnection) -> AbstractChannel:
    """A channel on which every publish is confirmed and an unroutable message is an error."""
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


async def declare(channel: AbstractChannel, topology: Topology, *, passive: bool = False) -> None:
    """Declare every exchange, queue and binding; safe to run any number of times.

    ``passive``: only check that each exchange and queue exists (what the services do: their users
    have no configure rights on shared entities; the admin's set-up declares them). A missing one
    closes the channel with NOT_FOUND, which the caller reports and retries."""
    exchanges: dict[str, AbstractExchange] = {}
    for spec in topology.exchanges():
        exchanges[spec.name] = await channel.declare_exchange(
            spec.name, spec.type, durable=True, passive=passive
        )
    for queue_spec in topology.queues():
        queue = await channel.declare_queue(
            queue_spec.name, durable=True, arguments=queue_spec.arguments, passive=passive
        )
        if queue_spec.bound_to and not passive:
            await queue.bind(exchanges[queue_spec.bound_to], routing_key=queue_spec.binding_key)


async def queue_has_consumer(connection: AbstractConnection, queue: str) -> bool:
    """Whether ``queue`` has a consumer now (a passive declare, on a short-lived channel)."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return bool(declared.declaration_result.consumer_count)
    finally:
        await channel.close()


def to_message(envelope: Envelope) -> aio_pika.Message:
    return aio_pika.Message(
        envelope.body,
        content_type=envelope.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=envelope.message_id,
        correlation_id=envelope.correlation_id,
        type=envelope.type,
        headers=dict(envelope.headers),
        timestamp=envelope.timestamp,
    )


def received(message: AbstractIncomingMessage) -> Received:
    return Received(
        body=message.body,
        message_id=message.message_id,
        type=message.type,
        routing_key=message.routing_key or "",
        headers=dict(message.headers or {}),
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        redelivered=bool(message.redelivered),
        timestamp=message.timestamp if isinstance(message.timestamp, datetime) else None,
    )


async def publish_confirmed(
    exchange: AbstractExchange, envelopes: Sequence[Envelope], timeout: float = 30.0
) -> list[PublishError | None]:
    """Publish every envelope with the mandatory flag and wait for all confirms at once.

    Returns, per envelope, ``None`` when the broker confirmed it, :class:`PublishRefused` when the
    broker answered no (nack, return of an unroutable message), or :class:`PublishUnconfirmed` when
    no answer came (lost channel, timeout). Publishes are pipelined: one window, not a round trip each.
    """

    async def one(envelope: Envelope) -> None:
        message = to_message(envelope)
        try:
            confirmation = await exchange.publish(
                message, routing_key=envelope.routing_key, mandatory=True, timeout=None
            )
        except DeliveryError as exc:  # a nack, or a return of an unroutable message
            raise PublishRefused(f"broker refused message {envelope.message_id}: {exc!r}") from exc
        if not isinstance(confirmation, Basic.Ack):
            raise PublishRefused(f"broker did not confirm message {envelope.message_id}: {confirmation!r}")

    def unconfirmed(exc: BaseException) -> PublishError:
        if isinstance(exc, PublishError):
            return exc
        error = PublishUnconfirmed(f"no confirm: {exc!r}")
        error.__cause__ = exc
        return error

    if not envelopes:
        return []
    if len(envelopes) == 1:  # the sender's case: no task, no waiter, just the deadline
        try:
            async with asyncio.timeout(timeout):
                await one(envelopes[0])
        except TimeoutError:
            return [PublishUnconfirmed(f"no confirm within {timeout}s")]
        except Exception as exc:
            return [unconfirmed(exc)]
        return [None]
    # One deadline for the whole window (a per-message timeout costs a wait_for task each).
    tasks = [asyncio.ensure_future(one(e)) for e in envelopes]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    results: list[PublishError | None] = []
    for task in tasks:
        if task in pending:
            results.append(PublishUnconfirmed(f"no confirm within {timeout}s"))
        elif task.cancelled():
            results.append(PublishUnconfirmed("publish cancelled"))
        else:
            failure = task.exception()
            results.append(None if failure is None else unconfirmed(failure))
    return results


class AmqpSettler:
    def __init__(self, message: AbstractIncomingMessage) -> None:
        self._message = message

    async def ack(self, multiple: bool) -> None:
        try:
            await self._message.ack(multiple=multiple)
        except CHANNEL_LOST as exc:
            raise ChannelGone(f"ack of {self._message.message_id}: {exc!r}") from exc

    async def nack(self, requeue: bool) -> None:
        try:
            await self._message.nack(requeue=requeue)
        except CHANNEL_LOST as exc:
            raise ChannelGone(f"nack of {self._message.message_id}: {exc!r}") from exc

    async def reject(self, requeue: bool) -> None:
        try:
            await self._message.reject(requeue=requeue)
        except CHANNEL_LOST as exc:
            raise ChannelGone(f"reject of {self._message.message_id}: {exc!r}") from exc


def _channel_of(message: AbstractIncomingMessage) -> object:
    try:
        return message.channel
    except ChannelInvalidStateError:  # closed already: a key of its own, its settles fail anyway
        return message


class AmqpChannel:
    """A confirming aio-pika (robust) channel behind the :class:`~shared.bus.transport.Channel` seam."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._exchanges: dict[str, AbstractExchange] = {}
        self._consuming: dict[str, AbstractQueue] = {}

    @property
    def is_closed(self) -> bool:
        return self._channel.is_closed

    async def declare(self, topology: Topology) -> None:
        """A service's check that the topology exists (passive: it may not create shared entities)."""
        await declare(self._channel, topology, passive=True)

    async def set_qos(self, prefetch: int) -> None:
        await self._channel.set_qos(prefetch_count=prefetch)

    async def declare_private_queue(self, name: str, exchange: str) -> None:
        queue = await self._channel.declare_queue(name, exclusive=True, auto_delete=True)
        await queue.bind(exchange)

    async def consume(self, queue: str, on_delivery: OnDelivery) -> str:
        declared = await self._channel.get_queue(queue, ensure=False)

        async def deliver(message: AbstractIncomingMessage) -> None:
            await on_delivery(
                Delivery(
                    received(message),
                    queue,
                    message.delivery_tag or 0,
                    _channel_of(message),
                    AmqpSettler(message),
                    consumer=message.consumer_tag or "",
                )
            )

        tag = await declared.consume(deliver)
        self._consuming[tag] = declared
        return tag

    async def cancel(self, tag: str) -> None:
        queue = self._consuming.pop(tag, None)
        if queue is not None:
            try:
                await queue.cancel(tag)
            except CHANNEL_LOST as exc:
                raise ChannelGone(f"cancel of {tag}: {exc!r}") from exc

    async def queue_depth(self, queue: str) -> QueueDepth:
        try:
            raw = await self._channel.get_underlay_channel()
            declared = await raw.queue_declare(queue, passive=True)
        except CHANNEL_LOST as exc:
            raise ChannelGone(f"passive declare of {queue}: {exc!r}") from exc
        return QueueDepth(ready=declared.message_count or 0, consumers=declared.consumer_count or 0)

    async def requeue_through(self, tag: int) -> None:
        try:
            raw = await self._channel.get_underlay_channel()
            await raw.basic_nack(tag, multiple=True, requeue=True)
        except CHANNEL_LOST as exc:
            raise ChannelGone(f"nack through {tag}: {exc!r}") from exc

    async def publish(
        self, exchange: str, envelopes: Sequence[Envelope], timeout: float = 30.0
    ) -> list[PublishError | None]:
        target = self._exchanges.get(exchange)
        if target is None:
            target = self._exchanges[exchange] = await self._channel.get_exchange(exchange, ensure=False)
        return await publish_confirmed(target, envelopes, timeout)

    async def close(self) -> None:
        await self._channel.close()


class AmqpBroker:
    """Channels on one connection: a robust one for services (it reconnects, and restores channels and
    consumers), a plain one where a reconnect must not resume silently (reading the DLQ)."""

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection

    async def channel(self) -> Channel:
        return AmqpChannel(await confirming_channel(self.connection))

    async def queue_has_consumer(self, queue: str) -> bool:
        return await queue_has_consumer(self.connection, queue)

    async def close(self) -> None:
        await self.connection.close()
