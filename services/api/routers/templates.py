"""/v1/templates: create (validated), read, list, preview a rendering."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from services.api.deps import Caller, Context
from services.api.errors import Conflict, NotFound, Unprocessable
from services.api.schemas.common import MAX_BIGINT
from services.api.schemas.templates import (
    PreviewOut,
    PreviewRequest,
    TemplateCreate,
    TemplateList,
    TemplateOut,
)
from services.api.store import templates as store
from services.api.templating import RenderTooLarge, Template, TemplateError, parse, render
from shared.runtime.logs import get_logger

log = get_logger("api.templates")
router = APIRouter(prefix="/v1/templates", tags=["templates"])
TemplateId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]


def template_of(row: Any) -> Template:
    return Template(fields=dict(row["content"]), variables=tuple(row["variables"]))


@router.post("", status_code=201, response_model=TemplateOut, summary="Create a template")
async def create_template(body: TemplateCreate, context: Context, principal: Caller) -> TemplateOut:
    try:
        template = parse(body.content)
    except TemplateError as exc:
        raise Unprocessable(str(exc), code="invalid_template") from exc
    async with context.db.transaction() as conn:
        row = await store.insert_template(
            conn, principal.tenant, body.name, body.channel.value, template.fields, list(template.variables)
        )
    if row is None:
        raise Conflict(f"a template named {body.name!r} exists already", code="duplicate_name")
    log.info("template_created", tenant=principal.tenant, template_id=row["id"])
    return TemplateOut(**dict(row))


@router.get("", response_model=TemplateList, summary="List templates")
async def list_templates(context: Context, principal: Caller) -> TemplateList:
    async with context.db.connection() as conn:
        rows = await store.list_templates(conn, principal.tenant)
    return TemplateList(items=[TemplateOut(**dict(r)) for r in rows])


@router.get("/{template_id:int}", response_model=TemplateOut, summary="A template")
async def get_template(template_id: TemplateId, context: Context, principal: Caller) -> TemplateOut:
    async with context.db.connection() as conn:
        row = await store.get_template(conn, principal.tenant, template_id)
    if row is None:
        raise NotFound(f"no template {template_id}")
    return TemplateOut(**dict(row))


@router.post(
    "/{template_id:int}/preview", response_model=PreviewOut, summary="Render a template with variables"
)
async def preview_template(
    template_id: TemplateId, body: PreviewRequest, context: Context, principal: Caller
) -> PreviewOut:
    async with context.db.connection() as conn:
        row = await store.get_template(conn, principal.tenant, template_id)
    if row is None:
        raise NotFound(f"no template {template_id}")
    try:
        return PreviewOut(payload=render(template_of(row), body.variables))
    except RenderTooLarge as exc:
        raise Unprocessable(str(exc), code="payload_too_large") from exc
    except TemplateError as exc:
        raise Unprocessable(str(exc), code="missing_variables") from exc
