"""An in-memory broker behind the transport seam, for unit tests (kombu's memory transport, dramatiq's
StubBroker): queues, channels with a prefetch per consumer and delivery tags, single-active-consumer
(other queues hand out round robin), publisher confirms that can be scripted to fail, redelivery with
``x-delivery-count``, delivery limits, dead-lettering, passive declares (queue depth), and a restart
that closes every channel (a robust channel then comes back with its consumers, as aio-pika's does).
"""

from __future__ import annotations

import asyncio
import itertools
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from shared.bus.topology import CONSISTENT_HASH, Topology
from shared.bus.transport import Channel, Delivery, OnDelivery, QueueDepth
from shared.bus.wire import Envelope, Received
from shared.core.errors import ChannelGone, PublishError, PublishRefused, PublishUnconfirmed


class Fault(Enum):
    """A scripted answer to one publish."""

    REFUSE = "refuse"  # the broker nacks: the message is not taken
    NO_CONFIRM = "no_confirm"  # no answer, and the message is not taken
    TAKEN_NO_CONFIRM = "taken_no_confirm"  # no answer, but the broker did take the message


@dataclass(slots=True)
class Stored:
    envelope: Envelope
    redelivered: bool = False
    delivery_count: int = 0


@dataclass(slots=True)
class MemoryQueue:
    name: str
    delivery_limit: int | None = None
    dead_letter_exchange: str | None = None
    single_active: bool = True  # topology queues without x-single-active-consumer hand out round robin
    ready: deque[Stored] = field(default_factory=deque)
    # Given back (nack with requeue, a closed channel): served before ``ready``, in the order they came
    # back, as a quorum queue does.
    returned: deque[Stored] = field(default_factory=deque)
    consumers: list[tuple[MemoryChannel, str, OnDelivery]] = field(default_factory=list)
    dead_lettered: list[Stored] = field(default_factory=list)


class _Generation:
    """The identity of one life of a channel: deliveries of an earlier life cannot be settled."""


class MemorySettler:
    def __init__(self, channel: MemoryChannel, generation: _Generation, tag: int) -> None:
        self.channel = channel
        self.generation = generation
        self.tag = tag

    async def ack(self, multiple: bool) -> None:
        self.channel.settle(self.generation, self.tag, "ack", multiple)

    async def nack(self, requeue: bool) -> None:
        self.channel.settle(self.generation, self.tag, "requeue" if requeue else "reject", False)

    async def reject(self, requeue: bool) -> None:
        self.channel.settle(self.generation, self.tag, "requeue" if requeue else "reject", False)


class MemoryChannel:
    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.prefetch = 0
        self.generation = _Generation()
        self.closed = False
        self._tags = itertools.count(1)
        self.unacked: dict[int, tuple[MemoryQueue, Stored]] = {}
        self.owners: dict[int, str] = {}  # delivery tag -> consumer tag
        self.consuming: dict[str, MemoryQueue] = {}  # consumer tag -> queue
        self.callbacks: dict[str, OnDelivery] = {}
        self.consumer_prefetch: dict[str, int] = {}  # the prefetch set when each consumer started
        self.acks: list[tuple[int, bool]] = []  # (tag, multiple) as received, for tests

    @property
    def is_closed(self) -> bool:
        return self.closed

    def _check_open(self) -> None:
        if self.closed:
            raise ChannelGone("channel is closed")

    async def declare(self, topology: Topology) -> None:
        self._check_open()
        self.broker.declare(topology)

    async def set_qos(self, prefetch: int) -> None:
        self._check_open()
        self.prefetch = prefetch

    async def declare_private_queue(self, name: str, exchange: str) -> None:
        self._check_open()
        self.broker.queue(name)
        self.broker.bind(exchange, name)

    async def consume(self, queue: str, on_delivery: OnDelivery) -> str:
        self._check_open()
        target = self.broker.queues.get(queue)
        if target is None:
            raise ChannelGone(f"NOT_FOUND - no queue {queue!r}")  # the broker closes the channel
        tag = f"ctag-{next(self.broker.consumer_tags)}"
        self.consuming[tag] = target
        self.callbacks[tag] = on_delivery
        self.consumer_prefetch[tag] = self.prefetch
        target.consumers.append((self, tag, on_delivery))
        self.broker.pump()
        return tag

    async def cancel(self, tag: str) -> None:
        self._check_open()
        queue = self.consuming.pop(tag, None)
        self.callbacks.pop(tag, None)
        if queue is not None:
            queue.consumers = [c for c in queue.consumers if c[1] != tag]
        self.broker.pump()

    async def queue_depth(self, queue: str) -> QueueDepth:
        self._check_open()
        target = self.broker.queues.get(queue)
        if target is None:
            self.lose()  # the broker closes the channel on NOT_FOUND
            raise ChannelGone(f"NOT_FOUND - no queue {queue!r}")
        return QueueDepth(ready=len(target.returned) + len(target.ready), consumers=len(target.consumers))

    async def requeue_through(self, tag: int) -> None:
        self.settle(self.generation, tag, "requeue", True)

    async def publish(
        self, exchange: str, envelopes: Sequence[Envelope], timeout: float = 30.0
    ) -> list[PublishError | None]:
        await asyncio.sleep(0)  # a confirm is a round trip
        return [self.broker.publish_one(self, exchange, envelope) for envelope in envelopes]

    async def close(self) -> None:
        self.lose()
        self.consuming.clear()
        self.callbacks.clear()

    def lose(self) -> None:
        """The channel closes: its consumers go, and what it had not acked is handed out again."""
        self.closed = True
        for queue in self.consuming.values():
            queue.consumers = [c for c in queue.consumers if c[0] is not self]
        for queue, stored in self.unacked.values():
            queue.returned.append(replace(stored, redelivered=True))
        self.unacked.clear()
        self.owners.clear()

    def restore(self) -> None:
        """What a robust channel does after a reconnect: a new life, the same consumers and prefetch."""
        self.closed = False
        self.generation = _Generation()
        self._tags = itertools.count(1)
        for tag, queue in self.consuming.items():
            queue.consumers.append((self, tag, self.callbacks[tag]))

    def settle(self, generation: _Generation, tag: int, action: str, multiple: bool) -> None:
        if self.closed or generation is not self.generation:
            raise ChannelGone(f"{action} of delivery {tag} on a channel that closed")
        if tag not in self.unacked:
            # RabbitMQ closes the channel on an unknown delivery tag (PRECONDITION_FAILED)
            self.lose()
            raise ChannelGone(f"PRECONDITION_FAILED - unknown delivery tag {tag}")
        if action == "ack":
            self.acks.append((tag, multiple))
        tags = sorted(t for t in self.unacked if t <= tag) if multiple else [tag]
        for settled in tags:
            queue, stored = self.unacked.pop(settled)
            self.owners.pop(settled, None)
            if action == "requeue":
                queue.returned.append(replace(stored, redelivered=True))
            elif action == "reject":
                self.broker.dead_letter(queue, stored)
        self.broker.pump()

    def room(self, consumer: str) -> bool:
        """Whether ``consumer`` may take one more (RabbitMQ's basic.qos applies per consumer)."""
        prefetch = self.consumer_prefetch.get(consumer, self.prefetch)
        held = sum(1 for owner in self.owners.values() if owner == consumer)
        return not self.closed and (prefetch == 0 or held < prefetch)

    def deliver(self, queue: MemoryQueue, stored: Stored, consumer: str, on_delivery: OnDelivery) -> None:
        tag = next(self._tags)
        self.unacked[tag] = (queue, stored)
        self.owners[tag] = consumer
        envelope = stored.envelope
        headers = dict(envelope.headers)
        if stored.delivery_count > 1:  # as a quorum queue marks a message it hands out again
            headers["x-delivery-count"] = stored.delivery_count - 1
        message = Received(
            body=envelope.body,
            message_id=envelope.message_id,
            type=envelope.type,
            routing_key=envelope.routing_key,
            headers=headers,
            content_type=envelope.content_type,
            correlation_id=envelope.correlation_id,
            redelivered=stored.redelivered,
            timestamp=envelope.timestamp,
        )
        delivery = Delivery(
            message,
            queue.name,
            tag,
            self.generation,
            MemorySettler(self, self.generation, tag),
            consumer=consumer,
        )

        async def run() -> None:
            await on_delivery(delivery)

        task = asyncio.get_running_loop().create_task(run())
        self.broker.tasks.add(task)
        task.add_done_callback(self.broker.tasks.discard)


class MemoryBroker:
    """Exchanges, queues and channels in one process; :meth:`fail_next` scripts publish confirms."""

    def __init__(self) -> None:
        self.queues: dict[str, MemoryQueue] = {}
        self.exchanges: dict[str, tuple[str, list[str]]] = {}  # name -> (type, bound queues)
        self.channels: list[MemoryChannel] = []
        self.faults: dict[str, deque[Fault]] = {}  # exchange -> answers to its next publishes
        self.consumer_tags = itertools.count(1)
        self.tasks: set[asyncio.Task[None]] = set()

    # -- the seam -------------------------------------------------------------------------------
    async def channel(self) -> Channel:
        channel = MemoryChannel(self)
        self.channels.append(channel)
        return channel

    async def queue_has_consumer(self, queue: str) -> bool:
        target = self.queues.get(queue)
        return bool(target and target.consumers)

    def fail_next(self, exchange: str, *faults: Fault) -> None:
        """Answer the next publishes to ``exchange`` with ``faults``, one each, in order."""
        self.faults.setdefault(exchange, deque()).extend(faults)

    # -- topology -------------------------------------------------------------------------------
    def declare(self, topology: Topology) -> None:
        shard_policy = topology.shard_policy_definition()
        for spec in topology.exchanges():
            self.exchange(spec.name, spec.type)
        for queue_spec in topology.queues():
            queue = self.queue(queue_spec.name)
            queue.single_active = bool(queue_spec.arguments.get("x-single-active-consumer"))
            if queue.single_active:
                queue.delivery_limit = int(shard_policy["delivery-limit"])
                queue.dead_letter_exchange = str(shard_policy["dead-letter-exchange"])
            if queue_spec.bound_to:
                self.bind(queue_spec.bound_to, queue_spec.name)

    def exchange(self, name: str, kind: str = "fanout") -> None:
        self.exchanges.setdefault(name, (kind, []))

    def queue(self, name: str) -> MemoryQueue:
        return self.queues.setdefault(name, MemoryQueue(name))

    def bind(self, exchange: str, queue: str) -> None:
        self.exchange(exchange)
        bound = self.exchanges[exchange][1]
        if queue not in bound:
            bound.append(queue)

    def route(self, exchange: str, routing_key: str) -> list[MemoryQueue]:
        if exchange not in self.exchanges:
            return []
        kind, bound = self.exchanges[exchange]
        if not bound:
            return []
        if kind == CONSISTENT_HASH:
            return [self.queues[bound[zlib.crc32(routing_key.encode()) % len(bound)]]]
        return [self.queues[name] for name in bound]

    # -- messages -------------------------------------------------------------------------------
    def publish_one(self, channel: MemoryChannel, exchange: str, envelope: Envelope) -> PublishError | None:
        if channel.closed:
            return PublishUnconfirmed("channel is closed")
        scripted = self.faults.get(exchange)
        fault = scripted.popleft() if scripted else None
        if fault is Fault.REFUSE:
            return PublishRefused(f"broker refused message {envelope.message_id}: nack")
        if fault is Fault.NO_CONFIRM:
            return PublishUnconfirmed(f"no confirm for {envelope.message_id}")
        targets = self.route(exchange, envelope.routing_key)
        if not targets:
            return PublishRefused(f"message {envelope.message_id} is unroutable (returned)")
        for queue in targets:
            queue.ready.append(Stored(envelope))
        self.pump()
        if fault is Fault.TAKEN_NO_CONFIRM:
            return PublishUnconfirmed(f"no confirm for {envelope.message_id}")
        return None

    def dead_letter(self, queue: MemoryQueue, stored: Stored) -> None:
        queue.dead_lettered.append(stored)
        if queue.dead_letter_exchange:
            for target in self.route(queue.dead_letter_exchange, stored.envelope.routing_key):
                target.ready.append(Stored(stored.envelope))

    def pump(self) -> None:
        """Hand ready messages to consumers with room (single active consumer: the first one; else
        round robin over those with room)."""
        for queue in self.queues.values():
            while (queue.returned or queue.ready) and queue.consumers:
                candidates = queue.consumers[:1] if queue.single_active else queue.consumers
                chosen = next((c for c in candidates if c[0].room(c[1])), None)
                if chosen is None:
                    break
                if not queue.single_active:  # the next message tries the others first
                    queue.consumers.remove(chosen)
                    queue.consumers.append(chosen)
                channel, consumer, on_delivery = chosen
                stored = (queue.returned or queue.ready).popleft()
                stored.delivery_count += 1
                if queue.delivery_limit is not None and stored.delivery_count > queue.delivery_limit:
                    self.dead_letter(queue, stored)
                    continue
                channel.deliver(queue, stored, consumer, on_delivery)

    def restart(self) -> None:
        """Every channel closes (what was unacked is handed out again), then comes back as it was."""
        live = [c for c in self.channels if not c.closed]
        for channel in live:
            channel.lose()
        for channel in live:
            channel.restore()
        self.pump()

    # -- for tests ------------------------------------------------------------------------------
    def ready(self, queue: str) -> list[Envelope]:
        target = self.queues[queue]
        return [s.envelope for s in (*target.returned, *target.ready)]

    def unacked(self, queue: str) -> int:
        return sum(1 for c in self.channels for q, _ in c.unacked.values() if q.name == queue)

    async def settle_down(self) -> None:
        """Let every delivery already handed out run to completion; a callback that raised is re-raised
        (the consume loop must settle every failure itself)."""
        while self.tasks:
            results = await asyncio.gather(*list(self.tasks), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
