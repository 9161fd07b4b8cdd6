"""The consume loop, written once: channel setup, QoS, shard subscription (and standby), poison
messages, per-message and batched handling, and the ack rules.

Ack rules (each has a unit test against :mod:`shared.bus.memory`):

- a message is acked only after its handler is done with it (for the sender: after the outcome's
  publish was confirmed); ``Settle.REQUEUE`` nacks it back to the queue; ``Settle.LEAVE`` leaves it
  unacked, and the broker hands it out again when the channel closes (what a stopping process does);
- a batch is acked with one ``multiple`` ack per channel, on the batch's highest delivery tag: every
  lower tag of that channel is in the batch or was settled before (the inbox keeps delivery order);
- messages handled one by one are acked together too: the acks due within one event-loop turn go as
  one ``multiple`` ack on the highest tag of the settled prefix of each channel's deliveries, and the
  rest (done while an earlier message is still in its handler) one by one, so a slow message never
  holds back the acks, and with them the prefetch window, of those behind it;
- a batch the database refuses (:class:`BatchRefused`) is applied one message at a time, and only the
  messages refused on their own (:class:`MessageRefused`) are dead-lettered;
- an unusable message (a :class:`MessageError`) is copied to the dead-letter exchange with its reason
  and acked; if that copy is not confirmed it is rejected, and the queue's dead-letter policy moves it.
  A consumer whose user may not write to the dead-letter exchange (the sender: only the responder and
  the dlq tool may) rejects it straight away (``dead_letter_poison=False``): the queue's dead-letter
  policy moves it to the DLQ with RabbitMQ's ``x-death`` header, and the reason is in the log;
- a handler that fails unexpectedly gets its messages requeued (the quorum queue's delivery limit
  dead-letters a message that keeps failing), never a stalled queue nor a crashed process;
- a settle on a channel that has closed (a broker restart) is no error: the broker redelivers what
  was not acked, and the handlers are idempotent.

Each :class:`Consumer` owns one channel with its own prefetch, so a process runs one per lane.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Generic, Protocol, TypeVar

from prometheus_client import Counter

from shared.bus import wire
from shared.bus.topology import DEAD_LETTER_EXCHANGE, Topology, shard_queue
from shared.bus.transport import Broker, Channel, Delivery
from shared.core.errors import BatchRefused, ChannelGone, MessageError
from shared.runtime import metrics
from shared.runtime.logs import get_logger
from shared.runtime.resilience import retry_until_stopped, sleep_or_stop
from shared.runtime.settings import ShardConsumer

log = get_logger("bus.consumer")
CANCEL_TIMEOUT_S = 5.0  # a consumer's basic.cancel on the way out

T = TypeVar("T")
R = TypeVar("R")
T_contra = TypeVar("T_contra", contravariant=True)


@functools.lru_cache(maxsize=64)
def _messages_in(stage: str) -> Counter:
    return metrics.MESSAGES_IN.labels(stage=stage)  # labels() takes a lock: once per stage, not per message


class Settle(Enum):
    """What the consumer does with a message once its handler is done."""

    ACK = "ack"
    REQUEUE = "requeue"  # nack with requeue: the broker hands it out again now
    LEAVE = "leave"  # left unacked: handed out again when the channel closes (stopping)


@dataclass(frozen=True, slots=True)
class Poison:
    """Dead-letter this message with ``error`` as the reason."""

    error: Exception


Settlement = Settle | Poison
Decode = Callable[[wire.Received], T]


class MessageHandler(Protocol[T_contra]):
    async def __call__(self, item: T_contra, delivery: Delivery, /) -> Settlement: ...


class BatchHandler(Protocol[T_contra, R]):
    """Applies batches for a :class:`BatchConsumer`."""

    async def apply_batch(self, items: Sequence[T_contra]) -> R | None:
        """Apply the whole batch; ``None`` means stopping (left unacked); raise BatchRefused to
        have it applied one by one."""
        ...

    async def apply_one(self, item: T_contra) -> R | None:
        """Apply one message; raise MessageRefused to dead-letter it; ``None`` means stopping."""
        ...

    async def after_ack(self, results: list[R], acked: int) -> None:
        """Runs once the applied messages are acked (reports, follow-up work)."""
        ...


async def subscribe_shards(
    subscribe: Callable[[list[int]], Awaitable[None]],
    settings: ShardConsumer,
    stop: asyncio.Event,
    has_consumer: Callable[[int], Awaitable[bool]] | None = None,
) -> tuple[list[int], list[int]]:
    """Subscribe to this replica's shards now and, with ``standby_all``, to the others as a standby.

    Shard queues are single-active-consumer: whoever subscribes first is active and the rest wait.
    Subscribing to another replica's shard only once that replica consumes it (``has_consumer``)
    makes this one its standby, so a crashed replica's shards move over at once, without a slow
    starter losing its own shards to a fast one. A shard still without a consumer after
    ``standby_wait_s`` is taken over. Returns (preferred, standby) shard lists.
    """
    preferred = settings.shard_ids()
    await subscribe(preferred)
    others = [n for n in range(settings.shards) if n not in preferred] if settings.standby_all else []
    if not others or await sleep_or_stop(stop, settings.standby_delay_s):
        return preferred, []
    waiting = list(others)
    deadline = asyncio.get_running_loop().time() + settings.standby_wait_s

    async def owned(shard: int) -> bool:
        assert has_consumer is not None
        try:
            return await has_consumer(shard)
        except Exception as exc:  # the broker is away for a moment: ask again on the next round
            log.warning("standby_check_failed", shard=shard, error=repr(exc)[:300])
            return False

    while waiting and has_consumer is not None and asyncio.get_running_loop().time() < deadline:
        taken = [shard for shard in waiting if await owned(shard)]
        if taken:
            await retry_until_stopped("standby", functools.partial(subscribe, taken), stop)
            if stop.is_set():
                return preferred, [n for n in others if n not in waiting]
            waiting = [shard for shard in waiting if shard not in taken]
        if waiting and await sleep_or_stop(stop, 0.5):
            return preferred, [n for n in others if n not in waiting]
    if waiting:
        await retry_until_stopped("standby", functools.partial(subscribe, waiting), stop)
    return preferred, others


class Consumer(Generic[T]):
    """One channel, its prefetch, the queues it consumes, and how their messages are settled."""

    def __init__(
        self,
        broker: Broker,
        *,
        stage: str,
        prefetch: int,
        decode: Decode[T],
        dead_letter_poison: bool = True,
        metered: bool = True,
    ) -> None:
        self.broker = broker
        self.stage = stage
        self.prefetch = prefetch
        self.decode = decode
        self.dead_letter_poison = dead_letter_poison
        self.metered = metered
        self.channel: Channel | None = None
        self.stopping = False
        self._tags: dict[str, str] = {}  # queue -> consumer tag

    async def start(self, topology: Topology | None = None) -> None:
        """Open the channel, declare ``topology`` (if given) and set the prefetch."""
        channel = await self.broker.channel()
        if topology is not None:
            await channel.declare(topology)
        await channel.set_qos(self.prefetch)
        self.channel = channel

    @property
    def queues(self) -> list[str]:
        return list(self._tags)

    async def subscribe(self, queues: Iterable[str]) -> None:
        """Consume each of ``queues`` not consumed yet (so a retried subscribe never doubles one)."""
        assert self.channel is not None, "start() first"
        for queue in queues:
            if queue in self._tags:
                continue
            self._tags[queue] = await self.channel.consume(queue, self._on_delivery)
            log.info("consuming", queue=queue, stage=self.stage)

    async def subscribe_private(self, queue: str, exchange: str) -> None:
        """Consume an exclusive, auto-deleted queue of this process bound to ``exchange``."""
        assert self.channel is not None, "start() first"
        await self.channel.declare_private_queue(queue, exchange)
        await self.subscribe([queue])

    async def subscribe_shards(
        self, exchange: str, settings: ShardConsumer, stop: asyncio.Event
    ) -> tuple[list[int], list[int]]:
        """This replica's shards of ``exchange`` and, with ``standby_all``, the others as a standby."""

        async def subscribe(shards: list[int]) -> None:
            await self.subscribe(shard_queue(exchange, n) for n in shards)

        async def has_consumer(shard: int) -> bool:
            return await self.broker.queue_has_consumer(shard_queue(exchange, shard))

        return await subscribe_shards(subscribe, settings, stop, has_consumer)

    async def cancel(self) -> None:
        """Stop taking new messages (those delivered already stay unacked until settled)."""
        self.stopping = True
        if self.channel is None:
            return
        for queue, tag in list(self._tags.items()):
            try:
                async with asyncio.timeout(CANCEL_TIMEOUT_S):  # a broker that stopped answering
                    await self.channel.cancel(tag)
            except Exception as exc:  # a closed channel has no consumers left to cancel
                log.warning("cancel_failed", queue=queue, error=repr(exc)[:300])
        self._tags.clear()

    async def _on_delivery(self, delivery: Delivery) -> None:
        raise NotImplementedError

    def _count_in(self, n: int = 1) -> None:
        if self.metered:
            _messages_in(self.stage).inc(n)

    async def settle(self, delivery: Delivery, settlement: Settlement) -> None:
        if isinstance(settlement, Poison):
            await self.poison(delivery, settlement.error)
        elif settlement is Settle.ACK:
            await self._settle(delivery, "ack")
        elif settlement is Settle.REQUEUE:
            await self._settle(delivery, "requeue")

    async def _settle(self, delivery: Delivery, action: str, multiple: bool = False) -> bool:
        """Carry out one settle; False when the channel has gone (the broker redelivers the message)."""
        delivery.settled = True
        try:
            if action == "ack":
                await delivery.settler.ack(multiple)
            elif action == "requeue":
                await delivery.settler.nack(True)
            else:
                await delivery.settler.reject(False)
        except ChannelGone as exc:
            log.info("settle_lost", action=action, queue=delivery.queue, error=str(exc)[:300])
            return False
        return True

    async def ack_all(self, deliveries: Sequence[Delivery]) -> None:
        """One ``multiple`` ack per channel, on the highest delivery tag of each."""
        highest: dict[int, Delivery] = {}
        for delivery in deliveries:
            if delivery.settled:
                continue
            key = id(delivery.channel)
            if key not in highest or delivery.tag > highest[key].tag:
                highest[key] = delivery
        for delivery in highest.values():
            await self._settle(delivery, "ack", multiple=True)
        for delivery in deliveries:
            delivery.settled = True

    async def poison(self, delivery: Delivery, error: Exception) -> None:
        """Copy ``delivery`` to the DLX with why it is unusable, then ack it; reject it if the copy
        is not confirmed (the queue's dead-letter policy moves it). It leaves the queue once."""
        metrics.POISON.labels(stage=self.stage, error=type(error).__name__).inc()
        reason = f"{type(error).__name__}: {error}"[:1000]
        log.error(
            "poison_message",
            stage=self.stage,
            queue=delivery.queue,
            message_id=delivery.message.message_id,
            error=reason,
            action="dead-lettered"
            if self.dead_letter_poison
            else "rejected to the queue's dead-letter policy",
        )
        if self.dead_letter_poison and self.channel is not None:
            copy = wire.poison_copy(delivery.message, reason, self.stage, delivery.queue)
            (failure,) = await self.channel.publish(DEAD_LETTER_EXCHANGE, [copy])
            if failure is None:
                await self._settle(delivery, "ack")
                return
            log.warning("poison_dead_letter_failed", error=repr(failure)[:300])
        await self._settle(delivery, "reject")


class MessageConsumer(Consumer[T]):
    """Each message handled on its own (concurrently, up to the prefetch), settled as its handler says."""

    def __init__(
        self,
        broker: Broker,
        handler: MessageHandler[T],
        *,
        stage: str,
        prefetch: int,
        decode: Decode[T],
        dead_letter_poison: bool = True,
        metered: bool = True,
    ) -> None:
        super().__init__(
            broker,
            stage=stage,
            prefetch=prefetch,
            decode=decode,
            dead_letter_poison=dead_letter_poison,
            metered=metered,
        )
        self.handler = handler
        self.in_flight: set[asyncio.Task[None]] = set()
        # Per channel, its unsettled deliveries in delivery order (the channel kept for its identity).
        self._delivered: dict[int, tuple[object, deque[Delivery]]] = {}
        self._ack_flush: asyncio.Task[None] | None = None
        self._acks_waiting = False

    async def _on_delivery(self, delivery: Delivery) -> None:
        if self.stopping:
            return  # left unacked: the broker gives it back when the channel closes
        entry = self._delivered.get(id(delivery.channel))
        if entry is None or entry[0] is not delivery.channel:
            entry = self._delivered[id(delivery.channel)] = (delivery.channel, deque())
        entry[1].append(delivery)
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
        try:
            await self._handle(delivery)
        finally:
            if task is not None:
                self.in_flight.discard(task)

    async def _handle(self, delivery: Delivery) -> None:
        self._count_in()
        try:
            item = self.decode(delivery.message)
        except MessageError as exc:
            await self.poison(delivery, exc)
            return
        try:
            settlement = await self.handler(item, delivery)
        except MessageError as exc:
            settlement = Poison(exc)
        except Exception as exc:
            log.exception("handler_failed", stage=self.stage, queue=delivery.queue, error=repr(exc)[:300])
            settlement = Settle.REQUEUE
        if settlement is Settle.ACK:
            delivery.ack_due = True
            self._acks_waiting = True
            if self._ack_flush is None:
                self._ack_flush = asyncio.get_running_loop().create_task(self._flush_acks())
        else:
            await self.settle(delivery, settlement)

    async def _flush_acks(self) -> None:
        """Ack what became due (see the module's ack rules). One flusher at a time: a multiple ack sent
        ahead of an individual ack of a lower tag would ack that tag twice, which closes the channel."""
        try:
            while self._acks_waiting:
                await asyncio.sleep(0)  # let the handlers finishing in this turn mark theirs
                self._acks_waiting = False
                for key, (channel, delivered) in list(self._delivered.items()):
                    highest: Delivery | None = None
                    while delivered and (delivered[0].settled or delivered[0].ack_due):
                        first = delivered.popleft()
                        if not first.settled:
                            highest = first
                    behind = [d for d in delivered if d.ack_due and not d.settled]
                    if behind:
                        self._delivered[key] = (channel, deque(d for d in delivered if not d.ack_due))
                    elif not delivered:
                        del self._delivered[key]
                    acks = [(highest, True)] if highest is not None else []
                    for delivery, multiple in [*acks, *((d, False) for d in behind)]:
                        try:
                            await self._settle(delivery, "ack", multiple=multiple)
                        except Exception as exc:  # never lose the flusher: the broker redelivers on close
                            log.error(
                                "ack_failed", queue=delivery.queue, tag=delivery.tag, error=repr(exc)[:300]
                            )
        finally:
            self._ack_flush = None

    async def stop(self, grace_s: float) -> None:
        """Take no new messages, let those in flight finish (they settle), leave the rest unacked."""
        await self.cancel()
        if self.in_flight:
            await asyncio.wait(list(self.in_flight), timeout=grace_s)
        if self._ack_flush is not None:
            await asyncio.wait([self._ack_flush], timeout=grace_s)
        while self._ack_flush is not None:
            await asyncio.shield(self._ack_flush)


class BatchConsumer(Consumer[T]):
    """Messages gathered into batches (up to ``batch_size``, or what arrives within ``batch_wait_s``)."""

    def __init__(
        self,
        broker: Broker,
        *,
        stage: str,
        prefetch: int,
        decode: Decode[T],
        batch_size: int,
        batch_wait_s: float,
        dead_letter_poison: bool = True,
        metered: bool = True,
    ) -> None:
        super().__init__(
            broker,
            stage=stage,
            prefetch=max(prefetch, batch_size),
            decode=decode,
            dead_letter_poison=dead_letter_poison,
            metered=metered,
        )
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.inbox: asyncio.Queue[Delivery] = asyncio.Queue()

    async def _on_delivery(self, delivery: Delivery) -> None:
        self.inbox.put_nowait(delivery)

    async def next_batch(self, stop: asyncio.Event) -> list[Delivery]:
        """Wait for one message, then gather what else arrives within the batch window."""
        getter = asyncio.ensure_future(self.inbox.get())
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            await asyncio.gather(getter, return_exceptions=True)
            if getter.done() and not getter.cancelled() and getter.exception() is None:
                self.inbox.put_nowait(getter.result())  # taken as the stop came: keep its place
            return []
        stopper.cancel()
        batch = [getter.result()]
        deadline = asyncio.get_running_loop().time() + self.batch_wait_s
        while len(batch) < self.batch_size:
            if self.inbox.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.inbox.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(self.inbox.get_nowait())
        return batch

    async def run(self, handler: BatchHandler[T, R], stop: asyncio.Event) -> None:
        """Apply batches until ``stop``; what is not applied by then stays unacked."""
        while not stop.is_set():
            batch = await self.next_batch(stop)
            if not batch:
                continue
            if not await self.handle_batch(handler, batch):
                return

    async def handle_batch(self, handler: BatchHandler[T, R], batch: list[Delivery]) -> bool:
        """Decode, apply and settle one batch; False when the handler is stopping."""
        self._count_in(len(batch))
        decoded: list[tuple[Delivery, T]] = []
        for delivery in batch:
            try:
                decoded.append((delivery, self.decode(delivery.message)))
            except MessageError as exc:
                await self.poison(delivery, exc)
        if not decoded:
            return True
        try:
            result = await handler.apply_batch([item for _, item in decoded])
        except BatchRefused as exc:
            log.error(
                "batch_refused", error=repr(exc)[:500], batch=len(decoded), action="applying one by one"
            )
            return await self._one_by_one(handler, decoded)
        except Exception as exc:
            await self._requeue_after_failure(decoded, exc)
            return True
        if result is None:
            return False
        await self.ack_all([delivery for delivery, _ in decoded])
        await handler.after_ack([result], len(decoded))
        return True

    async def _one_by_one(self, handler: BatchHandler[T, R], decoded: list[tuple[Delivery, T]]) -> bool:
        results: list[R] = []
        applied: list[Delivery] = []
        stopping = False
        for index, (delivery, item) in enumerate(decoded):
            try:
                result = await handler.apply_one(item)
            except MessageError as exc:
                await self.poison(delivery, exc)
                continue
            except Exception as exc:
                await self._requeue_after_failure(decoded[index:], exc)
                break
            if result is None:
                stopping = True
                break
            results.append(result)
            applied.append(delivery)
        await self.ack_all(applied)
        if results:
            await handler.after_ack(results, len(applied))
        return not stopping

    async def _requeue_after_failure(self, decoded: Sequence[tuple[Delivery, T]], error: Exception) -> None:
        log.error(
            "batch_failed",
            stage=self.stage,
            error=repr(error)[:500],
            batch=len(decoded),
            action="requeued",
            exc_info=error,
        )
        for delivery, _ in decoded:
            await self._settle(delivery, "requeue")
