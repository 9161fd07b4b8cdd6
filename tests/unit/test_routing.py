"""shared/core/routing.py and the per-channel retry policy: configuration, strategies, thresholds."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.models import FallbackReason
from shared.core.retry import RetryMode, RetryPolicy
from shared.core.routing import (
    UNKNOWN_SUCCESS_RATE,
    ChannelPolicy,
    ProviderSpec,
    Route,
    RoutingConfig,
    Strategy,
    TenantRoute,
    candidates,
    rank,
    success_rate,
    weighted_order,
)

A, B, C = Route("a", 0, 60, 0.03), Route("b", 1, 30, 0.01), Route("c", 2, 10, 0.02)
ROUTES = [A, B, C]


def config(**policies: ChannelPolicy) -> RoutingConfig:
    providers = {n: ProviderSpec(n, "sms_gateway") for n in ("a", "b", "c", "off")}
    providers["off"] = ProviderSpec("off", "sms_gateway", active=False)
    routes = {"sms": (C, A, B, Route("off", -1)), "email": (Route("b", 0, active=False), Route("a", 1))}
    tenants = {("acme", "sms"): {"c": TenantRoute(-5), "a": TenantRoute(0, active=False)}}
    return RoutingConfig(3, providers, routes, policies, tenants)


def names(routes: list[Route]) -> list[str]:
    return [r.provider for r in routes]


def test_ordered_sorts_by_priority_and_drops_inactive_routes_and_providers() -> None:
    assert config().chain("default", "sms") == ["a", "b", "c"]
    assert config().chain("default", "email") == ["a"]
    assert config().chain("default", "whatsapp") == []


def test_tenant_overrides_reorder_and_exclude_for_that_tenant_only() -> None:
    assert config().chain("acme", "sms") == ["c", "b"]
    assert config().chain("other", "sms") == ["a", "b", "c"]


def test_fallback_chain_is_the_head_only_for_primary() -> None:
    assert config(sms=ChannelPolicy(Strategy.PRIMARY)).fallback_chain("default", "sms") == ["a"]
    assert config(sms=ChannelPolicy(Strategy.ROUND_ROBIN)).fallback_chain("default", "sms") == ["a", "b", "c"]


def test_from_chains_reproduces_the_settings_chains() -> None:
    routing = RoutingConfig.from_chains({"sms": ["x", "y"], "email": ["m"]})
    assert routing.chain("t", "sms") == ["x", "y"]
    assert routing.policy("sms").strategy == Strategy.FALLBACK
    assert {p.kind for p in routing.providers.values()} == {"mock_json"}


def test_provider_repr_never_shows_credentials() -> None:
    spec = ProviderSpec("a", "smtp", settings={"password": "hunter2"})
    assert "hunter2" not in repr(spec)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.PRIMARY, ["a"]),
        (Strategy.FALLBACK, ["a", "b", "c"]),
        (Strategy.LEAST_COST, ["b", "c", "a"]),
        (Strategy.HIGHEST_RELIABILITY, ["c", "a", "b"]),
    ],
)
def test_deterministic_strategies(strategy: Strategy, expected: list[str]) -> None:
    rates = {"a": 0.9, "b": 0.5, "c": 0.99}
    assert names(rank(strategy, ROUTES, success_rates=rates)) == expected


def test_round_robin_rotates_with_the_turn() -> None:
    firsts = [rank(Strategy.ROUND_ROBIN, ROUTES, turn=t)[0].provider for t in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]
    assert names(rank(Strategy.ROUND_ROBIN, ROUTES, turn=1)) == ["b", "c", "a"]


def test_weighted_first_choice_follows_the_weights() -> None:
    rng = random.Random(7)
    firsts = Counter(rank(Strategy.WEIGHTED, ROUTES, rng=rng)[0].provider for _ in range(20_000))
    for route in ROUTES:
        assert firsts[route.provider] / 20_000 == pytest.approx(route.weight / 100, abs=0.02)


def test_weight_zero_is_never_first_unless_alone() -> None:
    routes = [Route("a", 0, 0), Route("b", 1, 1)]
    assert all(weighted_order(routes, random.Random(s))[0].provider == "b" for s in range(200))
    assert weighted_order([Route("a", 0, 0)], random.Random(1))[0].provider == "a"


def test_unknown_reliability_ranks_at_the_prior() -> None:
    ranked = rank(Strategy.HIGHEST_RELIABILITY, ROUTES, success_rates={"a": 0.95, "b": 0.5})
    assert names(ranked) == ["a", "c", "b"]  # c unknown: 0.9


def test_success_rate_is_smoothed_towards_the_prior() -> None:
    assert success_rate(0, 0) == UNKNOWN_SUCCESS_RATE
    assert success_rate(1, 1) > UNKNOWN_SUCCESS_RATE
    assert success_rate(0, 1) > 0.7  # one failure does not sink a provider
    assert success_rate(0, 200) < 0.05


@given(
    strategy=st.sampled_from(list(Strategy)),
    weights=st.lists(st.integers(0, 100), min_size=1, max_size=6),
    turn=st.integers(0, 1000),
    seed=st.integers(0, 1000),
)
def test_every_strategy_ranks_a_permutation_of_its_routes(
    strategy: Strategy, weights: list[int], turn: int, seed: int
) -> None:
    routes = [Route(f"p{i}", i, w, w / 1000) for i, w in enumerate(weights)]
    ranked = rank(strategy, routes, turn=turn, rng=random.Random(seed), success_rates={"p0": 0.1})
    if strategy == Strategy.PRIMARY:
        assert ranked == routes[:1]
    else:
        assert sorted(names(ranked)) == sorted(names(routes))


def test_candidates_put_a_retry_s_preferred_provider_first() -> None:
    order = candidates(ROUTES, ChannelPolicy(), preferred="c")
    assert [c.route.provider for c in order] == ["c", "a", "b"]
    assert all(c.demoted is None for c in order)


def test_providers_over_the_cost_threshold_become_a_last_resort() -> None:
    order = candidates(ROUTES, ChannelPolicy(max_cost=0.02))
    assert [(c.route.provider, c.demoted) for c in order] == [
        ("b", None),
        ("c", None),
        ("a", FallbackReason.COST_THRESHOLD),
    ]


def test_providers_under_the_quality_threshold_become_a_last_resort() -> None:
    order = candidates(ROUTES, ChannelPolicy(min_success_rate=0.8), success_rates={"a": 0.4, "b": 0.99})
    assert [(c.route.provider, c.demoted) for c in order] == [
        ("b", None),
        ("c", None),
        ("a", FallbackReason.QUALITY_THRESHOLD),
    ]


# ---- per-channel retry policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RetryPolicy(RetryMode.LINEAR, 2, 7, jitter=0), [2, 4, 6, 7, 7]),
        (RetryPolicy(RetryMode.EXPONENTIAL, 1, 10, jitter=0), [1, 2, 4, 8, 10]),
        (RetryPolicy(RetryMode.CUSTOM, 0, 60, delays=(1, 30, 5), jitter=0), [1, 30, 5, 5, 5]),
        (RetryPolicy(RetryMode.CUSTOM, 0, 20, delays=(1, 30), jitter=0), [1, 20, 20, 20, 20]),
    ],
)
def test_retry_delays_by_mode(policy: RetryPolicy, expected: list[float]) -> None:
    assert [policy.delay(n) for n in range(1, 6)] == expected


def test_retry_after_wins_over_a_shorter_delay() -> None:
    policy = RetryPolicy(RetryMode.LINEAR, 1, 10, jitter=0)
    assert policy.delay(1, retry_after=4) == 4
    assert policy.delay(1, retry_after=400) == 400  # honoured in full, beyond the cap


def test_attempts_allowed() -> None:
    assert RetryPolicy(RetryMode.NONE).attempts_allowed(5) == 1
    assert RetryPolicy(max_attempts=3).attempts_allowed(5) == 3
    assert RetryPolicy(max_attempts=8).attempts_allowed(5) == 5
    assert RetryPolicy().attempts_allowed(5) == 5


def test_custom_without_delays_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(RetryMode.CUSTOM)


@given(
    mode=st.sampled_from([RetryMode.LINEAR, RetryMode.EXPONENTIAL, RetryMode.CUSTOM]),
    initial=st.floats(0, 100),
    cap=st.floats(0, 1000),
    attempt=st.integers(1, 100),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 100),
)
def test_delay_never_exceeds_the_cap_nor_goes_negative(
    mode: RetryMode, initial: float, cap: float, attempt: int, jitter: float, seed: int
) -> None:
    policy = RetryPolicy(mode, initial, cap, delays=(initial, initial * 3), jitter=jitter)
    assert 0 <= policy.delay(attempt, rng=random.Random(seed)) <= cap
