"""Liveness, readiness and Prometheus metrics (no API key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from services.api.deps import Context
from services.api.errors import COMMON_RESPONSES
from shared.runtime.metrics import READY

router = APIRouter(tags=["health"])


class HealthOut(BaseModel):
    status: str
    failing: list[str] = []


@router.get("/healthz", response_model=HealthOut, summary="The process is alive")
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=HealthOut,
    summary="Ready to serve: PostgreSQL answers",
    responses={503: {"model": HealthOut, "description": "Not ready."}},
)
async def readyz(context: Context) -> Response:
    if await context.db.ping():
        READY.set(1)
        return JSONResponse(HealthOut(status="ready").model_dump())
    READY.set(0)
    return JSONResponse(HealthOut(status="not ready", failing=["postgres"]).model_dump(), status_code=503)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


__all__ = ["COMMON_RESPONSES", "router"]
