"""/v1/campaigns: create from a template and a contact list, schedule, pause, resume, cancel, progress."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query

from services.api.campaign_runs import materialise
from services.api.context import ApiContext
from services.api.deps import Caller, Context
from services.api.errors import BadRequest, Conflict, NotFound, Unprocessable
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
from services.api.schemas.campaigns import CampaignCreate, CampaignOut, CampaignPage, Counters, Progress
from services.api.schemas.common import MAX_BIGINT, Text
from services.api.store import campaigns as store
from services.api.store import contacts as contact_store
from services.api.store import templates as template_store
from shared.logs import get_logger
from shared.models import TERMINAL_STATUSES

log = get_logger("api.campaigns")
router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
CampaignId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]
_PAST = {Action.PAUSE: "paused", Action.RESUME: "resumed", Action.CANCEL: "cancelled"}


def campaign_out(row: Any, counts: dict[str, int]) -> CampaignOut:
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
    return campaign_out(row, counts[campaign_id])


@router.post("", status_code=201, response_model=CampaignOut, summary="Create (and schedule) a campaign")
async def create_campaign(body: CampaignCreate, context: Context, principal: Caller) -> CampaignOut:
    now = datetime.now(UTC)
    async with context.db.transaction() as conn:
        template = await template_store.get_template(conn, principal.tenant, body.template_id)
        if template is None:
            raise Unprocessable(f"no template {body.template_id}", code="unknown_template")
        contacts = await contact_store.get_list(conn, principal.tenant, body.contact_list_id)
        if contacts is None:
            raise Unprocessable(f"no contact list {body.contact_list_id}", code="unknown_contact_list")
        _check_compatible(template, contacts)
        status = initial_status(body.start_at, body.cron, now)
        next_run_at = None
        if body.cron is not None:
            next_run_at = next_run(body.cron, body.timezone, max(now, body.start_at or now))
            if body.end_at is not None and next_run_at > body.end_at:
                raise Unprocessable("the cron schedule has no run before end_at", code="empty_schedule")
        campaign_id = await store.insert_campaign(conn, principal.tenant, body.name, status.value)
        spec = {
            **body.model_dump(exclude={"name"}),
            "channel": template["channel"],
            "next_run_at": next_run_at,
        }
        await store.insert_spec(conn, campaign_id, spec)
        if body.cron is None:
            row = await store.get_campaign(conn, principal.tenant, campaign_id)
            assert row is not None
            await materialise(conn, row, body.start_at or now, context.shared.max_attempts)
        result = await _load(conn, principal.tenant, campaign_id)
    log.info(
        "campaign_created",
        tenant=principal.tenant,
        campaign_id=campaign_id,
        status=status.value,
        cron=body.cron,
        total=result.counters.total,
    )
    return result


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
    return CampaignPage(items=[campaign_out(r, counts[r["id"]]) for r in rows], next_cursor=next_cursor)


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
