"""Every provider's circuit breaker in one sender replica, its gauge, and its share of the broadcast.

State changes go out on the ``circuit-events`` fanout exchange; each replica reads them from its
own exclusive queue and adopts them (shared/core/circuit.py decides how), so a provider that fails for
one replica is avoided by all of them within milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from services.sender.metrics import CIRCUIT_STATE, CIRCUIT_TRANSITIONS
from shared.core.circuit import Admission, CircuitBreaker, CircuitEvent, CircuitPolicy, CircuitState
from shared.core.models import OutcomeClass
from shared.runtime.logs import get_logger

log = get_logger("sender.circuits")

# What counts against a provider's circuit: every answer that is not the provider doing its job or
# refusing this message for good: 5xx, 429, timeouts, lost connections, unavailability (recoverable).
# The breaker opens on a failure *ratio* over its window (CircuitPolicy), so a handful of random
# failures among successes does not open it, and one recipient's repeated failures count once.
FAILURES = frozenset({OutcomeClass.TRANSIENT, OutcomeClass.RECOVERABLE, OutcomeClass.UNKNOWN})

Publish = Callable[[CircuitEvent], Awaitable[None]]

# A webhook provider has a circuit per destination host (``hooks@example.com``): one tenant's failing
# endpoint must not open ``hooks`` for every tenant. Those are many, so they get no gauge of their own
# and closed ones are forgotten past this many breakers.
HOST_SEPARATOR = "@"
MAX_BREAKERS = 10_000


def is_host_circuit(key: str) -> bool:
    return HOST_SEPARATOR in key


def metric_label(key: str) -> str:
    """The provider a circuit belongs to (host circuits are counted under their provider)."""
    return key.split(HOST_SEPARATOR, 1)[0]


def is_failure(outcome: OutcomeClass) -> bool:
    return outcome in FAILURES


class CircuitBoard:
    def __init__(
        self,
        policy: CircuitPolicy,
        replica: str,
        publish: Publish | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.replica = replica
        self.publish = publish
        self.clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def breaker(self, provider: str) -> CircuitBreaker:
        breaker = self._breakers.get(provider)
        if breaker is None:
            if len(self._breakers) >= MAX_BREAKERS:
                self._forget_closed_hosts()
            breaker = self._breakers[provider] = CircuitBreaker(provider, self.policy, self.replica)
            if not is_host_circuit(provider):
                CIRCUIT_STATE.labels(provider=provider).set(0)
        return breaker

    def _forget_closed_hosts(self) -> None:
        now = self.clock()
        for key in [k for k, b in self._breakers.items() if is_host_circuit(k)]:
            if self._breakers[key].state(now) == CircuitState.CLOSED:
                del self._breakers[key]

    def state(self, provider: str) -> CircuitState:
        return self.breaker(provider).state(self.clock())

    def would_admit(self, provider: str) -> bool:
        return self.breaker(provider).would_admit(self.clock())

    def admit(self, provider: str) -> tuple[Admission, int | None]:
        admission, probe, event = self.breaker(provider).admit(self.clock())
        if event is not None:
            self._changed(event, "local")
        return admission, probe

    def record(self, provider: str, failed: bool, probe: int | None, key: str | None = None) -> None:
        event = self.breaker(provider).record(failed, self.clock(), probe, key)
        if event is not None:
            self._changed(event, "local")

    def apply(self, event: CircuitEvent) -> None:
        if self.breaker(event.provider).apply(event, self.clock()):
            CIRCUIT_TRANSITIONS.labels(
                provider=metric_label(event.provider), state=event.state.name.lower(), source="peer"
            ).inc()
            log.info("circuit_adopted", provider=event.provider, state=event.state.name, origin=event.origin)
        self.refresh()

    def refresh(self) -> None:
        """Bring the gauge up to date (OPEN turns HALF_OPEN by the clock alone)."""
        now = self.clock()
        for provider, breaker in self._breakers.items():
            if not is_host_circuit(provider):
                CIRCUIT_STATE.labels(provider=provider).set(int(breaker.state(now)))

    def snapshot(self) -> dict[str, str]:
        now = self.clock()
        return {p: b.state(now).name for p, b in self._breakers.items()}

    def _changed(self, event: CircuitEvent, source: str) -> None:
        CIRCUIT_TRANSITIONS.labels(
            provider=metric_label(event.provider), state=event.state.name.lower(), source=source
        ).inc()
        log.warning(
            "circuit_changed",
            provider=event.provider,
            state=event.state.name,
            open_until=round(event.open_until, 3),
        )
        self.refresh()
        if self.publish is not None:
            task = asyncio.get_running_loop().create_task(self._broadcast(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _broadcast(self, event: CircuitEvent) -> None:
        assert self.publish is not None
        try:
            await self.publish(event)
        except Exception as exc:  # the others find out by their own calls
            log.warning("circuit_broadcast_failed", provider=event.provider, error=repr(exc))

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
