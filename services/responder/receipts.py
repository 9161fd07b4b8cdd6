"""What a delivery report does to a log (pure); the responder applies it in the batch's transaction.

Receipts and outcomes may arrive in any order, and any number of times:

- every receipt is recorded in ``delivery_receipts`` (unique on log, attempt and status: a repeat is
  a no-op);
- DELIVERED makes a SENT log DELIVERED; it also settles a log still waiting for a retry (PENDING), or
  whose later attempt is in flight, because the provider did deliver it;
- BOUNCED / FAILED makes a SENT log (of that attempt) BOUNCED / FAILED, with a dead letter;
- a final receipt for the attempt in flight (PROCESSING: the outcome has not been applied yet) is
  only recorded: when the outcome arrives, the responder finds it (``LogRow.early_receipt``) and
  applies both at once;
- anything else (a log already final, a stale attempt's failure, progress reports) is only recorded.

Before all that, a receipt must belong to the attempt it names (:func:`sent_by`): the provider that
sent that attempt, with the vendor reference it answered (when it gave one). Anything else (another
provider's report, a made-up reference, an attempt never sent) is neither recorded nor applied. A
report for the attempt in flight cannot be checked yet: it is recorded, and applied only if the
outcome that arrives names the same provider and reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.models import FINAL_RECEIPTS, ReceiptMessage, ReceiptStatus, Status


@dataclass(frozen=True, slots=True)
class RecordOnly:
    why: str


@dataclass(frozen=True, slots=True)
class Deliver:
    was_sent: bool  # False: the log never got to SENT (counts as sent and delivered at once)


@dataclass(frozen=True, slots=True)
class Undeliverable:
    status: Status  # FAILED or BOUNCED


ReceiptDecision = RecordOnly | Deliver | Undeliverable


@dataclass(frozen=True, slots=True)
class SentAttempt:
    """Who sent one attempt, as its outcome said (``delivery_attempts``)."""

    provider: str | None
    vendor_ref: str | None


def sent_by(provider: str | None, vendor_ref: str | None, attempt: SentAttempt) -> bool:
    if provider is None or attempt.provider != provider:
        return False
    return attempt.vendor_ref is None or attempt.vendor_ref == vendor_ref


SETTLED = frozenset({Status.DELIVERED, Status.FAILED, Status.BOUNCED, Status.CANCELLED, Status.IN_DOUBT})


def decide_receipt(status: Status, attempts: int, receipt: ReceiptMessage) -> ReceiptDecision:
    if receipt.status not in FINAL_RECEIPTS:
        return RecordOnly(f"progress report ({receipt.provider_status or receipt.status.value})")
    if receipt.attempt > attempts:
        return RecordOnly(f"receipt for attempt {receipt.attempt}, log is at attempt {attempts}")
    if status in SETTLED:
        return RecordOnly(f"log is {status}")
    if receipt.status == ReceiptStatus.DELIVERED:
        if status == Status.PROCESSING and receipt.attempt == attempts:
            return RecordOnly("outcome not applied yet: applied with it")
        return Deliver(was_sent=status == Status.SENT)
    if receipt.attempt != attempts:
        return RecordOnly(f"failure report of attempt {receipt.attempt}, log is at attempt {attempts}")
    if status == Status.SENT:
        return Undeliverable(Status.BOUNCED if receipt.status == ReceiptStatus.BOUNCED else Status.FAILED)
    return RecordOnly(
        "outcome not applied yet: applied with it" if status == Status.PROCESSING else f"log is {status}"
    )
