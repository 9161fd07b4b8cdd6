"""/v1/contact-lists: upload a CSV of contacts (validated, with a report of rejected rows), read, list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, UploadFile

from services.api.contacts_csv import CsvError, parse_contacts
from services.api.deps import Caller, Context
from services.api.errors import ErrorDetail, NotFound, PayloadTooLarge, Unprocessable
from services.api.schemas.common import MAX_BIGINT, Name
from services.api.schemas.contacts import (
    MAX_REPORTED,
    ContactListOut,
    ContactListPage,
    ContactListReport,
    RejectedRow,
)
from services.api.store import contacts as store
from shared.logs import get_logger
from shared.models import Channel

log = get_logger("api.contacts")
router = APIRouter(prefix="/v1/contact-lists", tags=["contact lists"])
ListId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]


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
        parsed = parse_contacts(data, channel.value, context.settings.api_max_contacts)
    except CsvError as exc:
        raise Unprocessable(str(exc), code="invalid_csv") from exc
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
        rejected=len(parsed.rejected),
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
