"""Responses of /v1/contact-lists (the request is a multipart CSV upload)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from shared.core.models import Channel

MAX_REPORTED = 1000


class RejectedRow(BaseModel):
    row: int = Field(description="Line number in the file (the header is line 1).")
    reason: str


class ContactListOut(BaseModel):
    id: int
    name: str
    channel: Channel
    columns: list[str] = Field(description="Columns other than `recipient`: the variables of each contact.")
    contact_count: int
    rejected_count: int
    campaign_id: int | None = Field(
        None, description="Set when the list is a draft campaign's own (its JSON contacts); not reusable."
    )
    created_at: datetime


class ContactListReport(ContactListOut):
    rejected: list[RejectedRow] = Field(description=f"The rejected rows (the first {MAX_REPORTED}).")


class ContactListPage(BaseModel):
    items: list[ContactListOut]
