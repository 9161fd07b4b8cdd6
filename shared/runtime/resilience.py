"""Waiting for the broker and the database: bounded exponential backoff, interruptible by shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.core.errors import BackendUnusable, ConfigurationError
from shared.runtime.logs import get_logger
from shared.runtime.startup import Endpoint, explain

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
    what: str,
    action: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    cap: float = 10.0,
    endpoint: Endpoint | None = None,
) -> T | None:
    """Run ``action`` until it succeeds or ``stop`` is set (then ``None``); logs each failure.

    With ``endpoint`` (the database or broker ``action`` connects to), a failure that retrying cannot
    fix (shared/runtime/startup.py) raises :class:`BackendUnusable` with its one-line explanation, and the
    others are logged with theirs. A :class:`ConfigurationError` is never retried.
    """
    backoff = Backoff(cap=cap)
    while not stop.is_set():
        try:
            return await action()
        except (asyncio.CancelledError, ConfigurationError):
            raise
        except Exception as exc:
            problem = explain(endpoint, exc) if endpoint is not None else None
            if problem is not None and problem.permanent:
                raise BackendUnusable(problem.line()) from exc
            delay = backoff.next()
            if problem is not None:
                log.warning(
                    "retrying",
                    what=what,
                    error=problem.message,
                    hint=problem.hint,
                    retry_in_s=round(delay, 2),
                )
            else:
                log.warning("retrying", what=what, error=repr(exc), retry_in_s=round(delay, 2))
            if await sleep_or_stop(stop, delay):
                break
    return None
