"""services/sender over the in-memory broker: the real Sender wiring (consumer, outcome publisher,
circuit-event broadcast) with a fake provider router, no RabbitMQ."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from services.sender.__main__ import Sender
from services.sender.circuits import CircuitBoard
from services.sender.settings import SenderSettings
from services.sender.starts import StartCheck
from shared.bus import wire
from shared.bus.memory import Fault, MemoryBroker
from shared.bus.topology import DISPATCH, RESPONSES, Lane, Topology, lane_exchange, shard_queue
from shared.core.circuit import CircuitEvent, CircuitPolicy, CircuitState
from shared.core.models import DispatchMessage, OutcomeClass, OutcomeMessage
from shared.runtime.settings import LANE_NAMES

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SETTINGS = SenderSettings(shards=1, standby_all=False, prefetch=10, urgent_prefetch=5)
DISPATCH_EXCHANGE = lane_exchange(DISPATCH, Lane.BULK)
RESPONSES_EXCHANGE = lane_exchange(RESPONSES, Lane.BULK)
DISPATCH_0 = shard_queue(DISPATCH_EXCHANGE, 0)
RESPONSES_0 = shard_queue(RESPONSES_EXCHANGE, 0)
URGENT_DISPATCH_0 = shard_queue(lane_exchange(DISPATCH, Lane.URGENT), 0)
URGENT_RESPONSES_0 = shard_queue(lane_exchange(RESPONSES, Lane.URGENT), 0)


def dispatch(log_id: int, recipient: str = "+14155550100", priority: int = 1) -> DispatchMessage:
    return DispatchMessage(
        log_id=log_id,
        attempt=1,
        tenant="acme",
        channel="sms",
        recipient=recipient,
        payload={"body": "hi"},
        priority=priority,
        created_at=AT,
        claimed_at=AT,
    )


class FakeRouter:
    """Answers every attempt with a success, remembering the order of the calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.bulk_provider_up = asyncio.Event()  # bulk attempts wait for it (a slow provider)
        self.bulk_provider_up.set()

    async def attempt(self, message: DispatchMessage) -> OutcomeMessage:
        self.calls.append(message.log_id)
        await asyncio.sleep(0)
        if message.priority > 0:
            await self.bulk_provider_up.wait()
        return OutcomeMessage(
            log_id=message.log_id,
            attempt=message.attempt,
            recipient=message.recipient,
            channel=message.channel,
            provider="mocksms",
            outcome=OutcomeClass.SUCCESS,
        )


class FakeLive:
    """The database's view: which (log, attempt) the log still waits for; or unreachable."""

    def __init__(self, stale: set[tuple[int, int]] | None = None, fail: bool = False) -> None:
        self.stale = stale or set()
        self.fail = fail

    async def begin(self, log_id: int, attempt: int, provider: str) -> StartCheck:
        raise AssertionError("the sender itself records no start")

    async def live(self, log_id: int, attempt: int) -> bool:
        if self.fail:
            raise OSError("database gone")
        return (log_id, attempt) not in self.stale


async def running_sender(
    broker: MemoryBroker, starts: FakeLive | None = None, settings: SenderSettings = SETTINGS
) -> tuple[Sender, FakeRouter]:
    router = FakeRouter()
    sender = Sender(settings, broker, router, starts)  # type: ignore[arg-type]
    await sender.start()
    await sender.subscribe(settings, asyncio.Event())
    return sender, router


async def publish(broker: MemoryBroker, messages: list[DispatchMessage], lane: Lane = Lane.BULK) -> None:
    channel = await broker.channel()
    await channel.declare(Topology(shards=1))
    exchange = lane_exchange(DISPATCH, lane)
    assert all(e is None for e in await channel.publish(exchange, [wire.dispatch(m) for m in messages]))


async def test_an_urgent_dispatch_is_attempted_while_the_bulk_lane_is_stuck_and_answers_in_its_lane() -> None:
    # Given a sender whose bulk prefetch is full of attempts waiting on a slow provider
    broker = MemoryBroker()
    sender, router = await running_sender(broker)
    router.bulk_provider_up.clear()
    await publish(broker, [dispatch(n, f"+1415555{n:04d}") for n in range(1, 31)])
    await asyncio.sleep(0.01)
    assert len(router.calls) == SETTINGS.prefetch  # the rest wait in the bulk queue
    # When an urgent dispatch arrives in its lane
    await publish(broker, [dispatch(99, "+14155550000", priority=0)], Lane.URGENT)
    await asyncio.sleep(0.01)
    # Then it is attempted at once and its outcome is in the urgent responses lane, acked
    assert router.calls[-1] == 99
    assert [e.message_id for e in broker.ready(URGENT_RESPONSES_0)] == ["99-1"]
    assert broker.unacked(URGENT_DISPATCH_0) == 0 and broker.ready(RESPONSES_0) == []
    # ... and the bulk lane drains once the provider answers
    router.bulk_provider_up.set()
    await broker.settle_down()
    while len(broker.ready(RESPONSES_0)) < 30:
        await asyncio.sleep(0.01)
        await broker.settle_down()
    assert broker.unacked(DISPATCH_0) == 0
    await sender.stop(grace_s=1)


async def test_senders_of_one_lane_each_consume_only_their_lane() -> None:
    # Given an urgent-only sender and a bulk-only sender
    broker = MemoryBroker()
    urgent, urgent_router = await running_sender(
        broker, settings=SETTINGS.model_copy(update={"lanes": ["urgent"]})
    )
    bulk, bulk_router = await running_sender(broker, settings=SETTINGS.model_copy(update={"lanes": ["bulk"]}))
    # When dispatches arrive in both lanes
    await publish(broker, [dispatch(1, "+14155550001")])
    await publish(broker, [dispatch(2, "+14155550002", priority=0)], Lane.URGENT)
    await broker.settle_down()
    # Then each was attempted by the sender of its lane and answered in its lane
    assert urgent_router.calls == [2] and bulk_router.calls == [1]
    assert [e.message_id for e in broker.ready(URGENT_RESPONSES_0)] == ["2-1"]
    assert [e.message_id for e in broker.ready(RESPONSES_0)] == ["1-1"]
    assert urgent.lanes == [Lane.URGENT] and bulk.lanes == [Lane.BULK]
    await urgent.stop(grace_s=1)
    await bulk.stop(grace_s=1)


async def test_one_recipients_dispatches_are_attempted_in_order_and_each_acked_after_its_outcome() -> None:
    broker = MemoryBroker()
    _, router = await running_sender(broker)
    await publish(broker, [dispatch(n) for n in range(1, 6)])
    await broker.settle_down()
    assert router.calls == [1, 2, 3, 4, 5]
    assert [e.message_id for e in broker.ready(RESPONSES_0)] == ["1-1", "2-1", "3-1", "4-1", "5-1"]
    assert broker.unacked(DISPATCH_0) == 0 and broker.ready(DISPATCH_0) == []


async def test_an_outcome_refused_once_is_published_again_before_the_ack() -> None:
    broker = MemoryBroker()
    _, router = await running_sender(broker)
    broker.fail_next(RESPONSES_EXCHANGE, Fault.REFUSE)
    await publish(broker, [dispatch(1)])
    await broker.settle_down()
    assert router.calls == [1]  # one provider call: the retry is of the publish, not of the send
    assert [e.message_id for e in broker.ready(RESPONSES_0)] == ["1-1"]
    assert broker.unacked(DISPATCH_0) == 0


async def test_a_stopping_sender_leaves_what_it_has_not_started_unacked() -> None:
    broker = MemoryBroker()
    sender, router = await running_sender(broker)
    await sender.stop(grace_s=1)
    await publish(broker, [dispatch(1)])
    await broker.settle_down()
    assert router.calls == []
    assert [e.message_id for e in broker.ready(DISPATCH_0)] == ["1-1"]


async def test_circuit_events_go_out_on_the_fanout_and_come_back_to_every_replica() -> None:
    broker = MemoryBroker()
    sender, _ = await running_sender(broker)
    board = CircuitBoard(CircuitPolicy(window=4, min_calls=4, open_s=60), "me")
    await sender.listen_circuits("me", board)
    event = CircuitEvent("mocksms", CircuitState.OPEN, origin="peer", owner="peer", open_until=9e9, at=1.0)
    await sender.broadcast(event)
    await broker.settle_down()
    assert board.state("mocksms") == CircuitState.OPEN


async def test_a_stale_copy_is_acked_without_a_provider_call_or_an_outcome() -> None:
    # Given a sender, and a dispatch whose attempt's outcome was applied already (the log moved on)
    broker = MemoryBroker()
    _, router = await running_sender(broker, FakeLive(stale={(2, 1)}))
    # When that copy arrives between two live ones
    await publish(broker, [dispatch(1), dispatch(2), dispatch(3)])
    await broker.settle_down()
    # Then no provider is called for it and no outcome goes out, and it leaves the queue
    assert router.calls == [1, 3]
    assert [e.message_id for e in broker.ready(RESPONSES_0)] == ["1-1", "3-1"]
    assert broker.unacked(DISPATCH_0) == 0 and broker.ready(DISPATCH_0) == []


async def test_without_the_database_a_dispatch_is_still_attempted() -> None:
    broker = MemoryBroker()
    _, router = await running_sender(broker, FakeLive(fail=True))
    await publish(broker, [dispatch(1)])
    await broker.settle_down()
    assert router.calls == [1]
    assert [e.message_id for e in broker.ready(RESPONSES_0)] == ["1-1"]


def test_the_lanes_a_sender_may_be_given_are_the_topologys_lanes() -> None:
    assert set(LANE_NAMES) == {lane.value for lane in Lane}
