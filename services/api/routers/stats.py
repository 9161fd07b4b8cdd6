"""/v1/stats: outcomes, retry rate, latency and cost over a time range, grouped as asked."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from services.api.deps import Caller, Context
from services.api.errors import Unprocessable
from services.api.schemas.common import Timestamp
from services.api.schemas.stats import GroupBy, StatsOut
from services.api.statistics import merge, resolve_range
from services.api.store import stats as store

router = APIRouter(prefix="/v1/stats", tags=["statistics"])


@router.get("", response_model=StatsOut, summary="Statistics of messages created in a time range")
async def get_stats(
    context: Context,
    principal: Caller,
    group_by: GroupBy = GroupBy.OVERALL,
    start: Annotated[Timestamp | None, Query(description="Default: 24 hours before `end`.")] = None,
    end: Annotated[Timestamp | None, Query(description="Default: now.")] = None,
) -> StatsOut:
    try:
        start, end = resolve_range(start, end, datetime.now(UTC), context.settings.api_stats_max_days)
    except ValueError as exc:
        raise Unprocessable(str(exc), code="invalid_range") from exc
    async with context.db.connection() as conn:
        outcomes = await store.outcomes(conn, principal.tenant, group_by, start, end)
        attempts = await store.attempts(conn, principal.tenant, group_by, start, end)
    groups = merge([dict(r) for r in outcomes], [dict(r) for r in attempts])
    if not groups and group_by is GroupBy.OVERALL:
        groups = merge([{"key": "all"}], [])
    return StatsOut(start=start, end=end, group_by=group_by, groups=groups)
