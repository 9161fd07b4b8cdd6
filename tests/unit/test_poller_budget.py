"""services/poller/budget.py (a lane's backlog in seconds of work) and services/poller/wakeup.py (which
lanes a notification wakes)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.poller.budget import REFILL_BELOW, LaneBudget, claim_room, poll_again
from services.poller.wakeup import DueSignal
from shared.bus.topology import Lane


def steady(budget: LaneBudget, drain_per_s: float, seconds: float, step_s: float = 0.1) -> None:
    """Simulate a poller that tops the lane up every ``step_s`` while consumers drain it steadily."""
    depth, now = 0.0, 0.0
    budget.observe(0, now)
    while now < seconds:
        room = budget.room(int(depth))
        budget.published(room)
        depth += room
        now += step_s
        depth = max(depth - drain_per_s * step_s, 0.0)
        budget.observe(int(depth), now)


@given(drain=st.floats(50, 5_000), budget_s=st.floats(0.5, 5))
def test_under_a_steady_drain_the_lane_holds_about_budget_seconds_of_work(
    drain: float, budget_s: float
) -> None:
    budget = LaneBudget(budget_s=budget_s, floor=10, ceiling=1_000_000)
    steady(budget, drain, seconds=30)
    assert abs(budget.rate - drain) / drain < 0.1
    assert abs(budget.allowed() - drain * budget_s) <= max(0.1 * drain * budget_s, 10)


@given(
    budget_s=st.floats(0.1, 10),
    floor=st.integers(1, 1_000),
    ceiling=st.integers(1_000, 100_000),
    samples=st.lists(st.tuples(st.integers(0, 50_000), st.integers(0, 50_000)), max_size=30),
)
def test_the_allowance_stays_within_floor_and_ceiling_and_room_is_never_negative(
    budget_s: float, floor: int, ceiling: int, samples: list[tuple[int, int]]
) -> None:
    budget = LaneBudget(budget_s=budget_s, floor=floor, ceiling=ceiling)
    for n, (depth, published) in enumerate(samples):
        budget.observe(depth, n * 0.1)
        budget.published(published)
        assert floor <= budget.allowed() <= ceiling
        assert budget.room(depth) >= 0
        assert budget.rate >= 0


def test_consumers_that_stop_shrink_the_allowance_to_the_floor_and_an_idle_lane_keeps_its_rate() -> None:
    budget = LaneBudget(budget_s=2, floor=100, ceiling=20_000)
    steady(budget, 1_000, seconds=20)
    assert budget.allowed() > 1_500
    # Given the senders stop: the depth stays where it is, nothing drains
    for n in range(1, 200):
        budget.observe(2_000, 20 + n * 0.1)
    assert budget.allowed() == 100
    # Given instead an idle lane (nothing offered, nothing drained): the rate it had is kept
    idle = LaneBudget(budget_s=2, floor=100, ceiling=20_000)
    steady(idle, 1_000, seconds=20)
    depth, now = idle.allowed(), 20.0
    while depth > 0:  # the campaign is over: the consumers drain what is left at their pace
        depth, now = max(depth - 100, 0), now + 0.1
        idle.observe(depth, now)
    rate = idle.rate
    assert abs(rate - 1_000) < 100
    for n in range(1, 100):
        idle.observe(0, now + n * 0.1)
    assert idle.rate == rate


@given(drain=st.floats(100, 5_000), budget_s=st.floats(0.5, 5))
def test_a_draining_lane_is_refilled_in_a_few_large_batches_not_topped_up_every_cycle(
    drain: float, budget_s: float
) -> None:
    budget = LaneBudget(budget_s=budget_s, floor=10, ceiling=1_000_000)
    steady(budget, drain, seconds=10)  # the rate is known
    refills: list[int] = []
    depth, now = float(budget.allowed()), 10.0
    while now < 40:
        room = budget.room(int(depth))
        if room:
            refills.append(room)
            budget.published(room)
            depth += room
        now += 0.1
        depth = max(depth - drain * 0.1, 0.0)
        budget.observe(int(depth), now)
    # Each refill is at least the share drained before it, and there is about one per that share's time
    assert min(refills) >= budget.allowed() * (1 - REFILL_BELOW) * 0.8
    assert len(refills) <= 30 / (budget_s * (1 - REFILL_BELOW)) * 1.3 + 2


def test_the_depth_is_asked_for_only_when_the_estimate_is_above_the_refill_level() -> None:
    budget = LaneBudget(budget_s=2, floor=200, ceiling=20_000)
    assert budget.allowed() == 200
    assert not budget.needs_depth(0) and not budget.needs_depth(100)
    assert budget.needs_depth(101)
    assert budget.room(100) == 100 and budget.room(101) == 0


def test_a_notification_wakes_the_lanes_of_its_priority() -> None:
    signal = DueSignal("postgresql://unused")
    signal._on_notify(None, 1, "switchboard_due", "1")
    assert not signal.events[Lane.URGENT].is_set() and signal.events[Lane.BULK].is_set()
    signal.events[Lane.BULK].clear()
    signal._on_notify(None, 1, "switchboard_due", "0")  # urgent among them: both lanes look
    assert signal.events[Lane.URGENT].is_set() and signal.events[Lane.BULK].is_set()
    for event in signal.events.values():
        event.clear()
    signal._on_lost(None)  # notifications may have been missed: every lane polls
    assert all(event.is_set() for event in signal.events.values())


# ---- expired leases within a lane's room (services/poller/budget.py: claim_room, poll_again) ----------


@given(room=st.integers(-100, 10_000), reclaimed=st.integers(0, 10_000))
def test_reclaims_come_out_of_the_room_and_new_claims_get_what_is_left(room: int, reclaimed: int) -> None:
    # Given a cycle that reclaimed what its room allowed (never more than the room, nothing without room)
    reclaimed = min(reclaimed, max(room, 0))
    left = claim_room(room, reclaimed)
    # Then new claims never take the lane past its room, and get all of what the reclaims left
    assert left >= 0
    assert reclaimed + left == max(room, 0)


def test_a_lane_without_room_neither_claims_nor_polls_again_at_once() -> None:
    for room in (-50, 0):
        assert claim_room(room, 0) == 0
        assert not poll_again(room, 0)


def test_a_cycle_polls_again_at_once_only_when_it_filled_its_room() -> None:
    # Filled by reclaims alone, by reclaims and claims, or by claims alone: more may be waiting
    assert poll_again(100, 100)
    assert claim_room(100, 100) == 0
    assert poll_again(100, 30 + claim_room(100, 30))
    # Room left over: nothing more was due, wait for the next wake-up
    assert not poll_again(100, 30 + 20)
    assert not poll_again(100, 0)


def test_after_an_outage_expired_leases_go_out_at_the_lanes_drain_rate_not_at_once() -> None:
    # Given a lane its senders drain at 100 logs/s, a 2 s budget, 50 000 expired leases and new logs due
    budget = LaneBudget(budget_s=2.0, floor=200, ceiling=20_000)
    expired, depth, now, batch_size = 50_000, 0.0, 0.0, 500
    budget.observe(0, now)
    while expired and now < 10_000:
        # When each 0.2 s cycle reclaims within its room, then claims with what is left
        room = min(budget.room(int(depth)), batch_size)
        reclaimed = min(expired, max(room, 0))
        claimed = claim_room(room, reclaimed)
        expired -= reclaimed
        # Then no new log is claimed while expired leases take the room (they are older work)...
        assert claimed == 0 or expired == 0
        budget.published(reclaimed + claimed)
        depth += reclaimed + claimed
        # ...the broker never holds more than the lane's allowance...
        assert depth <= budget.allowed()
        now += 0.2
        depth = max(depth - 100 * 0.2, 0.0)
        budget.observe(int(depth), now)
    # ...and the 50 000 go out in about 50 000 / 100 s, not in one burst
    assert expired == 0
    assert now >= 50_000 / 100 * 0.9
