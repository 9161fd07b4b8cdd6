"""/v1/messages: send one, send a batch, read, list, cancel."""

from __future__ import annotations

from collections import Counter
from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from services.api import metrics
from services.api.context import ApiContext, Principal
from services.api.deps import Caller, Context, Sender
from services.api.errors import BadRequest, Conflict, ErrorDetail, NotFound, Unprocessable
from services.api.idempotency import StoredResponse, Verdict, fingerprint, judge
from services.api.outbound import refused_destinations
from services.api.paging import CursorError, decode_cursor, page
from services.api.quick_send import quick_route
from services.api.schemas.common import MAX_BIGINT
from services.api.schemas.messages import (
    BatchAccepted,
    BatchItem,
    BatchTotals,
    MessageAccepted,
    MessageDetail,
    MessageFilters,
    MessageOut,
    MessagePage,
    SendBatch,
    SendMessage,
)
from services.api.store import idempotency as idem_store
from services.api.store import messages as store
from shared.core.models import Channel, Status
from shared.runtime.logs import get_logger
from shared.runtime.metrics import MESSAGES_IN

log = get_logger("api.messages")
router = APIRouter(prefix="/v1/messages", tags=["messages"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Same key + same body within 24 h returns the first response; another body is a 409.",
    ),
]
MessageId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]
# Looked up once: a label lookup per send is a lock and a dict probe on the hot path.
ACCEPTED_BY_API = metrics.ACCEPTED.labels(source="api")
IN_AT_API = MESSAGES_IN.labels(stage="api")


def _new_log(context: ApiContext, message: SendMessage) -> store.NewLog:
    return store.NewLog(
        channel=message.channel.value,
        recipient=message.recipient,
        payload=message.payload,
        priority=message.priority,
        max_attempts=message.max_attempts or context.settings.max_attempts,
        send_at=message.send_at,
        ordering_key=message.ordering_key,
        fallback_channels=tuple(c.value for c in message.fallback_channels),
    )


async def _check_webhooks(
    context: ApiContext, principal: Principal, messages: list[SendMessage], batch: bool
) -> None:
    hooks = [(n, m.recipient) for n, m in enumerate(messages) if m.channel == Channel.WEBHOOK]
    if not hooks:
        return
    refused = await refused_destinations(context.settings, principal.tenant, [url for _, url in hooks])
    if refused:
        details = [
            ErrorDetail(
                loc=["body", "messages", n, "recipient"] if batch else ["body", "recipient"],
                message=f"recipient: {refused[url]}",
            )
            for n, url in hooks
            if url in refused
        ]
        raise Unprocessable(
            "the outbound policy does not allow this webhook URL",
            code="destination_refused",
            details=details,
        )


async def reserve_or_replay(
    conn: Any, context: ApiContext, tenant: str, key: str, request_hash: str
) -> JSONResponse | None:
    """Reserve ``key`` for this request inside its transaction (``None``: go on), or answer what an
    earlier request with the same key stored; the same key with another request is a 409."""
    stored = await idem_store.reserve(conn, tenant, key, request_hash, context.settings.api_idempotency_ttl_s)
    verdict = judge(stored, request_hash)
    if verdict is Verdict.CONFLICT:
        raise Conflict("this Idempotency-Key was used with a different request", code="idempotency_conflict")
    if verdict is Verdict.REPLAY and stored is not None:
        metrics.IDEMPOTENT_REPLAYS.inc()
        return JSONResponse(stored.body, stored.status_code, headers={"Idempotent-Replayed": "true"})
    return None


async def _ingest(
    context: ApiContext,
    principal: Principal,
    path: str,
    request: BaseModel,
    messages: list[SendMessage],
    key: str | None,
    build: Any,
) -> Any:
    """Insert ``messages`` in one statement, honouring the idempotency key, in one transaction."""
    await _check_webhooks(context, principal, messages, batch=path.endswith("/batch"))
    request_hash = fingerprint("POST", path, request.model_dump(mode="json"))
    async with context.db.transaction() as conn:
        if key is not None:
            replay = await reserve_or_replay(conn, context, principal.tenant, key, request_hash)
            if replay is not None:
                return replay
        rows = await store.insert_logs(conn, principal.tenant, [_new_log(context, m) for m in messages])
        response = build(rows)
        if key is not None:
            await idem_store.save(conn, principal.tenant, key, 202, response.model_dump(mode="json"))
    metrics.ACCEPTED.labels(source="api").inc(len(rows))
    MESSAGES_IN.labels(stage="api").inc(len(rows))
    return response


async def send_message(
    body: SendMessage, context: Context, principal: Sender, idempotency_key: IdempotencyKey = None
) -> Response:
    return await accept_one(context, principal, body, idempotency_key)


async def accept_one(
    context: ApiContext, principal: Principal, body: SendMessage, idempotency_key: str | None
) -> Response:
    """The hot path of an urgent message: one statement (one round trip), with or without a key."""
    context.limit(principal, high_priority=body.priority == 0)
    await _check_webhooks(context, principal, [body], batch=False)
    log = _new_log(context, body)
    if idempotency_key is None:
        async with context.db.connection() as conn:
            (row,) = await store.insert_logs(conn, principal.tenant, [log])
    else:
        request_hash = fingerprint("POST", "/v1/messages", body.model_dump(mode="json"))
        answer = {
            "status": "PENDING",
            "channel": body.channel.value,
            "recipient": body.recipient,
            "priority": body.priority,
        }
        async with context.db.connection() as conn:
            outcome = await idem_store.insert_once(
                conn,
                principal.tenant,
                idempotency_key,
                request_hash,
                context.settings.api_idempotency_ttl_s,
                log,
                202,
                answer,
            )
        if outcome.row is None:
            return _replay(outcome.stored, request_hash)
        row = outcome.row
    ACCEPTED_BY_API.inc()
    IN_AT_API.inc()
    accepted = MessageAccepted(
        id=row["id"],
        status="PENDING",
        channel=body.channel,
        recipient=body.recipient,
        priority=body.priority,
        created_at=row["created_at"],
        send_at=row["next_attempt_at"],
    )
    return _json(accepted.model_dump_json(), 202)


# A plain, well-formed request skips FastAPI's dependency solving (services/api/quick_send.py).
router.add_api_route(
    "",
    send_message,
    methods=["POST"],
    status_code=202,
    response_model=MessageAccepted,
    summary="Send one message",
    route_class_override=quick_route(accept_one),
)


def _json(content: bytes | str, status_code: int, headers: dict[str, str] | None = None) -> Response:
    return Response(content, status_code, headers=headers, media_type="application/json")


def _replay(stored: StoredResponse | None, request_hash: str) -> Response:
    """The first answer to this key again (409 when the key came with another request). Rendered
    through its model, so that a kept answer reads exactly as it did the first time."""
    if stored is None or judge(stored, request_hash) is Verdict.CONFLICT:
        raise Conflict("this Idempotency-Key was used with a different request", code="idempotency_conflict")
    metrics.IDEMPOTENT_REPLAYS.inc()
    headers = {"Idempotent-Replayed": "true"}
    if stored.status_code != 202:
        return JSONResponse(stored.body, stored.status_code, headers=headers)
    accepted = MessageAccepted.model_validate(stored.body)
    times = {"created_at": accepted.created_at.astimezone(UTC), "send_at": accepted.send_at.astimezone(UTC)}
    utc = accepted.model_copy(update=times)
    return _json(utc.model_dump_json(), 202, headers)


@router.post("/batch", status_code=202, response_model=BatchAccepted, summary="Send up to 1 000 messages")
async def send_batch(
    body: SendBatch, context: Context, principal: Sender, idempotency_key: IdempotencyKey = None
) -> Any:
    if len(body.messages) > context.settings.api_batch_max:
        raise BadRequest(
            f"at most {context.settings.api_batch_max} messages per batch", code="batch_too_large"
        )
    context.limit(principal, high_priority=all(m.priority == 0 for m in body.messages))

    def build(rows: list[Any]) -> BatchAccepted:
        return batch_accepted(body.messages, rows)

    response = await _ingest(
        context, principal, "/v1/messages/batch", body, body.messages, idempotency_key, build
    )
    if isinstance(response, BatchAccepted):
        log.info("batch_accepted", tenant=principal.tenant, count=response.count)
    return response


def batch_accepted(messages: list[SendMessage], rows: list[Any]) -> BatchAccepted:
    """The batch answer: totals and one result per message, rows being in request order."""
    results = [
        BatchItem(
            index=i,
            id=row["id"],
            status=Status.PENDING,
            channel=message.channel,
            recipient=message.recipient,
            send_at=row["next_attempt_at"],
        )
        for i, (message, row) in enumerate(zip(messages, rows, strict=True))
    ]
    by_channel = Counter(item.channel.value for item in results)
    scheduled = sum(1 for row in rows if row["next_attempt_at"] > row["created_at"])
    return BatchAccepted(
        count=len(rows),
        ids=[item.id for item in results],
        totals=BatchTotals(
            accepted=len(rows), scheduled=scheduled, by_channel=dict(sorted(by_channel.items()))
        ),
        results=results,
    )


@router.get(
    "/{message_id:int}", response_model=MessageDetail, summary="A message with its attempts and receipts"
)
async def get_message(message_id: MessageId, context: Context, principal: Caller) -> MessageDetail:
    async with context.db.connection() as conn:
        row = await store.get_log(conn, principal.tenant, message_id)
        if row is None:
            raise NotFound(f"no message {message_id}")
        attempts = await store.attempts_of(conn, message_id)
        receipts = await store.receipts_of(conn, message_id)
    return MessageDetail(
        **dict(row), attempt_history=[dict(a) for a in attempts], receipts=[dict(r) for r in receipts]
    )


@router.get("", response_model=MessagePage, summary="List messages, newest first")
async def list_messages(
    context: Context, principal: Caller, filters: Annotated[MessageFilters, Query()]
) -> MessagePage:
    try:
        after = decode_cursor(filters.cursor) if filters.cursor else None
    except CursorError as exc:
        raise BadRequest(str(exc), code="invalid_cursor") from exc
    async with context.db.connection() as conn:
        rows = await store.list_logs(conn, principal.tenant, filters, after)
    count, next_cursor = page([r["id"] for r in rows], filters.limit)
    return MessagePage(items=[MessageOut(**dict(r)) for r in rows[:count]], next_cursor=next_cursor)


@router.post(
    "/{message_id:int}/cancel", response_model=MessageOut, summary="Cancel a pending or scheduled message"
)
async def cancel_message(message_id: MessageId, context: Context, principal: Caller) -> MessageOut:
    async with context.db.transaction() as conn:
        cancelled, status = await store.cancel_log(conn, principal.tenant, message_id)
        if status is None:
            raise NotFound(f"no message {message_id}")
        if not cancelled:
            raise Conflict(
                f"message {message_id} is {status}; only PENDING messages can be cancelled",
                code="not_cancellable",
            )
        row = await store.get_log(conn, principal.tenant, message_id)
    assert row is not None
    log.info("message_cancelled", tenant=principal.tenant, log_id=message_id)
    return MessageOut(**dict(row))
