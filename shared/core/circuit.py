"""A circuit breaker per provider (pure: time is passed in, transitions are returned).

CLOSED --(>= failure_ratio of the last ``window`` calls failed)--> OPEN
OPEN --(``open_s`` elapsed)--> HALF_OPEN: exactly one probe call goes out
HALF_OPEN --(probe succeeded)--> CLOSED;  --(probe failed)--> OPEN again

Replicas share state through events (see services/sender/circuits.py): an OPEN event names its
``owner``, the replica that probes first when the breaker half-opens; the others keep it open for
``probe_grace_s`` longer and only probe themselves if no verdict arrived by then (the owner died).
A HALF_OPEN event (a peer is probing) keeps the others waiting for that peer's verdict, at most
``probe_timeout_s``; the verdict (its next event) ends the wait whether or not it is adopted, so a
late notice cannot hold a replica's own, newer open period hostage.
Times are wall-clock seconds (``time.time()``), so that an ``open_until`` means the same on every
replica of one deployment.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum, StrEnum


class CircuitState(IntEnum):
    """Values of the ``switchboard_circuit_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Admission(StrEnum):
    ALLOWED = "allowed"
    PROBE = "probe"  # allowed, as the single half-open probe
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    window: int = 10
    failure_ratio: float = 0.5
    min_calls: int = 10
    open_s: float = 30.0
    probe_grace_s: float = 5.0
    probe_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        if self.window < 1 or not 1 <= self.min_calls <= self.window:
            raise ValueError("need 1 <= min_calls <= window")
        if not 0 < self.failure_ratio <= 1:
            raise ValueError("failure_ratio must be within (0, 1]")


@dataclass(frozen=True, slots=True)
class CircuitEvent:
    """A state change, as broadcast to every replica."""

    provider: str
    state: CircuitState
    origin: str  # the replica that made the change
    owner: str  # who probes first (OPEN), who is probing (HALF_OPEN)
    open_until: float  # wall-clock seconds; 0 when closed
    at: float


class CircuitBreaker:
    def __init__(self, provider: str, policy: CircuitPolicy, replica: str) -> None:
        self.provider = provider
        self.policy = policy
        self.replica = replica
        self._open = False
        self._until = 0.0
        self._owner = replica
        self._outcomes: deque[tuple[bool, str | None]] = deque(maxlen=policy.window)  # (failed, recipient)
        self._probe: int | None = None  # id of the probe in flight
        self._probe_started = 0.0
        self._probes = 0
        self._peer_probe: tuple[str, float] | None = None  # (prober, until when we wait for its verdict)

    def state(self, now: float) -> CircuitState:
        if not self._open:
            return CircuitState.CLOSED
        if self._probe is not None and now - self._probe_started < self.policy.probe_timeout_s:
            return CircuitState.HALF_OPEN
        if self._peer_probe is not None and now < self._peer_probe[1]:
            return CircuitState.OPEN  # a peer is probing: its verdict comes first
        grace = 0.0 if self._owner == self.replica else self.policy.probe_grace_s
        return CircuitState.HALF_OPEN if now >= self._until + grace else CircuitState.OPEN

    def open_until(self) -> float:
        return self._until if self._open else 0.0

    def failures(self) -> int:
        return sum(failed for failed, _ in self._outcomes)

    def admit(self, now: float) -> tuple[Admission, int | None, CircuitEvent | None]:
        """May a call go out now? Returns (admission, probe id, event to broadcast)."""
        if not self._open:
            return Admission.ALLOWED, None, None
        if self.state(now) != CircuitState.HALF_OPEN or self._probe_in_flight(now):
            return Admission.DENIED, None, None
        self._probes += 1
        self._probe = self._probes
        self._probe_started = now
        self._owner = self.replica
        return Admission.PROBE, self._probe, self._event(CircuitState.HALF_OPEN, now)

    def would_admit(self, now: float) -> bool:
        """``admit`` without taking the probe slot."""
        return not self._open or (
            self.state(now) == CircuitState.HALF_OPEN and not self._probe_in_flight(now)
        )

    def record(
        self, failed: bool, now: float, probe: int | None = None, key: str | None = None
    ) -> CircuitEvent | None:
        """Count one call's result; returns the event when this changed the state.

        ``key`` names the recipient: a failure repeating for a recipient that already failed within
        the window is not counted again, so one bad recipient's retries cannot open the circuit.
        """
        if self._open:
            if probe is None or probe != self._probe:
                return None  # a call that started before the breaker opened, or a stale probe
            self._probe = None
            if failed:
                return self._trip(now)
            return self._close(now)
        if failed and key is not None and (True, key) in self._outcomes:
            return None
        self._outcomes.append((failed, key))
        calls = len(self._outcomes)
        if calls >= self.policy.min_calls and self.failures() / calls >= self.policy.failure_ratio:
            return self._trip(now)
        return None

    def apply(self, event: CircuitEvent, now: float) -> bool:
        """Adopt another replica's change; True when the local state changed."""
        if event.origin == self.replica or event.provider != self.provider:
            return False
        before = self.state(now)
        if event.state == CircuitState.CLOSED:
            self._open, self._until, self._probe, self._peer_probe = False, 0.0, None, None
            self._outcomes.clear()
        elif event.state == CircuitState.OPEN:
            if self._peer_probe is not None and self._peer_probe[0] == event.origin:
                self._peer_probe = None  # the verdict of the probe we were waiting for
            if not self._open or (event.open_until, event.owner) >= (self._until, self._owner):
                self._open, self._until, self._owner, self._probe = True, event.open_until, event.owner, None
        else:  # a peer is probing: wait for its verdict (or its probe timeout) before probing here
            self._open, self._probe = True, None
            self._peer_probe = (event.origin, now + self.policy.probe_timeout_s)
        return self.state(now) != before

    def _probe_in_flight(self, now: float) -> bool:
        return self._probe is not None and now - self._probe_started < self.policy.probe_timeout_s

    def _trip(self, now: float) -> CircuitEvent:
        self._open, self._until, self._owner, self._probe = True, now + self.policy.open_s, self.replica, None
        self._peer_probe = None
        self._outcomes.clear()
        return self._event(CircuitState.OPEN, now)

    def _close(self, now: float) -> CircuitEvent:
        self._open, self._until, self._peer_probe = False, 0.0, None
        self._outcomes.clear()
        return self._event(CircuitState.CLOSED, now)

    def _event(self, state: CircuitState, now: float) -> CircuitEvent:
        return CircuitEvent(self.provider, state, self.replica, self._owner, self.open_until(), now)
