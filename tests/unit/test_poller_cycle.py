"""One poller cycle (services/poller/__main__.py, ``poll_once``) over the memory broker, with the claim
and reclaim statements replaced by fakes: a lane reclaims its own expired leases within its room, before
new claims, and polls again at once only when it filled that room."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import pytest

import services.poller.__main__ as poller_main
from services.poller.__main__ import Poller
from services.poller.claims import ClaimedLog
from services.poller.settings import PollerSettings
from shared.bus.memory import MemoryBroker, Stored
from shared.bus.topology import DISPATCH, Lane, lane_queue
from shared.bus.wire import Envelope
from tests.helpers import poller_on_memory_broker, ready_dispatches

URGENT_OR_BULK = {Lane.URGENT: 0, Lane.BULK: 1}


def log(log_id: int, lane: Lane) -> ClaimedLog:
    return ClaimedLog(
        id=log_id,
        attempt=1,
        tenant="t",
        campaign_id=None,
        channel="sms",
        recipient=f"+3161234{log_id:04d}",
        recipient_key=f"+3161234{log_id:04d}",
        ordering_group=f"+3161234{log_id:04d}",
        payload={"body": "x"},
        priority=URGENT_OR_BULK[lane],
        provider=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


class _Pool:
    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[object]:
        yield object()


@dataclass
class Database:
    """Expired leases and due logs per lane, and what each cycle asked of them."""

    expired: dict[Lane, int]
    due: dict[Lane, int]
    calls: list[tuple[str, Lane, int]] = field(default_factory=list)
    next_id: int = 1

    def take(self, pool: dict[Lane, int], lane: Lane, limit: int) -> list[ClaimedLog]:
        count = min(pool[lane], max(limit, 0))
        pool[lane] -= count
        rows = [log(self.next_id + n, lane) for n in range(count)]
        self.next_id += count
        return rows

    async def reclaim_expired(
        self, conn: object, *, lane: Lane, limit: int, lease_s: float
    ) -> list[ClaimedLog]:
        self.calls.append(("reclaim", lane, limit))
        return self.take(self.expired, lane, limit)

    async def claim(self, conn: object, *, lane: Lane, batch_size: int, **_: Any) -> list[ClaimedLog]:
        self.calls.append(("claim", lane, batch_size))
        return self.take(self.due, lane, batch_size)


async def a_poller(
    monkeypatch: pytest.MonkeyPatch, db: Database, batch_size: int = 100
) -> tuple[Poller, MemoryBroker]:
    monkeypatch.setattr(poller_main, "reclaim_expired", db.reclaim_expired)
    monkeypatch.setattr(poller_main, "claim", db.claim)
    # An idle lane is allowed its minimum backlog (200): room min(200, batch_size) while it is empty
    settings = PollerSettings(shards=2, batch_size=batch_size, dispatch_min_backlog=200)
    return await poller_on_memory_broker(settings, cast(asyncpg.Pool, _Pool()))


def ready(broker: MemoryBroker, lane: Lane) -> int:
    return ready_dispatches(broker, lane, shards=2)


@pytest.mark.parametrize("lane", [Lane.URGENT, Lane.BULK])
async def test_a_lane_reclaims_its_own_expired_leases_first_then_claims_with_what_is_left(
    monkeypatch: pytest.MonkeyPatch, lane: Lane
) -> None:
    # Given 30 expired leases and plenty of due logs in each lane, and a room of 100
    db = Database(expired={Lane.URGENT: 30, Lane.BULK: 30}, due={Lane.URGENT: 1000, Lane.BULK: 1000})
    poller, broker = await a_poller(monkeypatch, db)
    # When one cycle of the lane runs
    more = await poller.poll_once(lane)
    # Then it reclaimed its own lane's leases (up to its room), claimed 70 new logs, published 100 into
    # its own lane, left the other lane's leases alone, and polls again at once (it filled its room)
    assert db.calls == [("reclaim", lane, 100), ("claim", lane, 70)]
    other = Lane.BULK if lane is Lane.URGENT else Lane.URGENT
    assert (db.expired[lane], db.expired[other]) == (0, 30)
    assert ready(broker, lane) == 100 and ready(broker, other) == 0
    assert more


async def test_expired_leases_beyond_the_room_wait_for_the_next_cycles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 50 000 expired bulk leases after an outage
    db = Database(expired={Lane.URGENT: 0, Lane.BULK: 50_000}, due={Lane.URGENT: 0, Lane.BULK: 1000})
    poller, broker = await a_poller(monkeypatch, db)
    # When the bulk lane cycles while nothing drains its queues
    first = await poller.poll_once(Lane.BULK)
    second = await poller.poll_once(Lane.BULK)
    third = await poller.poll_once(Lane.BULK)
    # Then two cycles of 100 (the batch size) fill the lane's allowance (200) with reclaims alone, each
    # polling again at once; the third finds no room, asks the database nothing and waits (no spin)
    assert ready(broker, Lane.BULK) == 200
    assert db.expired[Lane.BULK] == 50_000 - 200 and db.due[Lane.BULK] == 1000
    assert (first, second, third) == (True, True, False)
    assert [c for c in db.calls if c[0] == "reclaim"] == [("reclaim", Lane.BULK, 100)] * 2


async def test_a_full_lane_neither_reclaims_nor_claims_and_does_not_poll_again_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an urgent lane holding more than half of its allowance (200) and expired urgent leases
    db = Database(expired={Lane.URGENT: 10, Lane.BULK: 0}, due={Lane.URGENT: 10, Lane.BULK: 0})
    poller, broker = await a_poller(monkeypatch, db)
    envelope = Envelope(b"{}", message_id="m", type="t", routing_key="k")
    broker.queues[lane_queue(DISPATCH, Lane.URGENT, 0)].ready.extend(Stored(envelope) for _ in range(150))
    # When its cycle runs / Then it asks the database nothing and waits
    assert not await poller.poll_once(Lane.URGENT)
    assert db.calls == []


async def test_a_cycle_that_left_room_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given 5 expired leases and 10 due logs in the bulk lane, a room of 100
    db = Database(expired={Lane.URGENT: 0, Lane.BULK: 5}, due={Lane.URGENT: 0, Lane.BULK: 10})
    poller, broker = await a_poller(monkeypatch, db)
    # When its cycle takes all of them / Then it does not poll again at once: nothing more is due
    assert not await poller.poll_once(Lane.BULK)
    assert db.calls == [("reclaim", Lane.BULK, 100), ("claim", Lane.BULK, 95)]
    assert ready(broker, Lane.BULK) == 15
