"""The responder's settings: the retry policy, failover, deferrals, dead letters and batching."""

from __future__ import annotations

from pydantic import Field

from shared.runtime.settings import ProviderChains, ShardConsumer


class ResponderSettings(ShardConsumer, ProviderChains):
    # A dead letter being relayed is marked this long; a mark that runs out (its relay died) makes the
    # row "in doubt", resolved by looking for its letter in the DLQ (services/responder/relay.py).
    dead_letter_lease_s: float = Field(60.0, ge=1, le=3600)
    backoff_base_s: float = Field(5.0, ge=0)
    backoff_cap_s: float = Field(300.0, ge=0)
    backoff_jitter: float = Field(0.2, ge=0, le=1)
    # Failover (channel_policies may override the first two per channel): after this many consecutive
    # transient failures of one log on one provider, its next attempt goes to the next provider; a 429
    # whose Retry-After is longer than the tolerance moves on at once.
    failover_after: int = Field(2, ge=1, le=100)
    retry_after_tolerance_s: float = Field(30.0, ge=0)
    # A log deferred this many times (every provider saturated or open, again and again) has its next
    # deferral counted as a failed attempt, so that it reaches a terminal state in the end.
    max_deferrals: int = Field(1000, ge=1)
    # How often the responder counts SENT logs whose delivery report is overdue (shared/db/overdue.py).
    receipts_overdue_every_s: float = Field(15.0, gt=0)
    responder_batch_size: int = Field(500, ge=1, le=10_000)
    # 0: a batch is what has arrived while the previous one was written (no waiting under light load).
    responder_batch_wait_s: float = Field(0.0, ge=0)
