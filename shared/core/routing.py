"""Routing configuration and strategies (pure): which providers a message may go to, in what order.

The configuration lives in PostgreSQL (``providers``, ``channel_routes``, ``channel_policies``,
``tenant_routes``; see shared/db/routing_store.py) and is reloaded when its version changes. Live
health (circuit breakers, rate limits) is applied by the sender on top of the order chosen here.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from shared.core.destinations import specificity
from shared.core.models import FallbackReason
from shared.core.providers import PROVIDER_KINDS
from shared.core.retry import RetryPolicy


class Strategy(StrEnum):
    PRIMARY = "primary"  # only the first provider; no fallback
    FALLBACK = "fallback"  # the providers in priority order
    ROUND_ROBIN = "round_robin"
    WEIGHTED = "weighted"
    LEAST_COST = "least_cost"
    HIGHEST_RELIABILITY = "highest_reliability"


class Pacing(StrEnum):
    NONE = "none"
    FAST = "fast"
    BALANCED = "balanced"
    SAFE = "safe"


# The gap between two messages of one sender identity (a from-number, a WhatsApp business number):
# each gap is drawn at random inside its preset's range, so that a paced sender does not tick like a
# machine. The same presets pace a provider (in the sender) and a campaign (its logs' due times).
PACING_RANGES_S: dict[Pacing, tuple[float, float]] = {
    Pacing.NONE: (0.0, 0.0),
    Pacing.FAST: (2.0, 5.0),
    Pacing.BALANCED: (5.0, 10.0),
    Pacing.SAFE: (10.0, 30.0),
}


def pacing_gap(low_s: float, high_s: float, rng: random.Random) -> float:
    """One gap drawn uniformly from [low, high] (exactly ``low`` when the range is empty)."""
    return low_s if high_s <= low_s else rng.uniform(low_s, high_s)


class InDoubtPolicy(StrEnum):
    """What to do with an attempt that may or may not have reached a provider that does not honour
    idempotency keys (docs/design-notes.md, "In-doubt sends")."""

    HOLD = "hold"  # the log becomes IN_DOUBT with a dead letter: an operator decides
    RESEND = "resend"  # send it again, accepting that the recipient may get it twice


# Provider kinds whose real APIs de-duplicate by our idempotency key (a repeated key is answered from
# the first send): from the registry (shared/core/providers.py).
KINDS_HONOURING_IDEMPOTENCY_KEYS = frozenset(
    kind.value for kind, spec in PROVIDER_KINDS.items() if spec.honours_idempotency_keys
)


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    kind: str  # the adapter: a ProviderKind of shared/core/providers.py
    active: bool = True
    rate_per_s: float | None = None  # None: no limit of ours
    burst: int | None = None
    reserved_share: float = 0.0  # of the burst, kept for high-priority messages
    pacing_gap_s: float = 0.0  # the shortest gap between two messages of one sender identity
    pacing_gap_max_s: float = 0.0  # the longest (a random gap in between); at most the shortest: fixed
    settings: Mapping[str, Any] = field(default_factory=dict)  # endpoint, credentials (never logged)
    idempotency_keys: bool | None = None  # None: what the kind does (KINDS_HONOURING_IDEMPOTENCY_KEYS)
    in_doubt: InDoubtPolicy = InDoubtPolicy.HOLD
    receipt_timeout_s: float | None = None  # a SENT log without a delivery report after this is overdue

    @property
    def honours_idempotency_keys(self) -> bool:
        if self.idempotency_keys is not None:
            return self.idempotency_keys
        return self.kind in KINDS_HONOURING_IDEMPOTENCY_KEYS

    def __repr__(self) -> str:  # settings hold credentials
        return f"ProviderSpec(name={self.name!r}, kind={self.kind!r}, active={self.active})"


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    priority: int = 0  # lower goes first
    weight: int = 100
    cost: float = 0.0
    active: bool = True
    destinations: tuple[str, ...] = ()  # countries (GB) and E.164 prefixes (+4477); empty: every one


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    strategy: Strategy = Strategy.FALLBACK
    retry: RetryPolicy | None = None  # None: the global backoff settings
    max_cost: float | None = None  # providers dearer than this are used only as a last resort
    min_success_rate: float | None = None  # providers less reliable than this: likewise
    failover_after: int | None = None  # consecutive transient failures of one log before the next provider
    retry_after_tolerance_s: float | None = None  # a 429 asking to wait longer moves to the next provider


@dataclass(frozen=True, slots=True)
class TenantRoute:
    priority: int
    active: bool = True


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    version: int = 0
    providers: Mapping[str, ProviderSpec] = field(default_factory=dict)
    routes: Mapping[str, tuple[Route, ...]] = field(default_factory=dict)
    policies: Mapping[str, ChannelPolicy] = field(default_factory=dict)
    tenant_routes: Mapping[tuple[str, str], Mapping[str, TenantRoute]] = field(default_factory=dict)
    # (tenant, channel) -> channels to fall back to, in order (``tenant_channel_fallbacks``)
    channel_fallbacks: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_chains(cls, chains: Mapping[str, Sequence[str]], kind: str = "mock_json") -> RoutingConfig:
        """The configuration implied by ``Settings.provider_chains`` (used while the tables are empty)."""
        providers = {name: ProviderSpec(name, kind) for chain in chains.values() for name in chain}
        routes = {ch: tuple(Route(p, i) for i, p in enumerate(chain)) for ch, chain in chains.items()}
        return cls(0, providers, routes, {}, {})

    def policy(self, channel: str) -> ChannelPolicy:
        return self.policies.get(channel) or ChannelPolicy()

    def ordered(self, tenant: str, channel: str) -> list[Route]:
        """The channel's usable routes in priority order, with the tenant's overrides applied."""
        overrides = self.tenant_routes.get((tenant, channel), {})
        usable = []
        for route in self.routes.get(channel, ()):
            spec = self.providers.get(route.provider)
            override = overrides.get(route.provider)
            if override is not None:
                route = replace(route, priority=override.priority, active=route.active and override.active)
            if route.active and spec is not None and spec.active:
                usable.append(route)
        return sorted(usable, key=lambda r: (r.priority, r.provider))

    def tiers(self, tenant: str, channel: str, recipient: str | None = None) -> list[list[Route]]:
        """The usable routes for ``recipient``, grouped by how specifically their destinations match
        it, most specific first (longest prefix wins); catch-all routes last; routes for other
        destinations left out. Without a recipient, every usable route in one tier."""
        routes = self.ordered(tenant, channel)
        if recipient is None or not any(r.destinations for r in routes):
            return [routes] if routes else []
        grouped: dict[float, list[Route]] = {}
        for route in routes:
            score = specificity(route.destinations, recipient)
            if score is not None:
                grouped.setdefault(score, []).append(route)
        return [grouped[score] for score in sorted(grouped, reverse=True)]

    def chain(self, tenant: str, channel: str, recipient: str | None = None) -> list[str]:
        return [r.provider for tier in self.tiers(tenant, channel, recipient) for r in tier]

    def fallback_channels(self, tenant: str, channel: str) -> tuple[str, ...]:
        return self.channel_fallbacks.get((tenant, channel), ())

    def fallback_chain(self, tenant: str, channel: str, recipient: str | None = None) -> list[str]:
        """Where a failed attempt may move next: the chain, or only its head for ``primary``."""
        chain = self.chain(tenant, channel, recipient)
        return chain[:1] if self.policy(channel).strategy == Strategy.PRIMARY else chain


def rank(
    strategy: Strategy,
    routes: Sequence[Route],
    *,
    turn: int = 0,
    rng: random.Random | None = None,
    success_rates: Mapping[str, float] | None = None,
) -> list[Route]:
    """The order in which ``strategy`` would try ``routes`` (already in priority order)."""
    routes = list(routes)
    if not routes:
        return []
    if strategy == Strategy.PRIMARY:
        return routes[:1]
    if strategy == Strategy.ROUND_ROBIN:
        k = turn % len(routes)
        return routes[k:] + routes[:k]
    if strategy == Strategy.WEIGHTED:
        return weighted_order(routes, rng or random.Random())
    if strategy == Strategy.LEAST_COST:
        return sorted(routes, key=lambda r: r.cost)  # stable: priority breaks ties
    if strategy == Strategy.HIGHEST_RELIABILITY:
        rates = success_rates or {}
        return sorted(routes, key=lambda r: -rates.get(r.provider, UNKNOWN_SUCCESS_RATE))
    return routes


UNKNOWN_SUCCESS_RATE = 0.9  # the prior of a provider without recent attempts


def weighted_order(routes: Sequence[Route], rng: random.Random) -> list[Route]:
    """Weighted sampling without replacement (Efraimidis-Spirakis); weight 0 goes last."""
    keyed = [(rng.random() ** (1.0 / r.weight) if r.weight > 0 else -1.0, i) for i, r in enumerate(routes)]
    return [routes[i] for _, i in sorted(keyed, key=lambda k: (-k[0], k[1]))]


def success_rate(
    successes: int, calls: int, prior: float = UNKNOWN_SUCCESS_RATE, weight: float = 5.0
) -> float:
    """Rolling success rate smoothed towards ``prior``, so a provider's first calls do not swing it."""
    return (successes + prior * weight) / (calls + weight)


@dataclass(frozen=True, slots=True)
class Candidate:
    route: Route
    # Set when a threshold demotes this provider to a last resort: why it was passed over.
    demoted: FallbackReason | None = None


def candidates(
    ranked: Sequence[Route],
    policy: ChannelPolicy,
    *,
    preferred: str | None = None,
    success_rates: Mapping[str, float] | None = None,
) -> list[Candidate]:
    """``ranked`` with the preferred provider (a retry's) first, and providers that fail the cost or
    quality threshold moved to the end, so that they are used only when nothing else can be."""
    order = list(ranked)
    if preferred is not None:
        order.sort(key=lambda r: r.provider != preferred)
    rates = success_rates or {}
    good: list[Candidate] = []
    demoted: list[Candidate] = []
    for route in order:
        if policy.max_cost is not None and route.cost > policy.max_cost:
            demoted.append(Candidate(route, FallbackReason.COST_THRESHOLD))
        elif (
            policy.min_success_rate is not None
            and rates.get(route.provider, UNKNOWN_SUCCESS_RATE) < policy.min_success_rate
        ):
            demoted.append(Candidate(route, FallbackReason.QUALITY_THRESHOLD))
        else:
            good.append(Candidate(route))
    return good + demoted
