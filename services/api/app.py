"""The FastAPI application: routers under /v1, error handling, limits, metrics, the scheduler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.telemetry import TelemetryConfig

from services.api import handlers
from services.api.context import ApiContext
from services.api.docs import install_docs
from services.api.errors import COMMON_RESPONSES
from services.api.middleware import BodySizeLimit, RequestMetrics
from services.api.routers import campaigns, contacts, health, messages, retries, routing, stats, templates
from services.api.scheduler import run_scheduler
from services.api.settings import ApiSettings
from services.api.strict import query_names, reject_unknown_query

DESCRIPTION = """Put messages into Switchboard and read their fate.

Every `/v1` call needs a tenant's API key in the `X-API-Key` header and only ever sees that
tenant's data. Errors have one shape: `{"error": {"code", "message", "details"}}`.
"""


NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def create_app(settings: ApiSettings) -> FastAPI:
    context = ApiContext.create(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        query_names(app)  # the OpenAPI document, worked out once before the first request
        stop = asyncio.Event()
        task = None
        if settings.api_scheduler_enabled:
            task = asyncio.create_task(run_scheduler(context, stop), name="campaign-scheduler")
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await context.db.close()

    app = FastAPI(
        title="Switchboard API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by install_docs, from local assets
        redoc_url=None,
        # Metrics are Prometheus (services/api/metrics.py); FastAPI's own OpenTelemetry hooks would
        # only look up the global providers (and the environment) on every request.
        telemetry=NO_TELEMETRY,
    )
    app.state.context = context
    install_docs(app)
    handlers.install(app)
    app.include_router(health.router)
    for module in (messages, retries, campaigns, contacts, templates, stats, routing):
        app.include_router(
            module.router, responses=COMMON_RESPONSES, dependencies=[Depends(reject_unknown_query)]
        )
    app.add_middleware(
        BodySizeLimit,
        default_limit=settings.api_max_body_bytes,
        limits={"/v1/contact-lists": settings.api_max_upload_bytes + 64 * 1024},
    )
    app.add_middleware(RequestMetrics)
    return app
