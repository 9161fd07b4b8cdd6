"""Per-recipient serialisation: one recipient's messages run one at a time, in arrival order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class RecipientSerializer:
    def __init__(self) -> None:
        self._tails: dict[str, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._tails)

    async def run(self, key: str, action: Callable[[], Awaitable[T]]) -> T:
        # Registering the tail happens before the first await, so arrival order is kept.
        previous = self._tails.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = mine

        def release(_: object = None) -> None:
            mine.set_result(None)
            if self._tails.get(key) is mine:
                del self._tails[key]

        try:
            if previous is not None:
                await asyncio.shield(previous)
            return await action()
        finally:
            if previous is not None and not previous.done():
                # Cancelled while waiting: the next in line must still wait for our predecessor.
                previous.add_done_callback(release)
            else:
                release()
