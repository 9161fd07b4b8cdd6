"""The poller's settings: claiming, leases, the per-lane time budget and the ordering gate."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from shared.runtime.settings import LaneChoice


class Ordering(StrEnum):
    STRICT = "strict"
    BEST_EFFORT = "best_effort"


class PollerSettings(LaneChoice):
    batch_size: int = Field(500, ge=1, le=10_000)
    # The poller is woken by LISTEN/NOTIFY when logs due now are inserted; it polls every poll_interval_s
    # anyway (retries, resumed campaigns), and cycles at most once per poll_min_interval_s (batching).
    poll_interval_s: float = Field(0.2, gt=0)
    poll_min_interval_s: float = Field(0.01, ge=0)
    lease_s: float = Field(120.0, gt=0)
    # Per lane, the poller keeps at most dispatch_budget_s of the measured drain rate waiting in the
    # broker, never fewer than dispatch_min_backlog nor more than max_dispatch_depth messages.
    dispatch_budget_s: float = Field(2.0, gt=0, le=600)
    dispatch_min_backlog: int = Field(200, ge=1)
    max_dispatch_depth: int = Field(20_000, ge=1)
    starvation_after_s: float = Field(30.0, ge=0)
    starvation_share: float = Field(0.1, ge=0, le=1)
    ordering: Ordering = Ordering.STRICT
