"""Waiting for the broker and the database: bounded exponential backoff, interruptible by shutdown; and
shutdown itself bounded when one of them stops answering."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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


# A cancelled asyncpg query waits (shielded from further cancellation of the pool's release) for the
# server to confirm the cancellation; a server that does not answer never does. Cancelling again frees
# the waiting task; the pool's bounded close then terminates the connection.
CANCEL_EVERY_S = 1.0
CANCEL_ATTEMPTS = 5


async def cancel_within(task: asyncio.Future[Any], what: str) -> bool:
    """Cancel ``task`` and wait until it is done, cancelling it again every second, at most
    :data:`CANCEL_ATTEMPTS` times; True when it is done (False: it is left behind, and logged). An
    exception it ended with is logged, not raised: it is being stopped."""
    for _ in range(CANCEL_ATTEMPTS):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_EVERY_S)
    if not task.done():
        log.error("task_left_running", what=what, attempts=CANCEL_ATTEMPTS)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.warning("stopped_with_error", what=what, error=repr(task.exception()))
    return True


async def finish_or_cancel(work: Awaitable[T], stop: asyncio.Event, grace_s: float, what: str) -> T | None:
    """Await ``work``; once ``stop`` is set it has ``grace_s`` seconds to return on its own, then it is
    cancelled (:func:`cancel_within`) and ``None`` is returned. For loops that check ``stop`` only between
    steps, a step of which may hang on a backend that stopped answering."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.wait({task}, timeout=grace_s)
        if not task.done():
            log.warning("stop_grace_expired", what=what, grace_s=grace_s)
            await cancel_within(task, what)
            return None
        return task.result()
    finally:
        stopping.cancel()
        if not task.done():  # we were cancelled ourselves
            task.cancel()
