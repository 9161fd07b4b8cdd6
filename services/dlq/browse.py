"""Reading the DLQ without removing what is not meant to go, through the bus seam
(:class:`shared.bus.transport.Channel`: RabbitMQ in production, the memory broker in unit tests).

AMQP 0-9-1 has no "peek", so the browser *takes* messages with manual acks and gives back every
one it was not told to remove:

* It consumes with a per-consumer prefetch of ``window``. A message handed out and not acked stays
  on the broker as "unacked" (hidden from other consumers); this process keeps only its delivery
  tag. When all windows are full of kept messages, one more consumer opens another window. So what
  sits in this process is bounded by the window, whatever the size of the DLQ (and a prefetch is at
  most 65 535 anyway).
* The scan ends after the number of messages the queue held when it began (``expected``), or when
  nothing arrives for ``idle_s`` although a window has room (messages held by another consumer).
* At the end the consumers are cancelled, then the kept messages are nacked with requeue, one
  ``multiple`` nack per run of one consumer's messages, in delivery order. The quorum queue serves
  returned messages first, in the order they were returned, so the DLQ keeps its order. (Closing the
  channel instead returns each consumer's messages as a block, in no defined order of blocks.)
* Each message given back is redelivered later with ``redelivered`` set and ``x-delivery-count``
  one higher; its body, properties and other headers are unchanged. The ``dlq`` has no delivery
  limit, so reading never drops anything (``services.admin check`` flags a policy that would add one).
* Returns are paced (see :meth:`DlqBrowser._return_runs`): the broker reorders them when too many
  are in flight. It also waits until the broker counts them as ready again, so that the next scan
  sees them.
* If this process dies, the broker gives everything back by itself (connection closed = every
  unacked message returned); only the order may then change, by blocks.

While a scan runs, the messages it holds are invisible to anyone else reading the DLQ.
"""

from __future__ import annotations

import asyncio
from array import array
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType

from services.dlq.entries import DlqEntry, entry_of
from shared.bus import transport
from shared.bus.topology import DEAD_LETTER_QUEUE
from shared.bus.transport import Broker, Channel
from shared.core.errors import ChannelGone
from shared.runtime.logs import get_logger

log = get_logger("dlq.browse")
# Return commands the broker may have in flight for this channel before we wait for them to apply
# (RabbitMQ 3.10's quorum queue client starts reordering above 32).
RUNS_IN_FLIGHT = 8


@dataclass(frozen=True, slots=True)
class Delivery:
    tag: int
    consumer: str
    entry: DlqEntry
    body: bytes
    received: transport.Delivery = field(repr=False, compare=False)


class DlqBrowser:
    """``async with DlqBrowser(broker) as browser: async for d in browser.deliveries(): ...``

    Every delivery must be resolved, in the order received, with :meth:`keep` or :meth:`ack`;
    whatever is unresolved when the block ends is kept (given back). Leaving the loop early (a
    bounded look, as the dashboard's) gives back everything as well.
    """

    def __init__(
        self,
        broker: Broker,
        queue: str = DEAD_LETTER_QUEUE,
        window: int = 1000,
        idle_s: float = 2.0,
    ) -> None:
        if not 1 <= window <= 65_535:
            raise ValueError("window must be within 1..65535 (an AMQP prefetch count)")
        self.broker = broker
        self.queue = queue
        self.window = window
        self.idle_s = idle_s
        self.expected = 0  # ready messages when the scan began
        self.other_consumers = 0  # consumers on the queue when the scan began (they hide messages)
        self.seen = 0
        self.kept = 0
        self.removed = 0
        self.incomplete = 0  # messages expected but not seen (held elsewhere, or removed meanwhile)
        self.peak_buffered = 0  # most messages ever waiting in this process: stays <= window (+ batch)
        self._channel: Channel | None = None
        self._consumers: list[str] = []
        self._buffer: asyncio.Queue[transport.Delivery] = asyncio.Queue()
        self._pending: deque[tuple[int, str]] = deque()  # handed out, not resolved yet
        self._run_ends = array("q")  # last kept tag of each run of one consumer's kept messages
        self._run_sizes = array("q")  # how many messages each run holds
        self._run_size = 0
        self._last_kept: tuple[int, str] | None = None

    async def __aenter__(self) -> DlqBrowser:
        self._channel = await self.broker.channel()
        depth = await self._channel.queue_depth(self.queue)
        self.expected = depth.ready
        self.other_consumers = depth.consumers
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.give_back()

    async def _on_delivery(self, delivery: transport.Delivery) -> None:
        self._buffer.put_nowait(delivery)
        self.peak_buffered = max(self.peak_buffered, self._buffer.qsize())

    async def _open_window(self) -> None:
        assert self._channel is not None
        await self._channel.set_qos(self.window)
        self._consumers.append(await self._channel.consume(self.queue, self._on_delivery))

    async def _next(self) -> transport.Delivery | None:
        if not self._buffer.empty():
            return self._buffer.get_nowait()
        if self.seen >= self.expected:
            return None
        if self.kept + len(self._pending) >= len(self._consumers) * self.window:
            await self._open_window()
        try:
            return await asyncio.wait_for(self._buffer.get(), self.idle_s)
        except TimeoutError:
            self.incomplete = self.expected - self.seen
            return None

    def _handout(self, received: transport.Delivery) -> Delivery:
        self.seen += 1
        self._pending.append((received.tag, received.consumer))
        return Delivery(
            received.tag, received.consumer, entry_of(received.message), received.message.body, received
        )

    async def deliveries(self) -> AsyncIterator[Delivery]:
        while (received := await self._next()) is not None:
            yield self._handout(received)

    async def batches(self, size: int) -> AsyncIterator[list[Delivery]]:
        """Up to ``size`` deliveries at a time: waits for the first, then takes what has arrived."""
        while (received := await self._next()) is not None:
            batch = [self._handout(received)]
            while len(batch) < size and not self._buffer.empty():
                batch.append(self._handout(self._buffer.get_nowait()))
            yield batch

    def _resolve(self, delivery: Delivery) -> None:
        if not self._pending or self._pending[0][0] != delivery.tag:
            raise RuntimeError(f"deliveries must be resolved in the order received (got tag {delivery.tag})")
        self._pending.popleft()

    def _keep_tag(self, tag: int, consumer: str) -> None:
        if self._last_kept is not None and self._last_kept[1] != consumer:
            self._close_run()
        self._last_kept = (tag, consumer)
        self._run_size += 1
        self.kept += 1

    def _close_run(self) -> None:
        if self._last_kept is not None and self._run_size:
            self._run_ends.append(self._last_kept[0])
            self._run_sizes.append(self._run_size)
        self._run_size = 0

    def keep(self, delivery: Delivery) -> None:
        """Leave it in the DLQ (it is given back at the end)."""
        self._resolve(delivery)
        self._keep_tag(delivery.tag, delivery.consumer)

    async def ack(self, delivery: Delivery) -> None:
        """Remove it from the DLQ for good."""
        self._resolve(delivery)
        await delivery.received.settler.ack(False)
        self.removed += 1

    async def give_back(self) -> None:
        """Cancel the consumers and return every kept message, in order; then close the channel."""
        if self._channel is None:
            return
        channel, self._channel = self._channel, None
        try:
            if not channel.is_closed:
                for consumer in self._consumers:
                    await channel.cancel(consumer)
                await asyncio.sleep(0)  # let deliveries that raced the cancel reach the buffer
                while self._pending:
                    self._keep_tag(*self._pending.popleft())
                while not self._buffer.empty():
                    received = self._buffer.get_nowait()
                    self._keep_tag(received.tag, received.consumer)
                self._close_run()
                await self._return_runs(channel)
        except (ChannelGone, ConnectionError) as exc:
            # The broker returns whatever is still unacked when the channel or connection goes.
            log.warning("dlq_give_back_incomplete", error=repr(exc))
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _return_runs(self, channel: Channel) -> None:
        """Nack each run in order, pausing every few runs until the broker has applied them.

        The quorum queue's channel-side client keeps a few dozen commands in flight; past that it
        buffers returns per consumer and sends them in no particular order. Waiting until the queue
        counts the returned messages as ready keeps it under that limit, so the order holds. The
        last wait also means a scan started right after this one sees every message again.
        """
        base = await self._ready(channel)
        returned = 0
        pacing = True
        for index, (tag, size) in enumerate(zip(self._run_ends, self._run_sizes, strict=True)):
            await channel.requeue_through(tag)
            returned += size
            if pacing and (index + 1) % RUNS_IN_FLIGHT == 0:
                pacing = await self._until_ready(channel, base + returned, timeout=5.0)
        if self.kept and not await self._until_ready(
            channel, base + returned, timeout=max(10.0, self.kept / 2000)
        ):
            log.warning("dlq_returns_not_visible_yet", kept=self.kept)

    async def _ready(self, channel: Channel) -> int:
        return (await channel.queue_depth(self.queue)).ready

    async def _until_ready(self, channel: Channel, target: int, timeout: float) -> bool:
        """Wait until the queue counts ``target`` ready messages; False if it did not within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self._ready(channel) < target:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True
