"""services/sender/router.py: one attempt's choice of provider, and the fallback reason it records."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from services.sender.adapters import AdapterPool, SendRequest, SendResult
from services.sender.adapters.transport import HttpResponse, MockTransport
from services.sender.bucket import Grant, Limit
from services.sender.circuits import CircuitBoard
from services.sender.ratelimit import RateLimiter
from services.sender.router import Router
from services.sender.settings import SenderSettings
from shared.core.circuit import CircuitPolicy, CircuitState
from shared.core.models import DispatchMessage, FallbackReason, OutcomeClass
from shared.core.routing import ChannelPolicy, ProviderSpec, Route, RoutingConfig, Strategy

NOW = datetime(2024, 1, 1, tzinfo=UTC)


class FakeAdapters:
    """The AdapterPool seam: every provider answers with ``answers.get(name, success)``."""

    def __init__(self, answers: dict[str, SendResult] | None = None) -> None:
        self.answers = answers or {}
        self.requests: list[SendRequest] = []

    def get(self, spec: ProviderSpec) -> FakeAdapters:
        self.current = spec.name
        return self

    async def send(self, request: SendRequest) -> SendResult:
        self.requests.append(request)
        return self.answers.get(request.provider, SendResult(OutcomeClass.SUCCESS, 1.0, vendor_ref="v"))


class DryStore:
    """A bucket store that never has a token."""

    async def take(self, provider: str, limit: Limit, want_high: int, want_other: int) -> Grant:
        return Grant(0, 0, 0.0)


class NoPacing:
    async def reserve(self, *_: Any) -> float | None:
        return 0.0


def routing(
    strategy: Strategy = Strategy.FALLBACK, limited: str | None = None, **policy: Any
) -> RoutingConfig:
    providers = {
        name: ProviderSpec(name, "sms_gateway", rate_per_s=1.0 if name == limited else None, burst=1)
        for name in ("a", "b", "c")
    }
    routes = (Route("a", 0, 50, 0.05), Route("b", 1, 30, 0.01), Route("c", 2, 20, 0.02))
    return RoutingConfig(1, providers, {"sms": routes}, {"sms": ChannelPolicy(strategy, **policy)}, {})


def router(
    config: RoutingConfig, adapters: FakeAdapters | None = None, rates: dict[str, float] | None = None
) -> tuple[Router, FakeAdapters, CircuitBoard]:
    adapters = adapters or FakeAdapters()
    board = CircuitBoard(CircuitPolicy(window=4, min_calls=4, open_s=60), "me")
    r = Router(
        lambda: config,
        lambda: rates or {},
        board,
        RateLimiter(DryStore(), 0.02),
        NoPacing(),
        adapters,  # type: ignore[arg-type]
        max_payload_bytes=10_000,
        max_wait_s=0.05,
        rng=random.Random(3),
    )
    return r, adapters, board


def message(n: int = 1, provider: str | None = None, **fields: Any) -> DispatchMessage:
    values: dict[str, Any] = {
        "log_id": n,
        "attempt": 1,
        "tenant": "t",
        "channel": "sms",
        "recipient": f"+1415555{n:04d}",
        "payload": {"body": "hi"},
        "priority": 1,
        "provider": provider,
        "created_at": NOW,
        "claimed_at": NOW,
    }
    return DispatchMessage(**{**values, **fields})


async def test_first_in_line_is_called_with_the_idempotency_key_and_no_reason() -> None:
    r, adapters, _ = router(routing())
    outcome = await r.attempt(message(7))
    assert (outcome.provider, outcome.fallback_reason, outcome.outcome) == ("a", None, OutcomeClass.SUCCESS)
    assert adapters.requests[0].idempotency_key == "7-1"
    assert outcome.cost == 0.05  # the provider did not say: the route's configured cost


async def test_round_robin_spreads_consecutive_messages() -> None:
    r, _, _ = router(routing(Strategy.ROUND_ROBIN))
    assert [(await r.attempt(message(n))).provider for n in range(1, 7)] == ["a", "b", "c", "a", "b", "c"]


async def test_least_cost_and_reliability_and_primary() -> None:
    assert (await router(routing(Strategy.LEAST_COST))[0].attempt(message())).provider == "b"
    rates = {"a": 0.5, "b": 0.7, "c": 0.99}
    assert (
        await router(routing(Strategy.HIGHEST_RELIABILITY), rates=rates)[0].attempt(message())
    ).provider == "c"
    assert (await router(routing(Strategy.PRIMARY))[0].attempt(message())).provider == "a"


async def test_a_retry_goes_to_the_provider_the_responder_chose() -> None:
    r, _, _ = router(routing())
    assert (await r.attempt(message(provider="c"))).provider == "c"


async def test_open_circuit_falls_back_with_provider_unavailable() -> None:
    r, _, board = router(routing())
    for n in range(4):
        board.record("a", True, None, key=str(n))
    assert board.state("a") == CircuitState.OPEN
    outcome = await r.attempt(message())
    assert (outcome.provider, outcome.fallback_reason) == ("b", FallbackReason.PROVIDER_UNAVAILABLE)


async def test_every_circuit_open_is_a_deferral_until_the_probe_without_a_call() -> None:
    r, adapters, board = router(routing())
    for name in "abc":
        for n in range(4):
            board.record(name, True, None, key=str(n))
    outcome = await r.attempt(message())
    assert (outcome.outcome, outcome.error_code) == (OutcomeClass.DEFERRED, "ALL_PROVIDERS_UNAVAILABLE")
    assert outcome.retry_after_s is not None and 50 < outcome.retry_after_s <= 60
    assert adapters.requests == []


async def test_rate_limited_provider_falls_back_with_rate_limit_exceeded() -> None:
    r, _, _ = router(routing(limited="a"))
    outcome = await r.attempt(message())
    assert (outcome.provider, outcome.fallback_reason) == ("b", FallbackReason.RATE_LIMIT_EXCEEDED)


async def test_only_provider_rate_limited_waits_then_defers() -> None:
    r, adapters, _ = router(routing(Strategy.PRIMARY, limited="a"))
    outcome = await r.attempt(message())
    assert outcome.retry_after_s is not None and outcome.retry_after_s >= 1.0
    assert (outcome.outcome, outcome.error_code, outcome.provider) == (
        OutcomeClass.DEFERRED,
        "RATE_LIMITED_LOCALLY",
        "a",
    )
    assert adapters.requests == []


@pytest.mark.parametrize(
    ("policy", "rates", "reason"),
    [
        ({"max_cost": 0.03}, {}, FallbackReason.COST_THRESHOLD),
        ({"min_success_rate": 0.8}, {"a": 0.3}, FallbackReason.QUALITY_THRESHOLD),
    ],
)
async def test_thresholds_pass_over_the_first_in_line(
    policy: dict[str, float], rates: dict[str, float], reason: FallbackReason
) -> None:
    r, _, _ = router(routing(Strategy.FALLBACK, None, **policy), rates=rates)
    outcome = await r.attempt(message())
    assert (outcome.provider, outcome.fallback_reason) == ("b", reason)


async def test_failures_count_against_the_circuit_of_the_provider_called() -> None:
    failing = SendResult(OutcomeClass.RECOVERABLE, 1.0, error_code="PROVIDER_UNAVAILABLE")
    r, _, board = router(routing(), FakeAdapters({"a": failing}))
    for n in range(4):
        await r.attempt(message(n + 1))
    assert board.state("a") == CircuitState.OPEN
    assert (await r.attempt(message(9))).provider == "b"


async def test_refusals_before_any_call_keep_the_contract() -> None:
    r, adapters, _ = router(routing())
    outcome = await r.attempt(message(recipient="12"))
    assert (outcome.outcome, outcome.error_code) == (OutcomeClass.PERMANENT, "INVALID_NUMBER")
    empty = RoutingConfig(1, {}, {}, {}, {})
    outcome = await router(empty)[0].attempt(message())
    assert (outcome.outcome, outcome.error_code) == (OutcomeClass.RECOVERABLE, "NO_PROVIDER")
    assert adapters.requests == []


async def test_a_provider_the_sender_cannot_build_is_a_recoverable_refusal_and_nothing_is_sent() -> None:
    # Given the real adapter pool and a first provider of a kind no adapter exists for
    config = routing()
    config.providers["a"] = ProviderSpec("a", "carrier_pigeon")
    pool = AdapterPool(
        SenderSettings(provider_batch_max=1), MockTransport(lambda _: HttpResponse(201, b"{}", {}))
    )
    r = Router(
        lambda: config,
        dict,
        CircuitBoard(CircuitPolicy(window=4, min_calls=4, open_s=60), "me"),
        RateLimiter(DryStore(), 0.02),
        NoPacing(),
        pool,
        max_payload_bytes=10_000,
        max_wait_s=0.05,
    )
    try:
        # When a message is attempted
        outcome = await r.attempt(message(1))
    finally:
        await pool.close()
    # Then the attempt is answered RECOVERABLE (the next provider of the chain is tried on retry)
    assert (outcome.provider, outcome.outcome, outcome.error_code) == (
        "a",
        OutcomeClass.RECOVERABLE,
        "PROVIDER_MISCONFIGURED",
    )
    assert "unknown provider kind 'carrier_pigeon'" in (outcome.error_message or "")
