"""POST /v1/messages/retry-failed: a tenant puts its own FAILED messages back to PENDING."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.api.deps import Context, Sender
from services.api.idempotency import fingerprint
from services.api.routers.messages import IdempotencyKey, reserve_or_replay
from services.api.schemas.messages import RetryFailed, RetryFailedResult
from services.api.store import idempotency as idem_store
from services.api.store import retries as store
from shared.runtime.logs import get_logger

log = get_logger("api.retries")
router = APIRouter(prefix="/v1/messages", tags=["messages"])
PATH = "/v1/messages/retry-failed"


@router.post(
    "/retry-failed",
    response_model=RetryFailedResult,
    summary="Retry FAILED messages (filters, dry run, a cap per call)",
)
async def retry_failed(
    body: RetryFailed, context: Context, principal: Sender, idempotency_key: IdempotencyKey = None
) -> Any:
    context.limit(principal, high_priority=False)
    wanted = store.RetryFilter(
        body.campaign_id,
        body.channel.value if body.channel else None,
        body.error_code,
        body.failed_from,
        body.failed_to,
    )
    budget = body.max_attempts or context.settings.max_attempts
    request_hash = fingerprint("POST", PATH, body.model_dump(mode="json"))
    async with context.db.transaction() as conn:
        if idempotency_key is not None:
            replay = await reserve_or_replay(conn, context, principal.tenant, idempotency_key, request_hash)
            if replay is not None:
                return replay
        found = await store.select_failed(conn, principal.tenant, wanted, body.limit + 1)
        chosen, more = found[: body.limit], len(found) > body.limit
        if body.dry_run:
            response = RetryFailedResult(dry_run=True, retried=len(chosen), ids=sorted(chosen), more=more)
        else:
            reset = await store.retry_failed(conn, chosen, budget)
            response = RetryFailedResult(dry_run=False, retried=len(reset), ids=reset, more=more)
        if idempotency_key is not None:
            await idem_store.save(
                conn, principal.tenant, idempotency_key, 200, response.model_dump(mode="json")
            )
    if not response.dry_run:
        log.info("failed_retried", tenant=principal.tenant, count=response.retried, more=response.more)
    return response
