"""shared/core/circuit.py: the breaker's transitions, the single half-open probe, adopting peers' events."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sender.circuits import is_failure
from shared.core.circuit import Admission, CircuitBreaker, CircuitEvent, CircuitPolicy, CircuitState
from shared.core.models import OutcomeClass

POLICY = CircuitPolicy(
    window=10, failure_ratio=0.5, min_calls=10, open_s=30, probe_grace_s=5, probe_timeout_s=15
)


def breaker(replica: str = "a") -> CircuitBreaker:
    return CircuitBreaker("mocksms", POLICY, replica)


RECIPIENTS = itertools.count()


def feed(b: CircuitBreaker, results: str, now: float = 0.0) -> list[CircuitEvent]:
    """'F' failure, 'S' success, each from a different recipient."""
    events = []
    for r in results:
        event = b.record(r == "F", now, key=f"+1415{next(RECIPIENTS):07d}")
        if event is not None:
            events.append(event)
    return events


def test_closed_until_half_of_the_last_ten_calls_failed() -> None:
    # Given a closed breaker / When 4 of 10 calls fail / Then it stays closed
    b = breaker()
    assert feed(b, "FSFSFSFSSS") == []
    assert b.state(0) == CircuitState.CLOSED
    # When the window slides to 5 failures out of 10 / Then it opens, owned by this replica
    (event,) = feed(b, "FF")
    assert (event.state, event.origin, event.owner, event.open_until) == (CircuitState.OPEN, "a", "a", 30.0)
    assert b.state(0) == CircuitState.OPEN


def test_fewer_calls_than_the_minimum_never_open() -> None:
    b = breaker()
    assert feed(b, "FFFFFFFFF") == []
    assert b.state(0) == CircuitState.CLOSED


def test_one_recipient_failing_again_and_again_does_not_open_it() -> None:
    b = breaker()
    for _ in range(50):
        assert b.record(True, 0, key="+888000") is None
    assert b.state(0) == CircuitState.CLOSED
    assert b.failures() == 1


def test_open_denies_calls_until_open_s_then_lets_exactly_one_probe() -> None:
    b = breaker()
    feed(b, "F" * 10)
    assert b.admit(29.9)[0] == Admission.DENIED
    assert b.would_admit(29.9) is False
    # When 30 s have passed / Then one probe goes, and nothing else while it is in flight
    assert b.state(30) == CircuitState.HALF_OPEN
    admission, probe, event = b.admit(30)
    assert admission == Admission.PROBE and probe is not None
    assert event is not None and event.state == CircuitState.HALF_OPEN
    assert [b.admit(30 + dt)[0] for dt in (0, 1, 10)] == [Admission.DENIED] * 3
    assert b.would_admit(31) is False


def test_successful_probe_closes_and_resets_the_window() -> None:
    b = breaker()
    feed(b, "F" * 10)
    _, probe, _ = b.admit(30)
    event = b.record(False, 30.2, probe)
    assert event is not None and event.state == CircuitState.CLOSED
    assert b.state(30.2) == CircuitState.CLOSED
    assert b.failures() == 0
    assert b.admit(30.3)[0] == Admission.ALLOWED


def test_failed_probe_opens_again_for_another_open_s() -> None:
    b = breaker()
    feed(b, "F" * 10)
    _, probe, _ = b.admit(30)
    event = b.record(True, 31, probe)
    assert event is not None and (event.state, event.open_until) == (CircuitState.OPEN, 61)
    assert b.state(60) == CircuitState.OPEN
    assert b.admit(61)[0] == Admission.PROBE


def test_results_of_calls_started_before_it_opened_are_ignored() -> None:
    b = breaker()
    feed(b, "F" * 10)
    assert b.record(False, 1) is None  # no probe id: a straggler
    assert b.state(1) == CircuitState.OPEN


def test_a_lost_probe_is_replaced_after_the_probe_timeout() -> None:
    b = breaker()
    feed(b, "F" * 10)
    assert b.admit(30)[0] == Admission.PROBE
    assert b.admit(44)[0] == Admission.DENIED
    assert b.admit(45.1)[0] == Admission.PROBE


def test_peer_open_event_is_adopted_and_the_owner_probes_first() -> None:
    # Given replica b hears that replica a opened the breaker
    a, b = breaker("a"), breaker("b")
    (opened,) = feed(a, "F" * 10, now=100)
    assert b.apply(opened, 100.01) is True
    assert b.state(100.01) == CircuitState.OPEN
    # When the open period ends / Then a (the owner) probes, b waits for the grace period
    assert a.state(130) == CircuitState.HALF_OPEN
    assert b.state(130) == CircuitState.OPEN
    assert b.state(135) == CircuitState.HALF_OPEN


def test_peer_probe_keeps_others_waiting_and_its_verdict_is_adopted() -> None:
    a, b = breaker("a"), breaker("b")
    (opened,) = feed(a, "F" * 10)
    b.apply(opened, 0)
    _, probe, probing = a.admit(30)
    assert probing is not None
    b.apply(probing, 30)
    assert b.admit(36)[0] == Admission.DENIED  # a's probe is still within its timeout
    closed = a.record(False, 30.5, probe)
    assert closed is not None
    assert b.apply(closed, 30.6) is True
    assert b.state(30.6) == CircuitState.CLOSED and b.admit(30.6)[0] == Admission.ALLOWED


def test_a_peers_failed_probe_opens_it_for_open_s_everywhere_not_for_the_probe_timeout() -> None:
    # Given a short open period (shorter than the probe timeout), b waiting for a's probe
    policy = CircuitPolicy(open_s=2, probe_grace_s=1, probe_timeout_s=15)
    a, b = CircuitBreaker("mocksms", policy, "a"), CircuitBreaker("mocksms", policy, "b")
    (opened,) = feed(a, "F" * 10)
    b.apply(opened, 0)
    _, probe, probing = a.admit(2)
    assert probing is not None
    b.apply(probing, 2)
    # When the probe fails / Then b adopts the new open period, and half-opens after it (+ grace)
    reopened = a.record(True, 2.1, probe)
    assert reopened is not None
    b.apply(reopened, 2.1)
    assert b.open_until() == reopened.open_until == 4.1
    assert b.state(4.5) == CircuitState.OPEN and b.state(5.2) == CircuitState.HALF_OPEN


def test_a_late_probe_notice_and_its_stale_verdict_do_not_hold_a_newer_open_period() -> None:
    # Given b opened it itself (owner, until 4.5), then hears late of a probe a made before that
    policy = CircuitPolicy(open_s=2, probe_grace_s=1, probe_timeout_s=15)
    a, b = CircuitBreaker("mocksms", policy, "a"), CircuitBreaker("mocksms", policy, "b")
    (a_opened,) = feed(a, "F" * 10, now=0)
    _, probe, a_probing = a.admit(2)
    a_reopened = a.record(True, 2, probe)
    feed(b, "F" * 10, now=2.5)
    assert a_probing is not None and a_reopened is not None
    b.apply(a_opened, 2.6)
    b.apply(a_probing, 2.6)
    assert b.state(4.6) == CircuitState.OPEN  # waiting for a's verdict
    # When the verdict arrives (older than b's own period) / Then b probes when its own period ends
    b.apply(a_reopened, 2.7)
    assert b.open_until() == 4.5 > a_reopened.open_until
    assert b.admit(4.6)[0] == Admission.PROBE


def test_own_events_and_other_providers_events_are_ignored() -> None:
    a = breaker("a")
    (opened,) = feed(a, "F" * 10)
    other = CircuitEvent("mockwa", CircuitState.OPEN, "z", "z", 99, 0)
    assert a.apply(opened, 0) is False
    assert breaker("b").apply(other, 0) is False


def test_the_later_of_two_concurrent_opens_wins_everywhere() -> None:
    a, b = breaker("a"), breaker("b")
    (from_a,) = feed(a, "F" * 10, now=0)
    (from_b,) = feed(b, "F" * 10, now=0.01)
    a.apply(from_b, 0.02)
    b.apply(from_a, 0.02)
    assert a.open_until() == b.open_until() == from_b.open_until
    assert a.state(30.01) == CircuitState.OPEN  # b owns it now
    assert b.state(30.01) == CircuitState.HALF_OPEN


@pytest.mark.parametrize(
    ("window", "min_calls", "ratio"), [(0, 0, 0.5), (10, 11, 0.5), (10, 5, 0), (10, 5, 1.5)]
)
def test_impossible_policies_are_refused(window: int, min_calls: int, ratio: float) -> None:
    with pytest.raises(ValueError):
        CircuitPolicy(window=window, min_calls=min_calls, failure_ratio=ratio)


steps = st.lists(
    st.tuples(st.sampled_from(["call_ok", "call_fail", "tick"]), st.floats(0, 20)), min_size=1, max_size=80
)


@given(steps=steps)
def test_never_more_than_one_probe_in_flight(steps: list[tuple[str, float]]) -> None:
    # A breaker driven by arbitrary calls and clock ticks: whenever it is not closed, at most one call
    # is admitted until that call reports back.
    b = breaker()
    now = 0.0
    in_flight: list[float] = []
    for n, (action, dt) in enumerate(steps):
        now += dt
        if action == "tick":
            continue
        admission, probe, _ = b.admit(now)
        if admission == Admission.DENIED:
            assert b.state(now) != CircuitState.CLOSED
            continue
        if admission == Admission.PROBE:
            assert probe is not None
            assert all(now - started >= POLICY.probe_timeout_s for started in in_flight)
            in_flight = [now]
        b.record(action == "call_fail", now, probe, key=str(n))
        if probe is not None:
            in_flight = []


@pytest.mark.parametrize(
    ("outcome", "counts"),
    [
        (OutcomeClass.SUCCESS, False),
        (OutcomeClass.PERMANENT, False),  # the recipient's fault, not the provider's
        (OutcomeClass.DEFERRED, False),  # no call was made
        (OutcomeClass.TRANSIENT, True),  # 5xx, 429, a refused connection
        (OutcomeClass.RECOVERABLE, True),
        (OutcomeClass.UNKNOWN, True),  # a timeout
    ],
)
def test_what_counts_against_a_providers_breaker(outcome: OutcomeClass, counts: bool) -> None:
    assert is_failure(outcome) is counts


def test_five_percent_random_failures_never_open_a_window_of_twenty() -> None:
    rng = random.Random(7)
    breaker = CircuitBreaker("p", CircuitPolicy(window=20, failure_ratio=0.5, min_calls=10), "me")
    for n in range(20_000):
        assert breaker.record(rng.random() < 0.05, float(n), key=str(n)) is None
