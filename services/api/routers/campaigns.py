"""/v1/campaigns: create from a template and a contact list (or as a draft given contacts as JSON),
send, schedule, pause, resume, cancel, progress and stats."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query

from services.api.campaign_runs import materialise, repace
from services.api.contacts_json import ContactRow, check_rows
from services.api.context import ApiContext
from services.api.deps import Caller, Context
from services.api.errors import BadRequest, Conflict, ErrorDetail, NotFound, PayloadTooLarge, Unprocessable
from services.api.paging import CursorError, decode_cursor, page
from services.api.schedule import (
    Action,
    CampaignStatus,
    TransitionError,
    initial_status,
    next_run,
    resumed_status,
    transition,
)
from services.api.schemas.campaigns import (
    CampaignCreate,
    CampaignOut,
    CampaignPage,
    ContactIn,
    ContactsAdded,
    Counters,
    Progress,
    RejectedContact,
    SendCampaign,
    Stats,
)
from services.api.schemas.common import MAX_BIGINT, Text
from services.api.schemas.contacts import MAX_REPORTED
from services.api.store import campaigns as store
from services.api.store import contacts as contact_store
from services.api.store import templates as template_store
from services.api.templating import RenderTooLarge
from shared.core.models import TERMINAL_STATUSES
from shared.runtime.logs import get_logger

log = get_logger("api.campaigns")
router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
CampaignId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]
_PAST = {Action.PAUSE: "paused", Action.RESUME: "resumed", Action.CANCEL: "cancelled", Action.SEND: "sent"}
MAX_CONTACT_ROWS = 10_000


def stats_of(counts: dict[str, int]) -> Stats:
    """The counts per status in the shape users expect (see :class:`Stats`)."""
    sent = counts.get("SENT", 0) + counts.get("DELIVERED", 0)
    failed = counts.get("FAILED", 0) + counts.get("BOUNCED", 0)
    finished = sent + failed
    return Stats(
        total=sum(counts.values()),
        pending=counts.get("PENDING", 0) + counts.get("PROCESSING", 0),
        sent=sent,
        delivered=counts.get("DELIVERED", 0),
        failed=failed,
        success_rate=round(sent / finished, 4) if finished else 0.0,
    )


def campaign_out(row: Any, counts: dict[str, int], eta: datetime | None = None) -> CampaignOut:
    total = sum(counts.values())
    done = sum(n for status, n in counts.items() if status in TERMINAL_STATUSES)
    return CampaignOut(
        **{
            k: row[k]
            for k in (
                "id",
                "name",
                "status",
                "template_id",
                "contact_list_id",
                "channel",
                "priority",
                "start_at",
                "cron",
                "end_at",
                "next_run_at",
                "runs",
                "created_at",
                "updated_at",
            )
        },
        timezone=row["timezone"] or "UTC",
        pacing=row["pacing"],
        eta=eta if row["pacing"] != "none" else None,
        stats=stats_of(counts),
        counters=Counters(
            total=row["total_count"],
            sent=row["sent_count"],
            delivered=row["delivered_count"],
            failed=row["failed_count"],
            bounced=row["bounced_count"],
            retries=row["retry_count"],
        ),
        progress=Progress(
            total=total,
            pending=counts.get("PENDING", 0),
            processing=counts.get("PROCESSING", 0),
            sent=counts.get("SENT", 0),
            delivered=counts.get("DELIVERED", 0),
            failed=counts.get("FAILED", 0),
            bounced=counts.get("BOUNCED", 0),
            cancelled=counts.get("CANCELLED", 0),
            done_ratio=round(done / total, 4) if total else 0.0,
        ),
    )


async def _load(conn: asyncpg.Connection, tenant: str, campaign_id: int) -> CampaignOut:
    row = await store.get_campaign(conn, tenant, campaign_id)
    if row is None:
        raise NotFound(f"no campaign {campaign_id}")
    counts = await store.progress_of(conn, [campaign_id])
    etas = await store.eta_of(conn, [campaign_id])
    return campaign_out(row, counts[campaign_id], etas.get(campaign_id))


async def _materialise(conn: asyncpg.Connection, campaign: Any, run_at: datetime, max_attempts: int) -> None:
    try:
        await materialise(conn, campaign, run_at, max_attempts)
    except RenderTooLarge as exc:
        raise Unprocessable(f"a contact's message: {exc}", code="payload_too_large") from exc


@router.post("", status_code=201, response_model=CampaignOut, summary="Create (and schedule) a campaign")
async def create_campaign(body: CampaignCreate, context: Context, principal: Caller) -> CampaignOut:
    now = datetime.now(UTC)
    async with context.db.transaction() as conn:
        template = await template_store.get_template(conn, principal.tenant, body.template_id)
        if template is None:
            raise Unprocessable(f"no template {body.template_id}", code="unknown_template")
        contacts = None
        if body.contact_list_id is not None:
            contacts = await contact_store.get_list(conn, principal.tenant, body.contact_list_id)
            if contacts is None:
                raise Unprocessable(f"no contact list {body.contact_list_id}", code="unknown_contact_list")
            if contacts["campaign_id"] is not None:
                raise Unprocessable(
                    f"contact list {body.contact_list_id} belongs to campaign {contacts['campaign_id']}",
                    code="unknown_contact_list",
                )
            _check_compatible(template, contacts)
        status = CampaignStatus.DRAFT if body.draft else initial_status(body.start_at, body.cron, now)
        next_run_at = None
        if body.cron is not None:
            next_run_at = next_run(body.cron, body.timezone, max(now, body.start_at or now))
            if body.end_at is not None and next_run_at > body.end_at:
                raise Unprocessable("the cron schedule has no run before end_at", code="empty_schedule")
        campaign_id = await store.insert_campaign(conn, principal.tenant, body.name, status.value)
        list_id = body.contact_list_id
        if body.draft:
            # A draft's contacts are its own: JSON rows are added to a list that no one else uses.
            list_id = await contact_store.create_campaign_list(
                conn, principal.tenant, campaign_id, body.name, template["channel"], body.contact_list_id
            )
        spec = {
            **body.model_dump(exclude={"name", "draft"}),
            "contact_list_id": list_id,
            "pacing": body.pacing.value,
            "channel": template["channel"],
            "next_run_at": None if body.draft else next_run_at,
        }
        await store.insert_spec(conn, campaign_id, spec)
        if body.cron is None and not body.draft:
            row = await store.get_campaign(conn, principal.tenant, campaign_id)
            assert row is not None
            await _materialise(conn, row, body.start_at or now, context.settings.max_attempts)
        result = await _load(conn, principal.tenant, campaign_id)
    log.info(
        "campaign_created",
        tenant=principal.tenant,
        campaign_id=campaign_id,
        status=status.value,
        cron=body.cron,
        pacing=body.pacing.value,
        total=result.counters.total,
    )
    return result


@router.post(
    "/{campaign_id:int}/contacts",
    response_model=ContactsAdded,
    summary="Add contacts to a draft campaign (JSON rows, each validated and reported)",
)
async def add_contacts(
    campaign_id: CampaignId, rows: list[ContactIn], context: Context, principal: Caller
) -> ContactsAdded:
    if len(rows) > MAX_CONTACT_ROWS:
        raise PayloadTooLarge(f"at most {MAX_CONTACT_ROWS} contacts per request")
    if not rows:
        raise Unprocessable("the request has no contact", code="no_valid_contacts")
    given = [ContactRow(r.phone, r.email, r.recipient, r.name, dict(r.variables)) for r in rows]
    async with context.db.transaction() as conn:
        row = await store.get_campaign(conn, principal.tenant, campaign_id, lock=True)
        if row is None:
            raise NotFound(f"no campaign {campaign_id}")
        if row["status"] != CampaignStatus.DRAFT.value:
            raise Conflict(
                f"campaign {campaign_id} is {row['status']}; contacts are added to DRAFT campaigns",
                code="not_a_draft",
            )
        template = await template_store.get_template(conn, principal.tenant, row["template_id"])
        required = list(template["variables"]) if template is not None else []
        contact_list = await contact_store.lock_list(conn, row["contact_list_id"])
        checked = check_rows(given, row["channel"], required, existing=())
        existing = await contact_store.existing_recipients(
            conn, contact_list["id"], [c.recipient for c in checked.contacts]
        )
        if existing:
            checked = check_rows(given, row["channel"], required, existing=existing)
        rejected = [RejectedContact(index=r.row, reason=r.reason) for r in checked.rejected[:MAX_REPORTED]]
        if not checked.contacts:
            details = [ErrorDetail(loc=["body", r.index], message=r.reason) for r in rejected]
            raise Unprocessable("no valid contact in the request", code="no_valid_contacts", details=details)
        limit = context.settings.api_max_contacts
        if contact_list["contact_count"] + len(checked.contacts) > limit:
            raise Unprocessable(f"a campaign has at most {limit} contacts", code="too_many_contacts")
        count = await contact_store.append_contacts(
            conn, contact_list["id"], checked.contacts, checked.columns
        )
    log.info(
        "campaign_contacts_added",
        tenant=principal.tenant,
        campaign_id=campaign_id,
        added=len(checked.contacts),
        rejected=len(checked.rejected),
    )
    return ContactsAdded(
        campaign_id=campaign_id,
        added=len(checked.contacts),
        rejected_count=len(checked.rejected),
        rejected=rejected,
        contact_count=count,
    )


@router.post("/{campaign_id:int}/send", response_model=CampaignOut, summary="Send a draft campaign")
async def send_campaign(
    campaign_id: CampaignId, context: Context, principal: Caller, body: SendCampaign | None = None
) -> CampaignOut:
    now = datetime.now(UTC)
    async with context.db.transaction() as conn:
        row = await store.get_campaign(conn, principal.tenant, campaign_id, lock=True)
        if row is None:
            raise NotFound(f"no campaign {campaign_id}")
        try:
            transition(CampaignStatus(row["status"]), Action.SEND)
        except TransitionError as exc:
            raise Conflict(str(exc), code="invalid_transition") from exc
        contacts = await contact_store.get_list(conn, principal.tenant, row["contact_list_id"])
        if contacts is None or contacts["contact_count"] == 0:
            raise Unprocessable(f"campaign {campaign_id} has no contacts", code="no_contacts")
        start_at = body.start_at if body is not None and body.start_at is not None else row["start_at"]
        if body is not None and body.start_at is not None:
            if row["cron"] is not None:
                raise Unprocessable("a cron campaign runs on its schedule; start_at is for one-off ones")
            await store.set_start(conn, campaign_id, start_at)
        status = initial_status(start_at, row["cron"], now)
        await store.set_status(conn, campaign_id, status.value)
        if row["cron"] is not None:
            first = next_run(row["cron"], row["timezone"], max(now, start_at or now))
            if row["end_at"] is not None and first > row["end_at"]:
                raise Unprocessable("the cron schedule has no run before end_at", code="empty_schedule")
            await store.set_next_run(conn, campaign_id, first)
        else:
            fresh = await store.get_campaign(conn, principal.tenant, campaign_id)
            assert fresh is not None
            await _materialise(conn, fresh, start_at or now, context.settings.max_attempts)
        result = await _load(conn, principal.tenant, campaign_id)
    log.info("campaign_sent", tenant=principal.tenant, campaign_id=campaign_id, status=status.value)
    return result


@router.get(
    "/{campaign_id:int}/stats",
    response_model=Stats,
    summary="A campaign's messages: total, pending, sent, ...",
)
async def campaign_stats(campaign_id: CampaignId, context: Context, principal: Caller) -> Stats:
    async with context.db.connection() as conn:
        if await store.get_campaign(conn, principal.tenant, campaign_id) is None:
            raise NotFound(f"no campaign {campaign_id}")
        counts = await store.progress_of(conn, [campaign_id])
    return stats_of(counts[campaign_id])


def _check_compatible(template: Any, contacts: Any) -> None:
    if template["channel"] != contacts["channel"]:
        raise Unprocessable(
            f"the template is for {template['channel']} but the contact list for {contacts['channel']}",
            code="channel_mismatch",
        )
    missing = sorted(set(template["variables"]) - set(contacts["columns"]))
    if missing:
        raise Unprocessable(
            f"the contact list has no column for the template variables: {', '.join(missing)}",
            code="missing_variables",
        )


@router.get("", response_model=CampaignPage, summary="List campaigns, newest first")
async def list_campaigns(
    context: Context,
    principal: Caller,
    status: CampaignStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[Text | None, Query(max_length=200)] = None,
) -> CampaignPage:
    try:
        after = decode_cursor(cursor) if cursor else None
    except CursorError as exc:
        raise BadRequest(str(exc), code="invalid_cursor") from exc
    async with context.db.connection() as conn:
        rows = await store.list_campaigns(
            conn, principal.tenant, after, limit + 1, status.value if status else None
        )
        count, next_cursor = page([r["id"] for r in rows], limit)
        rows = rows[:count]
        counts = await store.progress_of(conn, [r["id"] for r in rows])
        etas = await store.eta_of(conn, [r["id"] for r in rows if r["pacing"] != "none"])
    items = [campaign_out(r, counts[r["id"]], etas.get(r["id"])) for r in rows]
    return CampaignPage(items=items, next_cursor=next_cursor)


@router.get(
    "/{campaign_id:int}", response_model=CampaignOut, summary="A campaign with its counters and progress"
)
async def get_campaign(campaign_id: CampaignId, context: Context, principal: Caller) -> CampaignOut:
    async with context.db.connection() as conn:
        return await _load(conn, principal.tenant, campaign_id)


async def _act(context: ApiContext, tenant: str, campaign_id: int, action: Action) -> CampaignOut:
    now = datetime.now(UTC)
    async with context.db.transaction() as conn:
        row = await store.get_campaign(conn, tenant, campaign_id, lock=True)
        if row is None:
            raise NotFound(f"no campaign {campaign_id}")
        try:
            transition(CampaignStatus(row["status"]), action)
        except TransitionError as exc:
            raise Conflict(str(exc), code="invalid_transition") from exc
        if action is Action.PAUSE:
            moved = await store.pause_logs(conn, campaign_id)
            await store.set_status(conn, campaign_id, CampaignStatus.PAUSED.value)
        elif action is Action.RESUME:
            moved = await store.resume_logs(conn, campaign_id)
            await repace(conn, row, now)
            status = resumed_status(row["start_at"], row["cron"], row["runs"], now)
            await store.set_status(conn, campaign_id, status.value)
            if row["cron"] is not None and row["next_run_at"] is not None and row["next_run_at"] < now:
                # Runs missed while paused are skipped: the next one is the first after now.
                await store.set_next_run(conn, campaign_id, next_run(row["cron"], row["timezone"], now))
        else:
            moved = await store.cancel_logs(conn, campaign_id)
            await store.set_status(conn, campaign_id, CampaignStatus.CANCELLED.value)
            await store.set_next_run(conn, campaign_id, None)
        result = await _load(conn, tenant, campaign_id)
    log.info("campaign_" + _PAST[action], tenant=tenant, campaign_id=campaign_id, logs=moved)
    return result


@router.post(
    "/{campaign_id:int}/pause", response_model=CampaignOut, summary="Pause: hold its pending messages"
)
async def pause_campaign(campaign_id: CampaignId, context: Context, principal: Caller) -> CampaignOut:
    return await _act(context, principal.tenant, campaign_id, Action.PAUSE)


@router.post("/{campaign_id:int}/resume", response_model=CampaignOut, summary="Resume a paused campaign")
async def resume_campaign(campaign_id: CampaignId, context: Context, principal: Caller) -> CampaignOut:
    return await _act(context, principal.tenant, campaign_id, Action.RESUME)


@router.post(
    "/{campaign_id:int}/cancel", response_model=CampaignOut, summary="Cancel: its pending messages too"
)
async def cancel_campaign(campaign_id: CampaignId, context: Context, principal: Caller) -> CampaignOut:
    return await _act(context, principal.tenant, campaign_id, Action.CANCEL)
