"""The seam's queue operations (queue depth, per-consumer prefetch, give back through a tag) against the
memory broker, and the two users written on them: the DLQ browser (services/dlq/browse.py, which the
dlq tool, the responder's in-doubt relay and the dashboard read the DLQ with) and the poller's
lane depth."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.dlq.browse import DlqBrowser
from services.dlq.entries import EntryKind
from services.poller.settings import PollerSettings
from shared.bus import wire
from shared.bus.memory import MemoryBroker
from shared.bus.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, DISPATCH, Lane, Topology, lane_queue
from shared.bus.transport import Delivery
from shared.bus.wire import Envelope, Received
from shared.core.errors import ChannelGone
from shared.core.models import DeadLetter
from tests.helpers import dead_letter, poller_on_memory_broker

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def letter(log_id: int) -> DeadLetter:
    return dead_letter(
        log_id=log_id,
        attempt=2,
        max_attempts=2,
        campaign_id=None,
        error_message="upstream",
        created_at=WHEN,
        dead_lettered_at=WHEN,
    )


def poison(n: int) -> Envelope:
    arrived = Received(
        b"\xff not json " + str(n).encode(), message_id=f"p-{n}", type="switchboard.dispatch.v1"
    )
    return wire.poison_copy(arrived, "MalformedMessage: not JSON", "sender", "dispatch.bulk.0")


async def dlq_of(envelopes: list[Envelope]) -> MemoryBroker:
    broker = MemoryBroker()
    broker.declare(Topology(shards=2))
    channel = await broker.channel()
    assert await channel.publish(DEAD_LETTER_EXCHANGE, envelopes) == [None] * len(envelopes)
    return broker


def ids(broker: MemoryBroker) -> list[str]:
    return [e.message_id for e in broker.ready(DEAD_LETTER_QUEUE)]


# ---- the seam's operations ----------------------------------------------------------------------------


async def test_queue_depth_counts_ready_messages_and_consumers() -> None:
    # Given a DLQ of three letters, one of them handed to a consumer that holds it
    broker = await dlq_of([wire.dead_letter(letter(n)) for n in (1, 2, 3)])
    reader = await broker.channel()
    await reader.set_qos(1)
    held: list[Delivery] = []

    async def hold(delivery: Delivery) -> None:
        held.append(delivery)

    await reader.consume(DEAD_LETTER_QUEUE, hold)
    await broker.settle_down()
    # When another channel asks for its depth / Then it sees two ready and one consumer
    other = await broker.channel()
    depth = await other.queue_depth(DEAD_LETTER_QUEUE)
    assert (depth.ready, depth.consumers, len(held)) == (2, 1, 1)


async def test_a_passive_declare_of_a_missing_queue_closes_the_channel() -> None:
    broker = MemoryBroker()
    channel = await broker.channel()
    with pytest.raises(ChannelGone):
        await channel.queue_depth("nope")
    assert channel.is_closed
    with pytest.raises(ChannelGone):
        await channel.queue_depth("nope")


async def test_requeue_through_gives_back_that_tag_and_every_lower_one_in_order() -> None:
    # Given five letters, all handed out on one channel
    broker = await dlq_of([wire.dead_letter(letter(n)) for n in range(1, 6)])
    channel = await broker.channel()
    got: list[Delivery] = []

    async def take(delivery: Delivery) -> None:
        got.append(delivery)

    tag = await channel.consume(DEAD_LETTER_QUEUE, take)
    await broker.settle_down()
    assert ids(broker) == []
    # When the consumer is cancelled, the first three are given back with one call, and the fifth acked
    await channel.cancel(tag)
    await got[4].settler.ack(False)
    await channel.requeue_through(got[2].tag)
    # Then those three are first again, in their order, and the fourth is still held
    assert ids(broker) == ["dl-1-2", "dl-2-2", "dl-3-2"]
    assert broker.unacked(DEAD_LETTER_QUEUE) == 1


async def test_each_consumer_holds_its_own_prefetch_and_a_shared_queue_is_served_round_robin() -> None:
    # Given the DLQ (no single active consumer) with ten letters, and two consumers of one channel
    # started with prefetch 2 and 3
    broker = await dlq_of([wire.dead_letter(letter(n)) for n in range(1, 11)])
    channel = await broker.channel()
    got: list[Delivery] = []

    async def take(delivery: Delivery) -> None:
        got.append(delivery)

    await channel.set_qos(2)
    first = await channel.consume(DEAD_LETTER_QUEUE, take)
    await channel.set_qos(3)
    second = await channel.consume(DEAD_LETTER_QUEUE, take)
    await broker.settle_down()
    # Then each holds what its prefetch allows, and the rest waits
    assert sorted(d.consumer for d in got) == sorted([first] * 2 + [second] * 3)
    assert len(ids(broker)) == 5
    # ... and redelivered messages say how often they were handed out before
    await channel.close()
    again = await broker.channel()
    await again.consume(DEAD_LETTER_QUEUE, take)
    await broker.settle_down()
    counts = [d.message.headers.get("x-delivery-count") for d in got[5:]]
    assert counts.count(1) == 5 and counts.count(None) == 5


# ---- the DLQ browser over the seam ------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(letters=st.integers(0, 40), poisons=st.integers(0, 5), window=st.integers(1, 16))
async def test_a_scan_sees_every_message_once_and_leaves_the_dlq_as_it_was(
    letters: int, poisons: int, window: int
) -> None:
    # Given a DLQ of letters followed by poison messages
    envelopes = [wire.dead_letter(letter(n)) for n in range(1, letters + 1)] + [
        poison(n) for n in range(poisons)
    ]
    broker = await dlq_of(envelopes)
    before = ids(broker)
    # When the browser reads all of it with a small window, keeping everything
    async with DlqBrowser(broker, window=window, idle_s=0.5) as browser:
        kinds = []
        async for delivery in browser.deliveries():
            kinds.append(delivery.entry.kind)
            browser.keep(delivery)
    # Then it saw each message once, the letters decoded, the poison recognised...
    assert (browser.expected, browser.seen, browser.incomplete) == (len(envelopes), len(envelopes), 0)
    assert kinds == [EntryKind.DEAD_LETTER] * letters + [EntryKind.POISON] * poisons
    assert browser.peak_buffered <= window
    # ... and the DLQ holds the same messages in the same order, with no consumer left
    assert ids(broker) == before
    assert broker.unacked(DEAD_LETTER_QUEUE) == 0 and not broker.queues[DEAD_LETTER_QUEUE].consumers


async def test_removing_some_and_stopping_early_gives_back_the_rest_in_order() -> None:
    # Given ten letters
    broker = await dlq_of([wire.dead_letter(letter(n)) for n in range(1, 11)])
    # When a scan removes the even ones among the first six and stops there (a bounded look)
    async with DlqBrowser(broker, window=4, idle_s=0.5) as browser:
        async for delivery in browser.deliveries():
            entry = delivery.entry
            assert entry.log_id is not None and entry.letter is not None
            if entry.log_id % 2 == 0:
                await browser.ack(delivery)
            else:
                browser.keep(delivery)
            if browser.seen == 6:
                break
    # Then the three removed are gone and the others are where they were
    assert ids(broker) == [f"dl-{n}-2" for n in (1, 3, 5, 7, 8, 9, 10)]
    assert (browser.removed, browser.seen) == (3, 6)


async def test_deliveries_must_be_resolved_in_the_order_received() -> None:
    broker = await dlq_of([wire.dead_letter(letter(n)) for n in (1, 2)])
    async with DlqBrowser(broker, idle_s=0.5) as browser:
        stream = browser.deliveries()
        await anext(stream)
        second = await anext(stream)
        with pytest.raises(RuntimeError, match="in the order received"):
            browser.keep(second)
    assert ids(broker) == ["dl-1-2", "dl-2-2"]


async def test_another_reader_is_counted_and_what_it_holds_is_reported_incomplete() -> None:
    # Given a reader that holds one of three letters
    broker = await dlq_of([wire.dead_letter(letter(n)) for n in (1, 2, 3)])
    other = await broker.channel()
    await other.set_qos(1)

    async def hold(delivery: Delivery) -> None:
        return None

    await other.consume(DEAD_LETTER_QUEUE, hold)
    await broker.settle_down()
    # When the browser reads / Then it knows someone else is there, and what it could not see
    async with DlqBrowser(broker, idle_s=0.2) as browser:
        seen = [d async for d in browser.deliveries()]
        for delivery in seen:
            browser.keep(delivery)
    assert (browser.other_consumers, browser.expected, browser.seen, browser.incomplete) == (1, 2, 2, 0)


# ---- the poller's lane depth ---------------------------------------------------------------------------


async def test_the_poller_measures_a_lanes_depth_through_the_seam() -> None:
    # Given the topology and three dispatches waiting in bulk shards, one in an urgent shard
    poller, broker = await poller_on_memory_broker(PollerSettings(shards=2))
    for queue, count in ((lane_queue(DISPATCH, Lane.BULK, 0), 2), (lane_queue(DISPATCH, Lane.BULK, 1), 1)):
        broker.queues[queue].ready.extend(_stored(count))
    broker.queues[lane_queue(DISPATCH, Lane.URGENT, 1)].ready.extend(_stored(1))
    # When it measures / Then each lane counts its own shards
    assert await poller.lane_depth(Lane.BULK) == 3
    assert await poller.lane_depth(Lane.URGENT) == 1


def _stored(count: int) -> list[Any]:
    from shared.bus.memory import Stored

    return [Stored(Envelope(b"{}", message_id=f"m{n}", type="t", routing_key="k")) for n in range(count)]
