"""Remembering the reports already taken, so that a captured report cannot be played again.

The SMS gateway scheme signs no time at all, and a WhatsApp body's time is only as fresh as the
provider made it: a report is known by its signature (HMAC over everything it says), remembered for
the replay window once it has been published, in a bounded memory (the oldest go first). A report
seen again within the window is answered 200 (the provider stops) and published nothing.
Per replica and in memory: a replay to another replica, or after a restart, reaches the responder,
which applies a receipt only to the log its provider sent with that vendor reference, and records
each (log, attempt, status) once.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable


class ReplayGuard:
    def __init__(self, window_s: float, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.capacity = capacity
        self.clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    @staticmethod
    def key(kind: str, provider: str, signature: str) -> bytes:
        return hashlib.sha256(f"{kind}\0{provider}\0{signature}".encode()).digest()

    def seen(self, key: bytes) -> bool:
        self._expire()
        return key in self._seen

    def remember(self, key: bytes) -> None:
        self._seen[key] = self.clock() + self.window_s
        self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def _expire(self) -> None:
        now = self.clock()
        while self._seen:
            key, until = next(iter(self._seen.items()))
            if until > now:
                return
            del self._seen[key]

    def __len__(self) -> int:
        return len(self._seen)
