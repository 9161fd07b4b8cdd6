"""shared/bus/consumer.py against the in-memory broker: every ack rule of the consume loop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.bus import wire
from shared.bus.consumer import BatchConsumer, MessageConsumer, Settle
from shared.bus.memory import Fault, MemoryBroker, MemoryChannel
from shared.bus.topology import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DISPATCH,
    RESPONSES,
    Lane,
    Topology,
    lane_exchange,
    shard_queue,
)
from shared.bus.transport import Channel, Delivery
from shared.core.errors import BatchRefused, MessageRefused
from shared.core.models import DispatchMessage, OutcomeClass, OutcomeMessage

DISPATCH_EXCHANGE = lane_exchange(DISPATCH, Lane.BULK)
RESPONSES_EXCHANGE = lane_exchange(RESPONSES, Lane.BULK)


AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TOPOLOGY = Topology(shards=1, delivery_limit=3)
DISPATCH_0 = shard_queue(DISPATCH_EXCHANGE, 0)
RESPONSES_0 = shard_queue(RESPONSES_EXCHANGE, 0)


def dispatch(log_id: int) -> DispatchMessage:
    return DispatchMessage(
        log_id=log_id,
        attempt=1,
        tenant="acme",
        channel="sms",
        recipient=f"+1415555{log_id:04d}",
        payload={"body": "hi"},
        priority=1,
        created_at=AT,
        claimed_at=AT,
    )


def outcome(log_id: int) -> OutcomeMessage:
    return OutcomeMessage(
        log_id=log_id,
        attempt=1,
        recipient=f"+1415555{log_id:04d}",
        channel="sms",
        provider="mocksms",
        outcome=OutcomeClass.SUCCESS,
    )


async def ready_broker() -> tuple[MemoryBroker, Channel]:
    broker = MemoryBroker()
    publisher = await broker.channel()
    await publisher.declare(TOPOLOGY)
    return broker, publisher


async def put(publisher: Channel, exchange: str, envelopes: Sequence[wire.Envelope]) -> None:
    assert all(error is None for error in await publisher.publish(exchange, envelopes))


def garbage(n: int, queue_key: str = "k") -> wire.Envelope:
    return wire.Envelope(
        b"\x00not json", message_id=f"bad-{n}", type=wire.MESSAGE_TYPE_DISPATCH, routing_key=queue_key
    )


def dlq_ids(broker: MemoryBroker) -> list[str]:
    return [e.message_id for e in broker.ready(DEAD_LETTER_QUEUE)]


class SenderLike:
    """Publishes an outcome per dispatch and acks only once it is confirmed (the sender's rule)."""

    def __init__(self, publisher: Channel) -> None:
        self.publisher = publisher
        self.seen: list[tuple[int, bool]] = []
        self.before_settle: asyncio.Event | None = None
        self.hold: asyncio.Event | None = None

    async def __call__(self, item: DispatchMessage, delivery: Delivery) -> Settle:
        self.seen.append((item.log_id, delivery.message.redelivered))
        if self.hold is not None:
            await self.hold.wait()
        (error,) = await self.publisher.publish(RESPONSES_EXCHANGE, [wire.outcome(outcome(item.log_id))])
        if self.before_settle is not None:
            self.before_settle.set()
            await asyncio.sleep(0)
        return Settle.ACK if error is None else Settle.REQUEUE


async def sender_consumer(
    broker: MemoryBroker, handler: SenderLike, prefetch: int = 10
) -> MessageConsumer[DispatchMessage]:
    consumer = MessageConsumer(
        broker, handler, stage="sender", prefetch=prefetch, decode=lambda m: wire.decode_dispatch(m, 10_000)
    )
    await consumer.start(TOPOLOGY)
    await consumer.subscribe([DISPATCH_0])
    return consumer


async def test_a_message_is_acked_once_its_outcome_is_confirmed() -> None:
    # Given a sender-like consumer
    broker, publisher = await ready_broker()
    handler = SenderLike(await broker.channel())
    await sender_consumer(broker, handler)
    # When three dispatches arrive
    await put(publisher, DISPATCH_EXCHANGE, [wire.dispatch(dispatch(i)) for i in (1, 2, 3)])
    await broker.settle_down()
    # Then each outcome is out and each dispatch acked
    assert sorted(o.message_id for o in broker.ready(RESPONSES_0)) == ["1-1", "2-1", "3-1"]
    assert broker.ready(DISPATCH_0) == [] and broker.unacked(DISPATCH_0) == 0


@pytest.mark.parametrize("fault", [Fault.REFUSE, Fault.NO_CONFIRM, Fault.TAKEN_NO_CONFIRM])
async def test_an_unconfirmed_outcome_requeues_the_dispatch(fault: Fault) -> None:
    # Given the broker will not confirm the next outcome
    broker, publisher = await ready_broker()
    handler = SenderLike(await broker.channel())
    await sender_consumer(broker, handler)
    broker.fail_next(RESPONSES_EXCHANGE, fault)
    # When a dispatch arrives
    await put(publisher, DISPATCH_EXCHANGE, [wire.dispatch(dispatch(1))])
    await broker.settle_down()
    # Then it came back (redelivered) and was acked once its outcome was confirmed
    assert handler.seen == [(1, False), (1, True)]
    outcomes = [o.message_id for o in broker.ready(RESPONSES_0)]
    assert outcomes == (["1-1", "1-1"] if fault is Fault.TAKEN_NO_CONFIRM else ["1-1"])
    assert broker.unacked(DISPATCH_0) == 0 and broker.ready(DISPATCH_0) == []


async def test_a_broker_restart_between_confirm_and_ack_is_a_redelivery_not_a_crash() -> None:
    # Given a dispatch whose outcome the broker has confirmed
    broker, publisher = await ready_broker()
    handler = SenderLike(await broker.channel())
    handler.before_settle = asyncio.Event()
    consumer = await sender_consumer(broker, handler)
    await put(publisher, DISPATCH_EXCHANGE, [wire.dispatch(dispatch(1))])
    await handler.before_settle.wait()
    # When the broker restarts before the ack goes out
    broker.restart()
    handler.before_settle = None
    await broker.settle_down()
    # Then the ack is dropped quietly, the restored channel gets the dispatch again, and it is acked
    assert handler.seen == [(1, False), (1, True)]
    assert [o.message_id for o in broker.ready(RESPONSES_0)] == ["1-1", "1-1"]  # a duplicate, idempotent
    assert broker.unacked(DISPATCH_0) == 0 and broker.ready(DISPATCH_0) == []
    assert not consumer.stopping


async def test_poison_is_copied_to_the_dlq_with_its_reason_and_acked() -> None:
    broker, publisher = await ready_broker()
    handler = SenderLike(await broker.channel())
    await sender_consumer(broker, handler)
    await put(publisher, DISPATCH_EXCHANGE, [garbage(1), wire.outcome(outcome(5))])
    await broker.settle_down()
    letters = broker.ready(DEAD_LETTER_QUEUE)
    assert [e.message_id for e in letters] == ["bad-1", "5-1"]
    assert letters[0].headers["x-switchboard-reason"] == "poison_message"
    assert str(letters[0].headers["x-switchboard-error"]).startswith("MalformedMessage: not JSON")
    assert "where a dispatch was expected" in str(letters[1].headers["x-switchboard-error"])
    assert letters[0].headers["x-switchboard-source-queue"] == DISPATCH_0
    assert handler.seen == [] and broker.unacked(DISPATCH_0) == 0


async def test_poison_whose_copy_is_refused_is_rejected_into_the_dlq_by_the_queue_policy() -> None:
    # Given the dead-letter exchange refuses the next publish
    broker, publisher = await ready_broker()
    await sender_consumer(broker, SenderLike(await broker.channel()))
    broker.fail_next(DEAD_LETTER_EXCHANGE, Fault.REFUSE)
    # When garbage arrives
    await put(publisher, DISPATCH_EXCHANGE, [garbage(2)])
    await broker.settle_down()
    # Then it is rejected, and the queue's dead-letter policy moves the original to the DLQ
    assert [s.envelope.message_id for s in broker.queues[DISPATCH_0].dead_lettered] == ["bad-2"]
    assert dlq_ids(broker) == ["bad-2"]
    assert broker.unacked(DISPATCH_0) == 0


async def test_a_failing_handler_requeues_until_the_delivery_limit_dead_letters_it() -> None:
    broker, publisher = await ready_broker()

    async def broken(item: DispatchMessage, delivery: Delivery) -> Settle:
        raise RuntimeError("bug")

    consumer = MessageConsumer(broker, broken, stage="sender", prefetch=1, decode=wire.decode_dispatch)
    await consumer.start(TOPOLOGY)
    await consumer.subscribe([DISPATCH_0])
    await put(publisher, DISPATCH_EXCHANGE, [wire.dispatch(dispatch(1)), wire.dispatch(dispatch(2))])
    await broker.settle_down()
    assert sorted(dlq_ids(broker)) == ["1-1", "2-1"]
    assert broker.unacked(DISPATCH_0) == 0 and broker.ready(DISPATCH_0) == []


async def test_a_message_error_from_the_handler_is_poison() -> None:
    broker, publisher = await ready_broker()

    async def refuses(item: DispatchMessage, delivery: Delivery) -> Settle:
        raise MessageRefused("no")

    consumer = MessageConsumer(broker, refuses, stage="sender", prefetch=1, decode=wire.decode_dispatch)
    await consumer.start(TOPOLOGY)
    await consumer.subscribe([DISPATCH_0])
    await put(publisher, DISPATCH_EXCHANGE, [wire.dispatch(dispatch(1))])
    await broker.settle_down()
    assert dlq_ids(broker) == ["1-1"]


async def test_stop_lets_in_flight_finish_and_leaves_the_rest_unacked_for_redelivery() -> None:
    # Given a consumer with prefetch 2 holding two dispatches, and three more waiting in the queue
    broker, publisher = await ready_broker()
    handler = SenderLike(await broker.channel())
    handler.hold = asyncio.Event()
    consumer = await sender_consumer(broker, handler, prefetch=2)
    await put(publisher, DISPATCH_EXCHANGE, [wire.dispatch(dispatch(i)) for i in range(1, 6)])
    await asyncio.sleep(0.01)
    assert [log_id for log_id, _ in handler.seen] == [1, 2]
    # When it stops while both are in flight
    stopping = asyncio.create_task(consumer.stop(grace_s=5))
    await asyncio.sleep(0.01)
    handler.hold.set()
    await stopping
    await broker.settle_down()
    # Then the two in flight were finished and acked, and nothing else was taken
    assert sorted(o.message_id for o in broker.ready(RESPONSES_0)) == ["1-1", "2-1"]
    assert [e.message_id for e in broker.ready(DISPATCH_0)] == ["3-1", "4-1", "5-1"]
    assert broker.unacked(DISPATCH_0) == 0


async def test_leave_keeps_a_message_unacked_until_its_channel_closes() -> None:
    broker, publisher = await ready_broker()

    async def leave(item: DispatchMessage, delivery: Delivery) -> Settle:
        return Settle.LEAVE

    consumer = MessageConsumer(broker, leave, stage="sender", prefetch=5, decode=wire.decode_dispatch)
    await consumer.start(TOPOLOGY)
    await consumer.subscribe([DISPATCH_0])
    await put(publisher, DISPATCH_EXCHANGE, [wire.dispatch(dispatch(1))])
    await broker.settle_down()
    assert broker.unacked(DISPATCH_0) == 1
    await consumer.cancel()
    assert consumer.channel is not None
    await consumer.channel.close()
    assert [e.message_id for e in broker.ready(DISPATCH_0)] == ["1-1"]
    assert broker.queues[DISPATCH_0].returned[0].redelivered


async def test_a_retried_subscribe_does_not_consume_a_queue_twice() -> None:
    broker, _ = await ready_broker()
    consumer = await sender_consumer(broker, SenderLike(await broker.channel()))
    await consumer.subscribe([DISPATCH_0, DISPATCH_0])
    assert len(broker.queues[DISPATCH_0].consumers) == 1


async def test_two_consumers_in_one_process_each_keep_their_own_prefetch() -> None:
    # Given an urgent lane (prefetch 1) and a bulk lane (prefetch 3), both holding every message
    broker = MemoryBroker()
    publisher = await broker.channel()
    for name in ("urgent", "bulk"):
        broker.queue(name)
        broker.bind(name, name)
    gates = asyncio.Event()
    held: dict[str, int] = {"urgent": 0, "bulk": 0}

    def holding(lane: str):  # type: ignore[no-untyped-def]
        async def handler(item: DispatchMessage, delivery: Delivery) -> Settle:
            held[lane] += 1
            await gates.wait()
            return Settle.ACK

        return handler

    for lane, prefetch in (("urgent", 1), ("bulk", 3)):
        lane_consumer = MessageConsumer(
            broker, holding(lane), stage=lane, prefetch=prefetch, decode=wire.decode_dispatch
        )
        await lane_consumer.start()
        await lane_consumer.subscribe([lane])
    # When five messages are waiting in each
    for lane in ("urgent", "bulk"):
        await put(publisher, lane, [wire.dispatch(dispatch(i)) for i in range(1, 6)])
    await asyncio.sleep(0.01)
    # Then each lane holds at most its own prefetch
    assert held == {"urgent": 1, "bulk": 3}
    gates.set()
    await broker.settle_down()
    assert held == {"urgent": 5, "bulk": 5}


# -- batches ----------------------------------------------------------------------------------------


class Applier:
    """A responder-like batch handler: refusals and stops are scripted per log id."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.one_by_one: list[int] = []
        self.acked: list[tuple[list[int], int]] = []
        self.refuse_batches = False
        self.refused: set[int] = set()
        self.stop_at: int | None = None
        self.failing = False
        self.during_apply: asyncio.Event | None = None
        self.resume: asyncio.Event | None = None

    async def apply_batch(self, items: Sequence[OutcomeMessage | wire.ReceiptMessage]) -> list[int] | None:
        ids = [i.log_id for i in items]
        self.batches.append(ids)
        resume = self.resume
        if self.during_apply is not None and resume is not None:
            self.during_apply.set()
            await resume.wait()
        if self.failing:
            raise RuntimeError("bug")
        if self.refuse_batches or self.refused & set(ids):
            raise BatchRefused("the database refused the batch")
        if self.stop_at is not None and self.stop_at in ids:
            return None
        return ids

    async def apply_one(self, item: OutcomeMessage | wire.ReceiptMessage) -> list[int] | None:
        self.one_by_one.append(item.log_id)
        if item.log_id in self.refused:
            raise MessageRefused("value out of range")
        if item.log_id == self.stop_at:
            return None
        return [item.log_id]

    async def after_ack(self, results: list[list[int]], acked: int) -> None:
        self.acked.append(([i for r in results for i in r], acked))


async def batch_consumer(broker: MemoryBroker, size: int = 10) -> BatchConsumer[wire.Response]:
    consumer = BatchConsumer(
        broker,
        stage="responder",
        prefetch=size,
        decode=lambda m: wire.decode_response(m, 10_000),
        batch_size=size,
        batch_wait_s=0.05,
    )
    await consumer.start(TOPOLOGY)
    await consumer.subscribe([RESPONSES_0])
    return consumer


def responder_channel(broker: MemoryBroker) -> MemoryChannel:
    channel = broker.channels[1]
    assert isinstance(channel, MemoryChannel)
    return channel


async def one_batch(consumer: BatchConsumer[wire.Response], applier: Applier) -> bool:
    await asyncio.sleep(0.01)
    batch = await consumer.next_batch(asyncio.Event())
    return await consumer.handle_batch(applier, batch)


async def test_a_batch_is_acked_with_one_multiple_ack_on_its_highest_tag() -> None:
    broker, publisher = await ready_broker()
    consumer = await batch_consumer(broker)
    applier = Applier()
    await put(publisher, RESPONSES_EXCHANGE, [wire.outcome(outcome(i)) for i in range(1, 6)])
    assert await one_batch(consumer, applier)
    assert applier.batches == [[1, 2, 3, 4, 5]]
    assert responder_channel(broker).acks == [(5, True)]
    assert applier.acked == [([1, 2, 3, 4, 5], 5)]
    assert broker.unacked(RESPONSES_0) == 0


async def test_poison_in_a_batch_is_settled_on_its_own_and_the_rest_acked() -> None:
    broker, publisher = await ready_broker()
    consumer = await batch_consumer(broker)
    applier = Applier()
    await put(
        publisher,
        RESPONSES_EXCHANGE,
        [wire.outcome(outcome(1)), garbage(2), wire.outcome(outcome(3)), wire.dispatch(dispatch(4))],
    )
    assert await one_batch(consumer, applier)
    assert applier.batches == [[1, 3]]
    assert dlq_ids(broker) == ["bad-2", "4-1"]
    assert responder_channel(broker).acks == [(2, False), (4, False), (3, True)]
    assert broker.unacked(RESPONSES_0) == 0


async def test_a_refused_batch_is_applied_one_by_one_and_only_the_refused_message_is_dead_lettered() -> None:
    broker, publisher = await ready_broker()
    consumer = await batch_consumer(broker)
    applier = Applier()
    applier.refused = {2}
    await put(publisher, RESPONSES_EXCHANGE, [wire.outcome(outcome(i)) for i in (1, 2, 3)])
    assert await one_batch(consumer, applier)
    assert applier.one_by_one == [1, 2, 3]
    assert dlq_ids(broker) == ["2-1"]
    assert applier.acked == [([1, 3], 2)]
    assert broker.unacked(RESPONSES_0) == 0


async def test_a_batch_cut_short_by_a_stop_is_left_unacked() -> None:
    broker, publisher = await ready_broker()
    consumer = await batch_consumer(broker)
    applier = Applier()
    applier.stop_at = 2
    await put(publisher, RESPONSES_EXCHANGE, [wire.outcome(outcome(i)) for i in (1, 2, 3)])
    assert not await one_batch(consumer, applier)
    assert broker.unacked(RESPONSES_0) == 3
    assert applier.acked == []


async def test_one_by_one_stopping_acks_what_was_applied_and_leaves_the_rest() -> None:
    broker, publisher = await ready_broker()
    consumer = await batch_consumer(broker)
    applier = Applier()
    applier.refuse_batches = True
    applier.stop_at = 3
    await put(publisher, RESPONSES_EXCHANGE, [wire.outcome(outcome(i)) for i in (1, 2, 3, 4)])
    assert not await one_batch(consumer, applier)
    assert applier.one_by_one == [1, 2, 3]
    assert responder_channel(broker).acks == [(2, True)]
    assert broker.unacked(RESPONSES_0) == 2


async def test_a_failing_batch_is_requeued_not_crashed_on() -> None:
    broker, publisher = await ready_broker()
    consumer = await batch_consumer(broker)
    applier = Applier()
    applier.failing = True
    await put(publisher, RESPONSES_EXCHANGE, [wire.outcome(outcome(i)) for i in (1, 2)])
    assert await one_batch(consumer, applier)
    applier.failing = False
    await asyncio.sleep(0.01)
    again = await consumer.next_batch(asyncio.Event())
    assert [d.message.redelivered for d in again] == [True, True]
    assert await consumer.handle_batch(applier, again)
    assert applier.batches == [[1, 2], [1, 2]]
    assert broker.unacked(RESPONSES_0) == 0


async def test_a_broker_restart_during_a_batch_redelivers_it_without_a_crash() -> None:
    # Given a batch being applied
    broker, publisher = await ready_broker()
    consumer = await batch_consumer(broker)
    applier = Applier()
    during, resume = asyncio.Event(), asyncio.Event()
    applier.during_apply, applier.resume = during, resume
    await put(publisher, RESPONSES_EXCHANGE, [wire.outcome(outcome(i)) for i in (1, 2)])
    handled = asyncio.create_task(one_batch(consumer, applier))
    await during.wait()
    # When the broker restarts before the batch is acked
    broker.restart()
    applier.during_apply = applier.resume = None
    resume.set()
    # Then its multiple ack is dropped quietly (the channel it came on is gone) ...
    assert await handled
    # ... and the batch comes again on the restored channel and is acked (applying twice is harmless)
    assert await one_batch(consumer, applier)
    assert applier.batches == [[1, 2], [1, 2]]
    assert broker.unacked(RESPONSES_0) == 0 and broker.ready(RESPONSES_0) == []


@settings(max_examples=40)
@given(
    kinds=st.lists(st.sampled_from(["good", "garbage", "wrong-kind", "refused"]), min_size=1, max_size=12),
    batch_size=st.integers(1, 6),
)
def test_every_message_leaves_the_queue_exactly_once(kinds: list[str], batch_size: int) -> None:
    async def scenario() -> None:
        broker, publisher = await ready_broker()
        consumer = await batch_consumer(broker, size=batch_size)
        applier = Applier()
        envelopes: list[wire.Envelope] = []
        for n, kind in enumerate(kinds, start=1):
            if kind == "garbage":
                envelopes.append(garbage(n))
            elif kind == "wrong-kind":
                envelopes.append(wire.dispatch(dispatch(n)))
            else:
                envelopes.append(wire.outcome(outcome(n)))
                if kind == "refused":
                    applier.refused.add(n)
        await put(publisher, RESPONSES_EXCHANGE, envelopes)
        stop = asyncio.Event()
        running = asyncio.create_task(consumer.run(applier, stop))
        for _ in range(200):
            await asyncio.sleep(0.005)
            if broker.unacked(RESPONSES_0) == 0 and not broker.ready(RESPONSES_0) and consumer.inbox.empty():
                break
        stop.set()
        await running
        applied = sorted(i for ids, _ in applier.acked for i in ids)
        assert applied == [n for n, kind in enumerate(kinds, start=1) if kind == "good"]
        assert len(dlq_ids(broker)) == sum(kind != "good" for kind in kinds)
        assert broker.unacked(RESPONSES_0) == 0 and broker.ready(RESPONSES_0) == []

    asyncio.run(scenario())


class HoldsSome(SenderLike):
    """A sender-like handler that keeps the given logs in their handler until ``release`` is set."""

    def __init__(self, publisher: Channel, held: set[int]) -> None:
        super().__init__(publisher)
        self.held = held
        self.release = asyncio.Event()

    async def __call__(self, item: DispatchMessage, delivery: Delivery) -> Settle:
        if item.log_id in self.held:
            await self.release.wait()
        return await super().__call__(item, delivery)


def consumer_channel(consumer: MessageConsumer[DispatchMessage]) -> MemoryChannel:
    assert isinstance(consumer.channel, MemoryChannel)
    return consumer.channel


async def test_acks_that_fall_due_together_go_as_one_multiple_ack() -> None:
    broker, publisher = await ready_broker()
    consumer = await sender_consumer(broker, SenderLike(await broker.channel()), prefetch=50)
    await put(publisher, DISPATCH_EXCHANGE, [wire.dispatch(dispatch(i)) for i in range(1, 31)])
    await broker.settle_down()
    acks = consumer_channel(consumer).acks
    assert broker.unacked(DISPATCH_0) == 0 and broker.ready(DISPATCH_0) == []
    assert len(acks) < 30 and acks[-1] == (30, True)


async def test_a_slow_message_never_holds_back_the_acks_or_the_window_of_those_behind_it() -> None:
    # Given a prefetch of 3 and a handler that keeps log 1 until released
    broker, publisher = await ready_broker()
    handler = HoldsSome(await broker.channel(), held={1})
    consumer = await sender_consumer(broker, handler, prefetch=3)
    # When 20 dispatches arrive
    await put(publisher, DISPATCH_EXCHANGE, [wire.dispatch(dispatch(i)) for i in range(1, 21)])
    for _ in range(3_000):  # up to 30 s: a guard against a stall, not a performance bound
        if len(broker.ready(RESPONSES_0)) >= 19:
            break
        await asyncio.sleep(0.01)
    for _ in range(10):
        await asyncio.sleep(0)
    # Then the 19 behind log 1 went through its window and were acked one by one meanwhile
    assert len(broker.ready(RESPONSES_0)) == 19 and broker.unacked(DISPATCH_0) == 1
    assert (1, True) not in consumer_channel(consumer).acks
    # And once log 1 is done it is acked too, every message exactly once (a second ack of a tag
    # would close the channel and redeliver)
    handler.release.set()
    await broker.settle_down()
    assert broker.unacked(DISPATCH_0) == 0 and broker.ready(DISPATCH_0) == []
    assert all(not redelivered for _, redelivered in handler.seen) and len(handler.seen) == 20


@settings(deadline=None, max_examples=40)
@given(held=st.sets(st.integers(1, 25), max_size=10), prefetch=st.integers(1, 30))
def test_any_mix_of_slow_and_fast_messages_is_acked_exactly_once(held: set[int], prefetch: int) -> None:
    async def scenario() -> None:
        broker, publisher = await ready_broker()
        handler = HoldsSome(await broker.channel(), held=held)
        await sender_consumer(broker, handler, prefetch=prefetch)
        await put(publisher, DISPATCH_EXCHANGE, [wire.dispatch(dispatch(i)) for i in range(1, 26)])
        for _ in range(200):  # the fast ones go by while the slow ones are held
            await asyncio.sleep(0)
        handler.release.set()
        await broker.settle_down()
        assert broker.unacked(DISPATCH_0) == 0 and broker.ready(DISPATCH_0) == []
        assert sorted(log_id for log_id, _ in handler.seen) == list(range(1, 26))
        assert not any(redelivered for _, redelivered in handler.seen)

    asyncio.run(scenario())


async def test_an_ack_that_fails_unexpectedly_loses_only_itself() -> None:
    # Given a consumer whose next ack raises an error nobody expected, and log 1 held in its handler
    broker, publisher = await ready_broker()
    handler = HoldsSome(await broker.channel(), held={1})
    consumer = await sender_consumer(broker, handler, prefetch=50)
    settle = consumer._settle
    failures = [RuntimeError("unexpected")]

    async def flaky(delivery: Delivery, action: str, multiple: bool = False) -> bool:
        if failures:
            raise failures.pop()
        return await settle(delivery, action, multiple)

    consumer._settle = flaky  # type: ignore[method-assign]
    # When logs 2 and 3 are done behind it (acked one by one: log 1 blocks a multiple ack)
    await put(publisher, DISPATCH_EXCHANGE, [wire.dispatch(dispatch(i)) for i in (1, 2, 3)])
    for _ in range(3_000):
        if len(broker.ready(RESPONSES_0)) >= 2:
            break
        await asyncio.sleep(0.01)
    for _ in range(20):
        await asyncio.sleep(0)
    # Then only the failed ack is missing: log 3 was acked after it
    assert broker.unacked(DISPATCH_0) == 2  # log 1 (held) and log 2 (its ack failed)
    # ... and once log 1 is done it is acked too; log 2 waits unacked for its channel to close (the broker
    # then redelivers it, and the handlers are idempotent), as an unsettled message always did
    handler.release.set()
    await broker.settle_down()
    assert broker.unacked(DISPATCH_0) == 1 and broker.ready(DISPATCH_0) == []
