"""Waiting for the broker and the database: bounded exponential backoff, interruptible by shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.logs import get_logger

T = TypeVar("T")
log = get_logger(__name__)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


class Backoff:
    """Reconnect delays: 0.2 s doubling up to ``cap`` seconds, reset after a success."""

    def __init__(self, first: float = 0.2, cap: float = 10.0) -> None:
        self.first = first
        self.cap = cap
        self.current = first

    def next(self) -> float:
        delay = self.current
        self.current = min(self.current * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.current = self.first


async def retry_until_stopped(
    what: str, action: Callable[[], Awaitable[T]], stop: asyncio.Event, cap: float = 10.0
) -> T | None:
    """Run ``action`` until it succeeds or ``stop`` is set (then ``None``); logs each failure."""
    backoff = Backoff(cap=cap)
    while not stop.is_set():
        try:
            return await action()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = backoff.next()
            log.warning("retrying", what=what, error=repr(exc), retry_in_s=round(delay, 2))
            if await sleep_or_stop(stop, delay):
                break
    return None
