"""Stopping work that may hang on a backend (shared/resilience.py): a grace period, then cancellation,
repeated for work that waits shielded (as a cancelled asyncpg query's release does)."""

from __future__ import annotations

import asyncio

import pytest

from shared.runtime import resilience
from shared.runtime.resilience import cancel_within, finish_or_cancel

GRACE_S = 0.05


@pytest.fixture(autouse=True)
def quick_cancels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resilience, "CANCEL_EVERY_S", 0.02)


async def test_work_that_finishes_within_the_grace_period_returns_its_result() -> None:
    stop = asyncio.Event()

    async def loop_until_stopped() -> str:
        await stop.wait()  # a loop that checks ``stop`` between its steps
        return "done"

    stop.set()
    assert await finish_or_cancel(loop_until_stopped(), stop, GRACE_S, "loop") == "done"


async def test_work_that_ignores_stop_is_cancelled_after_the_grace_period() -> None:
    # Given work blocked on something that never answers
    stop = asyncio.Event()
    hung = asyncio.Event()
    cancelled = []

    async def blocked() -> str:
        try:
            await hung.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    # When stop is set
    running = asyncio.ensure_future(finish_or_cancel(blocked(), stop, GRACE_S, "blocked"))
    await asyncio.sleep(0)
    stop.set()
    # Then it is cancelled and nothing is returned
    assert await running is None
    assert cancelled == [True]


async def test_work_waiting_shielded_after_a_cancel_is_freed_by_the_next_one() -> None:
    # Given work whose cleanup, on cancellation, waits shielded for a server that never answers
    never = asyncio.Event()
    cleanup = asyncio.ensure_future(never.wait())

    async def query_then_release() -> None:
        try:
            await never.wait()  # the query
        finally:
            await asyncio.shield(cleanup)  # the pool's release, waiting for the cancellation to end

    task = asyncio.ensure_future(query_then_release())
    await asyncio.sleep(0)
    # When it is cancelled within bounds
    assert await cancel_within(task, "query") is True
    # Then it is done, though the shielded wait still runs (the pool's termination ends it)
    assert task.cancelled() and not cleanup.done()
    cleanup.cancel()


async def test_work_that_refuses_every_cancellation_is_left_behind_after_the_attempts() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                continue

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    assert await cancel_within(task, "stubborn") is False
    assert not task.done()
    release.set()
    task.cancel()
    await asyncio.wait({task})


async def test_an_error_of_the_work_before_stop_is_raised() -> None:
    async def broken() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await finish_or_cancel(broken(), asyncio.Event(), GRACE_S, "broken")


async def test_when_the_caller_is_cancelled_the_work_is_cancelled_too() -> None:
    stop = asyncio.Event()
    hung = asyncio.Event()
    work = asyncio.ensure_future(hung.wait())
    caller = asyncio.ensure_future(finish_or_cancel(work, stop, GRACE_S, "work"))
    await asyncio.sleep(0)
    caller.cancel()
    await asyncio.wait({caller})
    await asyncio.sleep(0)
    assert work.cancelled()
