"""/v1/contact-lists: upload a CSV of contacts (validated, with a report of rejected rows), read, list."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, UploadFile

from services.api.contacts_csv import ContactFile, CsvError, parse_contacts
from services.api.context import ApiContext
from services.api.deps import Caller, Context
from services.api.errors import ErrorDetail, NotFound, PayloadTooLarge, Unprocessable
from services.api.outbound import refused_destinations
from services.api.schemas.common import MAX_BIGINT, Name
from services.api.schemas.contacts import (
    MAX_REPORTED,
    ContactListOut,
    ContactListPage,
    ContactListReport,
    RejectedRow,
)
from services.api.store import contacts as store
from shared.core.models import Channel
from shared.runtime.logs import get_logger

log = get_logger("api.contacts")
router = APIRouter(prefix="/v1/contact-lists", tags=["contact lists"])
ListId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]


async def _drop_refused_webhooks(context: ApiContext, tenant: str, parsed: ContactFile) -> None:
    refused = await refused_destinations(context.settings, tenant, [c.recipient for c in parsed.contacts])
    if not refused:
        return
    kept = [c for c in parsed.contacts if c.recipient not in refused]
    for contact in parsed.contacts:
        if contact.recipient in refused:
            parsed.reject(contact.row, refused[contact.recipient])
    parsed.rejected.sort(key=lambda r: r.row)
    parsed.contacts = kept


@router.post("", status_code=201, response_model=ContactListReport, summary="Upload a CSV contact list")
async def upload_contacts(
    context: Context,
    principal: Caller,
    name: Annotated[Name, Form(description="A name for the list.")],
    channel: Annotated[Channel, Form(description="The channel the recipients are for.")],
    file: Annotated[UploadFile, File(description="CSV, UTF-8, header row with a `recipient` column.")],
) -> ContactListReport:
    limit = context.settings.api_max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"the file is larger than {limit} bytes")
    try:
        parsed = await asyncio.to_thread(
            parse_contacts, data, channel.value, context.settings.api_max_contacts
        )
    except CsvError as exc:
        raise Unprocessable(str(exc), code="invalid_csv") from exc
    if channel == Channel.WEBHOOK:
        await _drop_refused_webhooks(context, principal.tenant, parsed)
    rejected = [RejectedRow(row=r.row, reason=r.reason) for r in parsed.rejected[:MAX_REPORTED]]
    if not parsed.contacts:
        details = [ErrorDetail(loc=["file", r.row], message=r.reason) for r in rejected]
        raise Unprocessable("the file has no valid contact", code="no_valid_contacts", details=details)
    async with context.db.transaction() as conn:
        row = await store.insert_list(conn, principal.tenant, name, channel.value, parsed)
    log.info(
        "contact_list_created",
        tenant=principal.tenant,
        list_id=row["id"],
        contacts=len(parsed.contacts),
        rejected=parsed.rejected_count,
    )
    return ContactListReport(**dict(row), rejected=rejected)


@router.get("", response_model=ContactListPage, summary="List contact lists")
async def list_contact_lists(context: Context, principal: Caller) -> ContactListPage:
    async with context.db.connection() as conn:
        rows = await store.list_lists(conn, principal.tenant)
    return ContactListPage(items=[ContactListOut(**dict(r)) for r in rows])


@router.get("/{list_id:int}", response_model=ContactListOut, summary="A contact list")
async def get_contact_list(list_id: ListId, context: Context, principal: Caller) -> ContactListOut:
    async with context.db.connection() as conn:
        row = await store.get_list(conn, principal.tenant, list_id)
    if row is None:
        raise NotFound(f"no contact list {list_id}")
    return ContactListOut(**dict(row))
