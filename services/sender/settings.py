"""The sender's settings: providers, batching, circuit breakers, rate limits, webhooks and the mock client."""

from __future__ import annotations

from pydantic import Field

from services.mock_provider.settings import MockClient
from shared.runtime.settings import (
    DEV_WEBHOOK_SECRET,
    LaneChoice,
    OutboundPolicy,
    ProviderChains,
    ShardConsumer,
    WebhookSigning,
)


class SenderSettings(ShardConsumer, LaneChoice, ProviderChains, OutboundPolicy, WebhookSigning, MockClient):
    # Where providers without an endpoint of their own are reached: the mock provider.
    provider_url: str = "http://127.0.0.1:8081"
    provider_timeout_s: float = Field(10.0, gt=0)
    provider_concurrency: int = Field(256, ge=1)
    # Providers with a bulk API (the mock's JSON API): sends go out as one request of up to this many
    # messages (1: one request per message). Per provider and channel at most provider_batch_in_flight
    # requests are in flight; a send that finds a free slot goes at once, the others gather until a
    # request returns (services/sender/adapters/batching.py). An urgent send always goes at once.
    provider_batch_max: int = Field(100, ge=1, le=1000)
    provider_batch_in_flight: int = Field(4, ge=1, le=256)

    reliability_refresh_s: float = Field(5.0, gt=0)
    reliability_window: int = Field(200, ge=1)
    # The breaker opens when at least failure_ratio of a provider's last circuit_window calls (at least
    # circuit_min_calls of them) failed: 5xx, timeouts, 429s and unavailability count.
    circuit_window: int = Field(20, ge=1)
    circuit_failure_ratio: float = Field(0.5, gt=0, le=1)
    circuit_min_calls: int = Field(10, ge=1)
    circuit_open_s: float = Field(30.0, gt=0)
    circuit_probe_grace_s: float = Field(5.0, ge=0)
    # A message waits this long at most for its provider's rate limit or pacing (then: another
    # provider, or a deferral RATE_LIMITED_LOCALLY: back to PENDING, no attempt used).
    rate_limit_max_wait_s: float = Field(30.0, ge=0)
    rate_limit_lease_s: float = Field(0.05, gt=0)

    def own_development_secrets(self) -> list[str]:
        found = super().own_development_secrets()
        if self.webhook_signing_secret.get_secret_value() == DEV_WEBHOOK_SECRET:
            found.append("SWITCHBOARD_WEBHOOK_SIGNING_SECRET")
        return found
