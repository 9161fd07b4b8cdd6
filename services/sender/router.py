"""One attempt of one message: pick a provider by strategy, skip the unhealthy or saturated ones,
call it, and say why it was not the first in line (the fallback reason).

Order of checks per candidate: circuit breaker (may it be called?), pacing and rate limit (is there
room right now?), then the half-open probe slot. A first pass waits for nothing; if every provider
was saturated, a second pass waits (up to ``rate_limit_max_wait_s``) for the first one with room.
When no provider can be called (saturated beyond that wait, or every circuit open) the outcome is a
deferral, not an attempt: the responder puts the log back to PENDING for when a slot or a probe is
expected, its attempt count unchanged.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from yarl import URL

from services.sender.adapters import AdapterPool, SendRequest
from services.sender.bucket import Limit
from services.sender.circuits import HOST_SEPARATOR, CircuitBoard, is_failure
from services.sender.indoubt import held, may_have_been_sent
from services.sender.metrics import FALLBACKS, IN_DOUBT, LOCAL_REFUSALS
from services.sender.outcomes import refuse, to_outcome, validate
from services.sender.pacing import PacingStore, identity, pace
from services.sender.ratelimit import RateLimiter
from services.sender.starts import AttemptStarts, StartVerdict
from shared.core.circuit import Admission
from shared.core.errors import ConfigurationError
from shared.core.models import DispatchMessage, FallbackReason, OutcomeClass, OutcomeMessage
from shared.core.routing import (
    Candidate,
    InDoubtPolicy,
    ProviderSpec,
    Route,
    RoutingConfig,
    Strategy,
    candidates,
    pacing_gap,
    rank,
)
from shared.runtime.logs import get_logger

log = get_logger("sender")

MIN_DEFERRAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Choice:
    candidate: Candidate
    spec: ProviderSpec
    probe: int | None


def circuit_key(spec: ProviderSpec, recipient: str) -> str:
    """The circuit an attempt counts toward: the provider's, or for webhooks the destination host's."""
    if spec.kind != "webhook":
        return spec.name
    try:
        host = URL(recipient).host or ""
    except (ValueError, TypeError):
        host = ""
    return f"{spec.name}{HOST_SEPARATOR}{host.lower()}"


def limit_of(spec: ProviderSpec) -> Limit | None:
    if spec.rate_per_s is None:
        return None
    return Limit(spec.rate_per_s, spec.burst or max(1, int(spec.rate_per_s)), spec.reserved_share)


class Router:
    def __init__(
        self,
        config: Callable[[], RoutingConfig],
        success_rates: Callable[[], Mapping[str, float]],
        circuits: CircuitBoard,
        limiter: RateLimiter,
        pacing: PacingStore,
        adapters: AdapterPool,
        *,
        max_payload_bytes: int,
        max_wait_s: float,
        rng: random.Random | None = None,
        starts: AttemptStarts | None = None,
    ) -> None:
        self.config = config
        self.success_rates = success_rates
        self.circuits = circuits
        self.limiter = limiter
        self.pacing = pacing
        self.adapters = adapters
        self.max_payload_bytes = max_payload_bytes
        self.max_wait_s = max_wait_s
        self.rng = rng or random.Random()
        self.starts = starts
        self._turns: dict[tuple[str, str], itertools.count[int]] = defaultdict(itertools.count)

    async def attempt(self, message: DispatchMessage) -> OutcomeMessage:
        checked = validate(message, self.max_payload_bytes)
        if isinstance(checked, OutcomeMessage):
            return checked
        config = self.config()
        tiers = config.tiers(message.tenant, message.channel, checked)
        if not tiers:
            LOCAL_REFUSALS.labels(code="NO_PROVIDER").inc()
            routed = bool(config.ordered(message.tenant, message.channel))
            return refuse(
                message,
                "NO_PROVIDER",
                f"no provider of {message.channel} serves this destination"
                if routed
                else f"no provider configured for {message.channel}",
                OutcomeClass.RECOVERABLE,
            )
        policy = config.policy(message.channel)
        rates = self.success_rates()
        turn = next(self._turns[(message.tenant, message.channel)])
        # The strategy orders each tier (most specific destinations first) on its own.
        ranked = [
            route
            for tier in tiers
            for route in rank(policy.strategy, tier, turn=turn, rng=self.rng, success_rates=rates)
        ]
        if policy.strategy == Strategy.PRIMARY:
            ranked = ranked[:1]
        preferred = message.provider if any(r.provider == message.provider for r in ranked) else None
        order = candidates(ranked, policy, preferred=preferred, success_rates=rates)
        head = preferred or ranked[0].provider
        reasons: dict[str, FallbackReason] = {c.route.provider: c.demoted for c in order if c.demoted}
        choice = await self._choose(message, config, order, reasons, wait_s=0.0)
        if choice is None:
            saturated = [
                c for c in order if reasons.get(c.route.provider) == FallbackReason.RATE_LIMIT_EXCEEDED
            ]
            if saturated:
                choice = await self._choose(message, config, saturated[:1], reasons, wait_s=self.max_wait_s)
                if choice is None:
                    LOCAL_REFUSALS.labels(code="RATE_LIMITED_LOCALLY").inc()
                    return refuse(
                        message,
                        "RATE_LIMITED_LOCALLY",
                        "every provider is at its rate limit or pace",
                        OutcomeClass.DEFERRED,
                        provider=head,
                        # no slot within max_wait_s: the next one is at least that far away
                        retry_after_s=max(self.max_wait_s, MIN_DEFERRAL_S),
                    )
            else:
                LOCAL_REFUSALS.labels(code="ALL_PROVIDERS_UNAVAILABLE").inc()
                return refuse(
                    message,
                    "ALL_PROVIDERS_UNAVAILABLE",
                    "every provider's circuit is open",
                    OutcomeClass.DEFERRED,
                    provider=head,
                    retry_after_s=self._until_half_open(order, config, message.recipient),
                )
        provider = choice.candidate.route.provider
        reason = None if provider == head else reasons.get(head)
        if reason is not None:
            FALLBACKS.labels(channel=message.channel, reason=reason.value).inc()
        if not choice.spec.honours_idempotency_keys:
            early = await self._begin(message, config, choice)
            if early is not None:
                return early
        return await self._call(message, checked, choice, reason)

    async def _begin(
        self, message: DispatchMessage, config: RoutingConfig, choice: Choice
    ) -> OutcomeMessage | None:
        """Record the start of a call to a provider without idempotency keys; an outcome instead of
        the call when this attempt was started before (held, or a stale copy) or cannot be recorded."""
        provider = choice.candidate.route.provider
        if self.starts is None:
            return None
        try:
            check = await self.starts.begin(message.log_id, message.attempt, provider)
        except Exception as exc:  # no record, no call (a second copy could not be told from the first)
            log.warning("attempt_start_failed", log_id=message.log_id, error=repr(exc)[:300])
            LOCAL_REFUSALS.labels(code="START_NOT_RECORDED").inc()
            return refuse(
                message,
                "START_NOT_RECORDED",
                "could not record the attempt's start before calling a provider without idempotency keys",
                OutcomeClass.DEFERRED,  # nothing was sent: not an attempt
                provider=provider,
                retry_after_s=MIN_DEFERRAL_S,
            )
        if check.verdict == StartVerdict.FIRST:
            return None
        if check.verdict == StartVerdict.STALE:
            IN_DOUBT.labels(provider=provider, resolution="skipped").inc()
            return held(message, provider, "a copy of an attempt whose outcome was applied already: not sent")
        started = check.started_provider or provider
        spec = config.providers.get(started, choice.spec)
        if spec.in_doubt == InDoubtPolicy.RESEND:
            IN_DOUBT.labels(provider=started, resolution="resent").inc()
            log.warning("in_doubt_resent", log_id=message.log_id, attempt=message.attempt, provider=started)
            return None
        IN_DOUBT.labels(provider=started, resolution="held").inc()
        return held(
            message,
            started,
            f"attempt {message.attempt} was started on {started}, which does not honour idempotency keys,"
            " and its outcome never came back (a crash or an expired lease): held for an operator",
        )

    async def _choose(
        self,
        message: DispatchMessage,
        config: RoutingConfig,
        order: list[Candidate],
        reasons: dict[str, FallbackReason],
        wait_s: float,
    ) -> Choice | None:
        high = message.priority == 0
        for candidate in order:
            name = candidate.route.provider
            spec = config.providers[name]
            circuit = circuit_key(spec, message.recipient)
            if not self.circuits.would_admit(circuit):
                reasons.setdefault(name, FallbackReason.PROVIDER_UNAVAILABLE)
                continue
            deadline = time.monotonic() + wait_s
            who = identity(message.payload, spec.settings, name)
            gap_s = pacing_gap(spec.pacing_gap_s, spec.pacing_gap_max_s, self.rng)
            if not await pace(self.pacing, name, who, gap_s, wait_s) or not await self.limiter.acquire(
                name, limit_of(spec), high, max(deadline - time.monotonic(), 0.0)
            ):
                reasons[name] = FallbackReason.RATE_LIMIT_EXCEEDED
                continue
            admission, probe = self.circuits.admit(circuit)
            if admission == Admission.DENIED:
                reasons.setdefault(name, FallbackReason.PROVIDER_UNAVAILABLE)
                continue
            return Choice(candidate, spec, probe)
        return None

    async def _call(
        self, message: DispatchMessage, recipient: str, choice: Choice, reason: FallbackReason | None
    ) -> OutcomeMessage:
        route: Route = choice.candidate.route
        request = SendRequest(
            route.provider,
            message.channel,
            recipient,
            message.payload,
            message.idempotency_key,
            message.log_id,
            message.attempt,
            message.tenant,
            urgent=message.priority == 0,
        )
        circuit = circuit_key(choice.spec, message.recipient)
        try:
            adapter = self.adapters.get(choice.spec)
        except ConfigurationError as exc:  # nothing was sent: the next provider of the chain may do
            log.error("provider_misconfigured", provider=route.provider, error=str(exc))
            return refuse(
                message, "PROVIDER_MISCONFIGURED", str(exc), OutcomeClass.RECOVERABLE, provider=route.provider
            )
        try:
            result = await adapter.send(request)
        except BaseException:
            self.circuits.record(circuit, True, choice.probe, key=recipient)
            raise
        failed = is_failure(result.outcome)
        self.circuits.record(circuit, failed, choice.probe, key=recipient)
        spec = choice.spec
        if (
            not spec.honours_idempotency_keys
            and spec.in_doubt == InDoubtPolicy.HOLD
            and may_have_been_sent(result)
        ):
            IN_DOUBT.labels(provider=route.provider, resolution="held").inc()
            return held(
                message,
                route.provider,
                f"{result.error_code}: {result.error_message or ''} ({route.provider} may have sent it and"
                " does not honour idempotency keys): held for an operator",
                result.latency_ms,
            )
        return to_outcome(message, route.provider, result, reason, default_cost=route.cost)

    def _until_half_open(self, order: list[Candidate], config: RoutingConfig, recipient: str) -> float:
        now = time.time()
        waits = [
            self.circuits.breaker(circuit_key(config.providers[c.route.provider], recipient)).open_until()
            - now
            for c in order
        ]
        return max(min(waits, default=1.0), 0.5)
