"""Requests and responses of /v1/routes: the provider routing of each channel."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.models import Channel

ProviderName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


class RouteIn(BaseModel):
    """One provider in a channel's chain; lower ``position`` is tried first, ``weight`` splits ties."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel
    provider: ProviderName
    position: int = Field(0, ge=0, le=1000, strict=True)
    active: bool = Field(True, strict=True)
    weight: int = Field(100, ge=0, le=1000, strict=True)
    cost_per_message: float = Field(0.0, ge=0, le=1000, strict=True, description="Kept to 6 decimal places.")
    rate_limit_per_s: float | None = Field(None, gt=0, le=1_000_000, strict=True)
    burst: int | None = Field(None, ge=1, le=1_000_000, strict=True)


class RouteOut(BaseModel):
    id: int
    channel: Channel
    provider: str
    position: int
    active: bool
    weight: int
    cost_per_message: float
    rate_limit_per_s: float | None
    burst: int | None
    created_at: datetime
    updated_at: datetime


class RouteList(BaseModel):
    items: list[RouteOut]
