"""services/sender/ordering.py: per-recipient serialisation of actions."""

from __future__ import annotations

import asyncio
import random

import pytest

from services.sender.ordering import RecipientSerializer


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def action(self, key: str, n: int, sleep_s: float):  # type: ignore[no-untyped-def]
        async def run() -> int:
            self.running[key] = self.running.get(key, 0) + 1
            self.peak[key] = max(self.peak.get(key, 0), self.running[key])
            self.events.append(("start", key, n))
            await asyncio.sleep(sleep_s)
            self.events.append(("end", key, n))
            self.running[key] -= 1
            return n

        return run


async def test_same_key_runs_one_at_a_time_in_arrival_order() -> None:
    serializer = RecipientSerializer()
    recorder = Recorder()
    sleeps = [0.03, 0.0, 0.02, 0.001, 0.01]
    tasks = [
        asyncio.create_task(serializer.run("a", recorder.action("a", n, s))) for n, s in enumerate(sleeps)
    ]
    assert await asyncio.gather(*tasks) == list(range(len(sleeps)))
    expected = [event for n in range(len(sleeps)) for event in (("start", "a", n), ("end", "a", n))]
    assert recorder.events == expected
    assert recorder.peak["a"] == 1
    assert len(serializer) == 0


@pytest.mark.parametrize("seed", range(8))
async def test_interleaved_keys_keep_per_key_order(seed: int) -> None:
    rng = random.Random(seed)
    serializer = RecipientSerializer()
    recorder = Recorder()
    arrivals = [(rng.choice("abc"), n, rng.choice([0.0, 0.001, 0.003])) for n in range(30)]
    tasks = [asyncio.create_task(serializer.run(k, recorder.action(k, n, s))) for k, n, s in arrivals]
    await asyncio.gather(*tasks)
    for key in "abc":
        mine = [(kind, n) for kind, k, n in recorder.events if k == key]
        arrived = [n for k, n, _ in arrivals if k == key]
        assert mine == [event for n in arrived for event in (("start", n), ("end", n))]
        assert recorder.peak.get(key, 1) == 1
    assert len(serializer) == 0


async def test_different_keys_run_concurrently() -> None:
    serializer = RecipientSerializer()
    both_started = asyncio.Barrier(2)

    async def meet() -> str:
        await both_started.wait()  # deadlocks if the keys were serialised
        return "met"

    async with asyncio.timeout(2):
        results = await asyncio.gather(serializer.run("a", meet), serializer.run("b", meet))
    assert list(results) == ["met", "met"]
    assert len(serializer) == 0


async def test_an_exception_does_not_block_the_next_action() -> None:
    serializer = RecipientSerializer()

    async def boom() -> None:
        await asyncio.sleep(0.001)
        raise RuntimeError("provider exploded")

    async def fine() -> str:
        return "ok"

    first = asyncio.create_task(serializer.run("a", boom))
    second = asyncio.create_task(serializer.run("a", fine))
    async with asyncio.timeout(2):
        with pytest.raises(RuntimeError, match="exploded"):
            await first
        assert await second == "ok"
    assert len(serializer) == 0


async def test_tail_is_registered_while_an_action_runs_and_removed_after() -> None:
    serializer = RecipientSerializer()
    release = asyncio.Event()
    seen: list[int] = []

    async def wait_for_release() -> None:
        seen.append(len(serializer))
        await release.wait()

    task = asyncio.create_task(serializer.run("a", wait_for_release))
    await asyncio.sleep(0)
    assert seen == [1]
    release.set()
    await task
    assert len(serializer) == 0


async def test_cancelled_waiter_does_not_let_the_next_action_overtake() -> None:
    serializer = RecipientSerializer()
    release = asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        order.append("first started")
        await release.wait()
        order.append("first ended")

    async def noted(name: str) -> None:
        order.append(f"{name} started")

    one = asyncio.create_task(serializer.run("a", first))
    two = asyncio.create_task(serializer.run("a", lambda: noted("second")))
    three = asyncio.create_task(serializer.run("a", lambda: noted("third")))
    await asyncio.sleep(0.01)
    two.cancel()
    await asyncio.sleep(0.01)
    release.set()
    async with asyncio.timeout(2):
        await asyncio.gather(one, three)
    with pytest.raises(asyncio.CancelledError):
        await two
    assert order == ["first started", "first ended", "third started"]
