"""Requests and responses of /v1/campaigns."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.api.schedule import CampaignStatus, ScheduleError, validate_cron, zone
from services.api.schemas.common import BodyId, Name, Page, Priority, Text, Timestamp


class CampaignCreate(BaseModel):
    """A template sent to every contact of a list: now, at ``start_at``, or on a ``cron`` schedule."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    template_id: BodyId
    contact_list_id: BodyId
    priority: Priority = 2
    max_attempts: int | None = Field(None, ge=1, le=100, strict=True)
    start_at: Timestamp | None = Field(
        None, description="One-off campaigns: when to send; cron: first run after."
    )
    cron: Text | None = Field(None, max_length=100, description="Five-field cron, read in `timezone`.")
    timezone: Text = Field("UTC", max_length=64)
    end_at: Timestamp | None = Field(None, description="Cron campaigns: no run after this time.")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return validate_cron(value)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zone(value)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @model_validator(mode="after")
    def _window(self) -> CampaignCreate:
        if self.end_at is not None:
            if self.cron is None:
                raise ValueError("end_at applies to cron campaigns only")
            if self.start_at is not None and self.end_at <= self.start_at:
                raise ValueError("end_at must be after start_at")
        return self


class Progress(BaseModel):
    total: int
    pending: int
    processing: int
    sent: int
    delivered: int
    failed: int
    bounced: int
    cancelled: int
    done_ratio: float = Field(description="Share of the campaign's messages in a terminal state (0..1).")


class Counters(BaseModel):
    total: int
    sent: int
    delivered: int
    failed: int
    bounced: int
    retries: int


class CampaignOut(BaseModel):
    id: int
    name: str
    status: CampaignStatus
    template_id: int
    contact_list_id: int
    channel: str
    priority: int
    start_at: datetime | None
    cron: str | None
    timezone: str
    end_at: datetime | None
    next_run_at: datetime | None
    runs: int
    counters: Counters
    progress: Progress
    created_at: datetime
    updated_at: datetime


class CampaignPage(Page):
    items: list[CampaignOut]
