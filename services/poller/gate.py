"""Strict ordering's gate, as a pure function: which open logs may be claimed now (docs/ordering.md).

The claim statement (:data:`services.poller.claims.STRICT_GATE`) is the SQL form of :func:`claimable`;
an integration test checks that the two agree on generated data.

Rules, within one ordering group (:func:`ordering_group`):
- order is by due time (``due_at``: ``send_at`` or the insert time, fixed at creation), then id;
- a PENDING log that is due is claimable when no other open log of its group is PROCESSING and no
  open log of its group comes before it, except a log held by a paused campaign;
- a log scheduled for later comes after one due now (its due time is later), so it never blocks it;
- a log in retry backoff keeps its place: it blocks every later log of its group until it is terminal.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

# paused_logs keeps a paused log's real due time; the log itself waits at next_attempt_at = 'infinity'.
PAUSED = math.inf


class OpenStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"


def ordering_group(tenant: str, ordering_key: str | None, priority: int, recipient_key: str) -> str:
    """The group a log is ordered in (the generated column ``communication_logs.ordering_group``).

    A key given by the user is the tenant's own; without one, the recipient is the group, and an
    urgent message (priority 0) forms a group of its own per recipient, so it never waits for bulk.
    """
    if ordering_key is not None:
        return f"key:{tenant}:{ordering_key}"
    return ("urgent:" if priority == 0 else "") + recipient_key


@dataclass(frozen=True, slots=True)
class OpenLog:
    """An open log as the gate sees it; times are seconds on any common clock."""

    id: int
    group: str
    status: OpenStatus
    due_at: float
    next_attempt_at: float

    @property
    def paused(self) -> bool:
        return self.next_attempt_at == PAUSED

    @property
    def place(self) -> tuple[float, int]:
        return (self.due_at, self.id)


def blocks(earlier: OpenLog, log: OpenLog) -> bool:
    """Whether ``earlier`` (an open log of the same group) keeps ``log`` from being claimed."""
    if earlier.id == log.id or earlier.group != log.group:
        return False
    if earlier.status is OpenStatus.PROCESSING:
        return True
    return earlier.place < log.place and not earlier.paused


def claimable(logs: Iterable[OpenLog], now: float) -> set[int]:
    """The ids of the PENDING, due logs that the strict gate lets through at ``now``."""
    by_group: dict[str, list[OpenLog]] = defaultdict(list)
    for log in logs:
        by_group[log.group].append(log)
    passed: set[int] = set()
    for members in by_group.values():
        for log in members:
            if log.status is not OpenStatus.PENDING or log.next_attempt_at > now:
                continue
            if not any(blocks(other, log) for other in members):
                passed.add(log.id)
    return passed
