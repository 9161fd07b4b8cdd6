"""Responses of /v1/stats."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class GroupBy(StrEnum):
    OVERALL = "overall"
    CHANNEL = "channel"
    PROVIDER = "provider"
    CAMPAIGN = "campaign"


class StatsRow(BaseModel):
    key: str = Field(description="The channel, provider or campaign id; `all` for overall; `none` if unset.")
    total: int
    pending: int
    sent: int = Field(description="Accepted by a provider (SENT or DELIVERED).")
    delivered: int
    failed: int
    bounced: int
    cancelled: int
    in_doubt: int = Field(
        description="Held for an operator: an attempt may have reached a provider without idempotency keys."
    )
    receipts_overdue: int = Field(
        description="SENT without a delivery report for longer than the provider's receipt_timeout_s."
    )
    attempts: int
    attempts_succeeded: int = Field(description="Attempts a provider accepted.")
    attempts_failed: int = Field(description="Every other attempt (refused, failed, in doubt).")
    success_rate: float = Field(description="attempts_succeeded / attempts, 0..1; 0 without attempts.")
    fallbacks: int = Field(description="Attempts sent to another provider than the first in line.")
    retry_rate: float = Field(description="Attempts beyond the first, over all attempts.")
    latency_avg_ms: float | None = Field(description="Provider call latency over all attempts.")
    latency_p95_ms: float | None
    cost: float


class StatsOut(BaseModel):
    start: datetime = Field(description="Messages created at or after this time...")
    end: datetime = Field(description="...and before this one.")
    group_by: GroupBy
    groups: list[StatsRow]
