"""shared.bus.consumer.subscribe_shards: a broker that goes away while a replica waits to become a
standby must not crash the replica."""

from __future__ import annotations

import asyncio

from shared.bus.consumer import subscribe_shards
from shared.runtime.settings import ShardConsumer


async def test_a_failing_consumer_check_is_asked_again_instead_of_crashing() -> None:
    settings = ShardConsumer(shards=4, consume_shards=[0, 1], standby_delay_s=0, standby_wait_s=10)
    subscribed: list[list[int]] = []
    checks: dict[int, int] = {}

    async def subscribe(shards: list[int]) -> None:
        subscribed.append(list(shards))

    async def has_consumer(shard: int) -> bool:
        checks[shard] = checks.get(shard, 0) + 1
        if checks[shard] == 1:
            raise RuntimeError("connection closed")  # the broker restarting
        return True

    preferred, standby = await asyncio.wait_for(
        subscribe_shards(subscribe, settings, asyncio.Event(), has_consumer), timeout=5
    )
    assert (preferred, standby) == ([0, 1], [2, 3])
    assert subscribed == [[0, 1], [2, 3]]
    assert checks == {2: 2, 3: 2}


async def test_a_failing_standby_subscribe_is_retried() -> None:
    settings = ShardConsumer(shards=2, consume_shards=[0], standby_delay_s=0, standby_wait_s=10)
    attempts: list[list[int]] = []

    async def subscribe(shards: list[int]) -> None:
        attempts.append(list(shards))
        if len(attempts) == 2:
            raise ConnectionError("broker away")

    async def has_consumer(shard: int) -> bool:
        return True

    result = await asyncio.wait_for(
        subscribe_shards(subscribe, settings, asyncio.Event(), has_consumer), timeout=10
    )
    assert result == ([0], [1])
    assert attempts == [[0], [1], [1]]
