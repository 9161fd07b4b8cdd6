"""Routing by destination country or E.164 prefix: matching, tiers, and the sender's choice per tier."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.schemas.routing import ChannelRouteIn
from shared.core.destinations import DestinationError, country_of, normalise_destination, specificity
from shared.core.routing import ChannelPolicy, ProviderSpec, Route, RoutingConfig, Strategy
from tests.unit.test_routing_router import message, router


def config(strategy: Strategy = Strategy.FALLBACK, *routes: Route) -> RoutingConfig:
    providers = {r.provider: ProviderSpec(r.provider, "sms_gateway") for r in routes}
    return RoutingConfig(1, providers, {"sms": routes}, {"sms": ChannelPolicy(strategy)}, {})


ROUTES = (
    Route("global", 0),
    Route("backup", 1),
    Route("uk", 5, destinations=("GB",)),
    Route("uk-mobile", 9, destinations=("+447",)),
    Route("nanp", 3, destinations=("+1",)),
    Route("us", 4, destinations=("US",)),
    Route("sf", 6, destinations=("+1415",)),
)


def test_countries_come_from_libphonenumber_and_tell_nanp_countries_apart() -> None:
    assert country_of("+14155550100") == "US"
    assert country_of("+16135550100") == "CA"
    assert country_of("+447400123456") == "GB"
    assert country_of("+999123") is None


def test_destinations_are_normalised_or_refused() -> None:
    assert normalise_destination("gb") == "GB"
    assert normalise_destination("+44 77") == "+4477"
    assert normalise_destination("0044") == "+44"
    for bad in ("XX", "44", "+0", "GBR", "+1234567890123456", ""):
        with pytest.raises(DestinationError):
            normalise_destination(bad)
    assert ChannelRouteIn(destinations=["gb", "GB", "+1 415"]).destinations == ["GB", "+1415"]


def test_the_most_specific_match_wins_and_other_destinations_are_left_out() -> None:
    routing = config(Strategy.FALLBACK, *ROUTES)
    # a UK mobile: +447 (3 digits) beats GB (44: 2.5), which beats the catch-all routes
    assert routing.tiers("t", "sms", "+447400123456") == [[ROUTES[3]], [ROUTES[2]], [ROUTES[0], ROUTES[1]]]
    assert routing.chain("t", "sms", "+447400123456") == ["uk-mobile", "uk", "global", "backup"]
    # San Francisco: +1415 > US > +1 > catch-all; Canada: +1 only; elsewhere: the catch-all routes
    assert routing.chain("t", "sms", "+14155550100") == ["sf", "us", "nanp", "global", "backup"]
    assert routing.chain("t", "sms", "+16135550100") == ["nanp", "global", "backup"]
    assert routing.chain("t", "sms", "+33612345678") == ["global", "backup"]
    # without a recipient (the routing API's channel view), every route in priority order
    assert routing.chain("t", "sms") == ["global", "backup", "nanp", "us", "uk", "sf", "uk-mobile"]


def test_without_a_catch_all_route_a_destination_nobody_serves_has_no_chain() -> None:
    routing = config(Strategy.FALLBACK, Route("uk", 0, destinations=("GB",)))
    assert routing.tiers("t", "sms", "+33612345678") == []
    assert routing.fallback_chain("t", "sms", "+447400123456") == ["uk"]


@given(
    prefixes=st.lists(st.text("0123456789", min_size=1, max_size=6), min_size=1, max_size=6, unique=True),
    number=st.text("0123456789", min_size=8, max_size=12),
)
def test_longest_matching_prefix_always_leads(prefixes: list[str], number: str) -> None:
    recipient = "+1" + number
    routes = tuple(Route(f"p{i}", i, destinations=("+1" + p,)) for i, p in enumerate(prefixes))
    routing = config(Strategy.FALLBACK, *routes, Route("any", 99))
    chain = routing.chain("t", "sms", recipient)
    matching = [p for p in prefixes if number.startswith(p)]
    assert chain[-1] == "any" and len(chain) == len(matching) + 1
    if matching:
        assert chain[0] == f"p{prefixes.index(max(matching, key=len))}"
    scores = [specificity(r.destinations, recipient) for r in routes if r.provider in chain]
    assert all(s is not None and s >= 2 for s in scores)


async def test_the_sender_applies_the_strategy_inside_the_most_specific_tier_first() -> None:
    routing = config(
        Strategy.LEAST_COST,
        Route("cheap-global", 0, cost=0.001),
        Route("uk-a", 1, cost=0.05, destinations=("GB",)),
        Route("uk-b", 2, cost=0.02, destinations=("GB",)),
    )
    r, _, _ = router(routing)
    # a UK number goes to the cheaper of the two UK routes, not to the cheaper global one
    assert (await r.attempt(message(1, recipient="+447400123456"))).provider == "uk-b"
    # a French number has only the global route
    assert (await r.attempt(message(2, recipient="+33612345678"))).provider == "cheap-global"
    # with primary, only the head of the most specific tier
    primary = config(Strategy.PRIMARY, Route("g", 0), Route("uk", 1, destinations=("GB",)))
    assert primary.fallback_chain("t", "sms", "+447400123456") == ["uk"]
    p, _, _ = router(primary)
    assert (await p.attempt(message(3, recipient="+447400123456"))).provider == "uk"


async def test_a_destination_no_route_serves_is_refused_as_no_provider() -> None:
    r, adapters, _ = router(config(Strategy.FALLBACK, Route("uk", 0, destinations=("GB",))))
    outcome = await r.attempt(message(1, recipient="+33612345678"))
    assert outcome.error_code == "NO_PROVIDER" and "destination" in (outcome.error_message or "")
    assert adapters.requests == []
