"""The transport seam: what the consumer and the publishers need from a broker, and nothing more.

Two implementations: :mod:`shared.bus.amqp` (RabbitMQ through aio-pika) and :mod:`shared.bus.memory`
(an in-memory fake for unit tests). Every settle raises :class:`ChannelGone` when the channel the
delivery came on is closed; a publish reports, per envelope, ``None`` (confirmed) or the
:class:`PublishError` that says why not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.bus.topology import Topology
from shared.bus.wire import Envelope, Received
from shared.core.errors import PublishError


class Settler(Protocol):
    """Acknowledges one delivery on the channel it came on; raises ChannelGone if that is closed."""

    async def ack(self, multiple: bool) -> None: ...
    async def nack(self, requeue: bool) -> None: ...
    async def reject(self, requeue: bool) -> None: ...


@dataclass(eq=False, slots=True)
class Delivery:
    """One received message, where it came from, and how to settle it."""

    message: Received
    queue: str
    tag: int
    # The channel it came on (identity only): a multiple ack covers lower tags of that channel only.
    channel: object
    settler: Settler
    settled: bool = field(default=False)
    consumer: str = ""  # the consumer tag it was delivered to
    ack_due: bool = field(default=False)  # its handler is done with it: acked on the next flush


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """What a passive declare says about a queue: messages ready (not handed out), and its consumers."""

    ready: int
    consumers: int


OnDelivery = Callable[[Delivery], Awaitable[None]]


class Publisher(Protocol):
    async def publish(
        self, exchange: str, envelopes: Sequence[Envelope], timeout: float = 30.0
    ) -> list[PublishError | None]:
        """Publish with confirms; per envelope ``None`` (confirmed) or why not."""
        ...


class Channel(Publisher, Protocol):
    """A confirming channel: every publish waits for the broker's confirm, unroutable is an error."""

    @property
    def is_closed(self) -> bool: ...

    async def declare(self, topology: Topology) -> None: ...
    async def set_qos(self, prefetch: int) -> None: ...
    async def declare_private_queue(self, name: str, exchange: str) -> None:
        """An exclusive, auto-deleted queue bound to ``exchange`` (gone with the connection)."""
        ...

    async def consume(self, queue: str, on_delivery: OnDelivery) -> str:
        """Start consuming ``queue`` with manual acks and the prefetch set last (per consumer);
        returns the consumer tag."""
        ...

    async def cancel(self, tag: str) -> None: ...

    async def queue_depth(self, queue: str) -> QueueDepth:
        """Ready messages and consumers of ``queue`` now (a missing queue closes the channel: ChannelGone)."""
        ...

    async def requeue_through(self, tag: int) -> None:
        """Give back every unsettled delivery of this channel up to ``tag``, in order (a multiple nack
        with requeue); raises ChannelGone if the channel is closed."""
        ...

    async def close(self) -> None: ...


class Broker(Protocol):
    async def channel(self) -> Channel: ...
    async def queue_has_consumer(self, queue: str) -> bool: ...
