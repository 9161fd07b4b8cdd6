"""What the DLQ holds now, for the dashboard: a bounded look with the dlq tool's own reader.

The dashboard reads the queue the way ``switchboard dlq list`` does (services/dlq/browse.py): it takes
at most ``limit`` messages from the head of the DLQ, keeps every one of them, and gives them back in
order. PostgreSQL has no durable record of the letters (the outbox row goes once the letter is
confirmed, a purge touches no log, and poison never had a log), so the queue is the only source that
is right. Reading has the dlq tool's costs: each message read is handed out once more
(``x-delivery-count``), and while a look runs (well under a second for a thousand letters) the messages
it holds are hidden from other readers; so it runs at most every ``DEAD_LETTER_REFRESH_S``, never
when the DLQ has a policy that would drop what is given back (or its policies cannot be checked), and
reports a queue it could not read whole as truncated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.dashboard.panels import dead_letter_reasons
from services.dlq.browse import DlqBrowser
from services.dlq.entries import DlqEntry
from shared.bus.transport import Broker


@dataclass(slots=True)
class DlqLook:
    """One bounded look: the entries read, and how much of the queue they are."""

    depth: int  # ready messages when the look began
    other_readers: int  # consumers that held messages out of sight
    entries: list[DlqEntry] = field(default_factory=list)
    incomplete: int = 0

    def summary(self, limit: int) -> dict[str, Any]:
        scanned = len(self.entries)
        return {
            "depth": self.depth,
            "scanned": scanned,
            "limit": limit,
            "truncated": scanned < self.depth,
            "other_readers": self.other_readers,
            "reasons": dead_letter_reasons(self.entries),
        }


async def look(broker: Broker, limit: int, idle_s: float = 1.0) -> DlqLook:
    """Read at most ``limit`` messages from the head of the DLQ, keeping (giving back) all of them."""
    async with DlqBrowser(broker, window=max(1, min(limit, 1000)), idle_s=idle_s) as browser:
        result = DlqLook(depth=browser.expected, other_readers=browser.other_consumers)
        if limit > 0:
            async for delivery in browser.deliveries():
                result.entries.append(delivery.entry)
                browser.keep(delivery)
                if len(result.entries) >= limit:
                    break
    result.incomplete = browser.incomplete
    return result
