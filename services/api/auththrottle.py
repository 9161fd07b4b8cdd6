"""Failed authentication, per source address: counted, logged, and throttled (pure, clock injected).

A source that failed ``limit`` times within ``window_s`` is refused (429 with Retry-After) without
its key being looked at, until the window has passed: guessing keys costs the guesser, not the
database. Only the most recent ``max_sources`` sources are remembered (bounded memory). The source is
the peer address of the connection (a proxy in front should be the one that throttles clients).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class Window:
    started: float
    failures: int


class AuthThrottle:
    def __init__(self, limit: int, window_s: float, max_sources: int = 50_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_sources = max_sources
        self._sources: OrderedDict[str, Window] = OrderedDict()

    def retry_after(self, source: str, now: float) -> float | None:
        """Seconds until ``source`` may try again, or None if it may try now."""
        window = self._sources.get(source)
        if window is None or now - window.started >= self.window_s:
            return None
        if window.failures < self.limit:
            return None
        return self.window_s - (now - window.started)

    def failed(self, source: str, now: float) -> int:
        """Record one failure; the number of failures of ``source`` in its current window."""
        window = self._sources.get(source)
        if window is None or now - window.started >= self.window_s:
            window = self._sources[source] = Window(now, 0)
        window.failures += 1
        self._sources.move_to_end(source)
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        return window.failures
