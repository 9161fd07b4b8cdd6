"""LISTEN for logs that became due (migration 0011's insert trigger), so the poller need not poll for them.

A notification only shortens the wait: the poller still polls every ``poll_interval_s`` (retries whose
backoff ran out, resumed campaigns and a lost listening connection are found that way).
"""

from __future__ import annotations

import asyncio

import asyncpg

from shared.bus.topology import LANES, Lane, lane_of
from shared.runtime.logs import get_logger

CHANNEL = "switchboard_due"
LISTEN_TIMEOUT_S = 5.0

log = get_logger("poller")


class DueSignal:
    """Per lane, set when PostgreSQL announces due logs of that lane; a dedicated connection, re-opened
    when it is lost. The payload is the most urgent priority inserted: ``0`` wakes both lanes (a
    statement may insert bulk logs too), ``1``/``2`` the bulk lane."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.events = {lane: asyncio.Event() for lane in LANES}
        self.connection: asyncpg.Connection | None = None

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            most_urgent = lane_of(int(payload))
        except ValueError:
            most_urgent = Lane.URGENT
        for lane in LANES[LANES.index(most_urgent) :]:
            self.events[lane].set()

    def _on_lost(self, _conn: object) -> None:
        self.connection = None
        for event in self.events.values():  # poll now: notifications may have been missed
            event.set()

    async def ensure_listening(self) -> None:
        if self.connection is not None and not self.connection.is_closed():
            return
        connection: asyncpg.Connection | None = None
        try:
            async with asyncio.timeout(LISTEN_TIMEOUT_S):  # the LISTEN too: a server may accept, then hang
                connection = await asyncpg.connect(self.dsn)
                connection.add_termination_listener(self._on_lost)
                await connection.add_listener(CHANNEL, self._on_notify)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("listen_failed", error=repr(exc)[:300])
            if connection is not None:
                connection.terminate()
            return
        self.connection = connection

    async def wait(self, lane: Lane, timeout: float, stop: asyncio.Event) -> None:
        """Until a notification for ``lane`` arrives, ``stop`` is set or ``timeout`` passes; then clear it."""
        event = self.events[lane]
        if timeout > 0 and not event.is_set() and not stop.is_set():
            waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        event.clear()

    async def close(self) -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            try:
                await connection.close(timeout=2)
            except Exception as exc:
                log.warning("listen_close_failed", error=repr(exc)[:300])
