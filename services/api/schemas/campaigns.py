"""Requests and responses of /v1/campaigns."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

from services.api.schedule import CampaignStatus, ScheduleError, validate_cron, zone
from services.api.schemas.common import BodyId, Name, Page, Priority, Text, Timestamp
from shared.core.routing import Pacing


class CampaignCreate(BaseModel):
    """A template sent to every contact of a list: now, at ``start_at``, or on a ``cron`` schedule;
    or a draft, which gets contacts (``POST .../contacts``) and is sent with ``POST .../send``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "spring sale", "template_id": 1, "contact_list_id": 1, "pacing": "balanced"},
                {
                    "name": "weekly digest",
                    "template_id": 2,
                    "contact_list_id": 1,
                    "cron": "0 9 * * MON",
                    "timezone": "Europe/Paris",
                },
                {"name": "draft for review", "template_id": 1, "draft": True},
            ]
        },
    )

    name: Name
    template_id: BodyId
    contact_list_id: BodyId | None = Field(
        None, description="Required unless `draft`; a draft starts with a copy of this list's contacts."
    )
    draft: bool = Field(False, description="Create as DRAFT: nothing is sent until `POST .../send`.")
    pacing: Pacing = Field(
        Pacing.NONE,
        description="Gap between two messages of one sender identity: fast 2-5 s, balanced 5-10 s,"
        " safe 10-30 s (random inside the range).",
    )
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
        if self.contact_list_id is None and not self.draft:
            raise ValueError("contact_list_id is required (or create a draft and add contacts to it)")
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


class Stats(BaseModel):
    """The campaign's messages as users count them (PENDING includes PROCESSING; ``sent`` includes
    DELIVERED; ``failed`` includes BOUNCED; CANCELLED ones count only in ``total``)."""

    model_config = ConfigDict(populate_by_name=True)

    total: int
    pending: int
    sent: int
    delivered: int
    failed: int
    success_rate: float = Field(
        alias="successRate",
        description="sent / (sent + failed), 0..1; 0 while nothing has finished.",
    )


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
    pacing: Pacing
    eta: datetime | None = Field(
        description="Paced campaigns: when the last pending message is due (its run's end); else null."
    )
    counters: Counters
    progress: Progress
    stats: Stats
    created_at: datetime
    updated_at: datetime


class CampaignPage(Page):
    items: list[CampaignOut]


Variables = dict[
    Annotated[StrictStr, Field(min_length=1, max_length=64)], Annotated[StrictStr, Field(max_length=2000)]
]


class ContactIn(BaseModel):
    """One contact of ``POST /v1/campaigns/{id}/contacts``: ``phone`` (sms, mms, whatsapp, signal),
    ``email`` (email) or ``recipient`` (any channel), an optional ``name`` and template ``variables``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"phone": "+14155550100", "name": "Ada", "variables": {"code": "A1"}}]
        },
    )

    phone: Annotated[Text, Field(max_length=64)] | None = None
    email: Annotated[Text, Field(max_length=320)] | None = None
    recipient: Annotated[Text, Field(max_length=2048)] | None = None
    name: Annotated[Text, Field(max_length=2000)] | None = None
    variables: Variables = Field(default_factory=dict, max_length=100)


class RejectedContact(BaseModel):
    index: int = Field(description="Position of the row in the request, from 0.")
    reason: str


class ContactsAdded(BaseModel):
    campaign_id: int
    added: int
    rejected_count: int
    rejected: list[RejectedContact] = Field(description="The rejected rows (the first 1000).")
    contact_count: int = Field(description="Contacts the campaign has now.")


class SendCampaign(BaseModel):
    """Optional body of ``POST /v1/campaigns/{id}/send``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"start_at": "2030-01-01T09:00:00Z"}]}
    )

    start_at: Timestamp | None = Field(None, description="Send at this time instead of now (one-off drafts).")
