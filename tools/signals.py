"""Harness hygiene: a harness stopped by SIGTERM (a CI timeout, a supervisor) or Ctrl-C unwinds like an
exception, so that its ``finally`` blocks stop every child process and remove the vhost and database it
created, and then exits 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """The harness was asked to stop by a signal; its cleanup has run."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


async def cancelled_by_signals(work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``; SIGTERM or SIGINT cancels it (its cleanup runs) and raises :class:`Interrupted`,
    also when ``work`` handled the cancellation itself and returned."""
    task: asyncio.Task[T] = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        task.cancel()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        result = await task
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    if received:
        raise Interrupted(received[0])
    return result


def run_harness(work: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(work)`` for a harness: on SIGTERM or Ctrl-C, clean up and exit 143 or 130."""
    try:
        return asyncio.run(cancelled_by_signals(work))
    except Interrupted as stopped:
        print(f"{stopped}; its child processes are stopped and what it created is removed", file=sys.stderr)
        sys.exit(stopped.exit_status)
