"""Every exception inside an adapter becomes a result: a dispatch is always answered, never left unacked.

A payload an adapter cannot turn into a request (``InvalidPayload``: an email header with CR/LF, a
value no encoder takes) is a permanent ``INVALID_PAYLOAD``. Any other exception is a bug or a
surprise of a provider library: a permanent ``ADAPTER_ERROR`` with the exception in the message,
never a retry, because the exception may come after the request was written and a blind resend
could send twice. The operator finds it in the DLQ and requeues it once the cause is fixed.
"""

from __future__ import annotations

import asyncio

from services.sender.adapters.base import (
    ErrorClass,
    ProviderAdapter,
    SendRequest,
    SendResult,
    Stopwatch,
    failure,
)
from shared.core.errors import InvalidPayload
from shared.core.models import OutcomeClass
from shared.runtime.logs import get_logger

log = get_logger("sender")

INVALID_PAYLOAD = ErrorClass(OutcomeClass.PERMANENT, "INVALID_PAYLOAD")
ADAPTER_ERROR = ErrorClass(OutcomeClass.PERMANENT, "ADAPTER_ERROR")


class GuardedAdapter:
    """Wraps an adapter so that its ``send`` always returns a result (a cancellation still propagates)."""

    def __init__(self, inner: ProviderAdapter) -> None:
        self.inner = inner

    async def send(self, request: SendRequest) -> SendResult:
        watch = Stopwatch()
        try:
            return await self.inner.send(request)
        except asyncio.CancelledError:
            raise
        except InvalidPayload as exc:
            return failure(INVALID_PAYLOAD, watch.ms(), exc.message)
        except Exception as exc:
            log.error(
                "adapter_error",
                log_id=request.log_id,
                attempt=request.attempt,
                provider=request.provider,
                error=repr(exc)[:300],
            )
            return failure(ADAPTER_ERROR, watch.ms(), f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        await self.inner.close()
