"""The architecture's invariants, checked after a run has quiesced (used by chaos, demo checks and tests)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

import asyncpg
import orjson


@dataclass
class InvariantReport:
    logs: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    lost: list[int] = field(default_factory=list)  # not terminal after quiescence
    stuck_processing: list[int] = field(default_factory=list)
    duplicate_sends: list[int] = field(
        default_factory=list
    )  # log ids accepted more than once (not as replays)
    sent_without_ledger: list[int] = field(default_factory=list)
    # provider accepted, log not SENT/DELIVERED (nor IN_DOUBT, where an acceptance is the doubt)
    ledger_without_sent: list[int] = field(default_factory=list)
    order_violations: list[dict[str, Any]] = field(default_factory=list)
    failed_without_dead_letter: list[int] = field(default_factory=list)
    duplicate_dead_letters: list[int] = field(default_factory=list)
    dead_letters_for_healthy_logs: list[int] = field(default_factory=list)
    dead_letters: int = 0
    in_doubt: int = 0  # logs held for an operator (IN_DOUBT)
    in_doubt_accepted: int = 0  # ... which the provider had accepted once (the doubt was real)
    poison_dead_letters: int = 0
    ledger_sends: int = 0
    ledger_replays: int = 0
    attempt_rows: int = 0
    attempts_total: int = 0

    VIOLATIONS = (
        "lost",
        "stuck_processing",
        "duplicate_sends",
        "sent_without_ledger",
        "ledger_without_sent",
        "order_violations",
        "failed_without_dead_letter",
        "duplicate_dead_letters",
        "dead_letters_for_healthy_logs",
    )

    def violations(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in self.VIOLATIONS}

    @property
    def ok(self) -> bool:
        return not any(self.violations().values())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in self.VIOLATIONS:  # keep reports readable: counts plus the first examples
            data[name] = {"count": len(getattr(self, name)), "examples": getattr(self, name)[:20]}
        return data


# Where strict order holds (migration 0011, services/poller/gate.py): per ordering group, by due time then id.
GroupPlaces = Mapping[int, tuple[str, datetime, int]]


async def ordering_places(pool: asyncpg.Pool) -> dict[int, tuple[str, datetime, int]]:
    """log id -> (ordering group, due time, id): the order the strict gate keeps."""
    rows = await pool.fetch("SELECT id, ordering_group, due_at FROM communication_logs")
    return {r["id"]: (r["ordering_group"], r["due_at"], r["id"]) for r in rows}


def order_violations(
    ledger: list[dict[str, Any]], strict_recipients: set[str] | None = None, places: GroupPlaces | None = None
) -> list[dict[str, Any]]:
    """Accepted sends must reach the provider in order: per ordering group by due time then id when
    ``places`` is given (see :func:`ordering_places`), else per recipient by log id."""
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in ledger:
        if not row["replay"] and row["log_id"] is not None:
            group = places[row["log_id"]][0] if places is not None else row["recipient"]
            by_group[group].append(row)
    found = []
    for group, rows in by_group.items():
        if strict_recipients is not None and rows[0]["recipient"] not in strict_recipients:
            continue
        rows.sort(key=lambda r: r["received_at"])
        for earlier, later in pairwise(rows):
            if place(later, places) < place(earlier, places):
                found.append(
                    {
                        "recipient": rows[0]["recipient"],
                        "sent_first": earlier["log_id"],
                        "sent_after": later["log_id"],
                    }
                    | ({"group": group} if places is not None else {})
                )
    return found


def place(row: dict[str, Any], places: GroupPlaces | None) -> tuple[Any, ...]:
    return places[row["log_id"]][1:] if places is not None else (row["log_id"],)


async def check(
    pool: asyncpg.Pool,
    ledger: list[dict[str, Any]],
    dead_letter_bodies: list[bytes],
    strict: bool,
) -> InvariantReport:
    report = InvariantReport()
    rows = await pool.fetch("SELECT id, status, attempts, recipient FROM communication_logs")
    report.logs = len(rows)
    report.by_status = dict(Counter(r["status"] for r in rows))
    status = {r["id"]: r["status"] for r in rows}
    report.lost = sorted(i for i, s in status.items() if s in ("PENDING", "PROCESSING"))
    report.stuck_processing = sorted(i for i, s in status.items() if s == "PROCESSING")
    report.attempts_total = sum(r["attempts"] for r in rows)
    report.attempt_rows = await pool.fetchval("SELECT count(*) FROM delivery_attempts")

    sends = [r for r in ledger if not r["replay"] and r["log_id"] is not None]
    report.ledger_sends = len(sends)
    report.ledger_replays = len(ledger) - len(sends)
    per_log = Counter(r["log_id"] for r in sends)
    report.duplicate_sends = sorted(i for i, n in per_log.items() if n > 1)
    delivered_like = {i for i, s in status.items() if s in ("SENT", "DELIVERED")}
    report.sent_without_ledger = sorted(delivered_like - set(per_log))
    held = {i for i, s in status.items() if s == "IN_DOUBT"}
    report.in_doubt = len(held)
    report.in_doubt_accepted = len(held & set(per_log))
    report.ledger_without_sent = sorted(set(per_log) - delivered_like - held)
    if strict:
        report.order_violations = order_violations(ledger, places=await ordering_places(pool))

    letters: Counter[int] = Counter()
    for body in dead_letter_bodies:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            report.poison_dead_letters += 1
            continue
        if isinstance(data, dict) and "reason" in data and "log_id" in data and "dead_lettered_at" in data:
            letters[int(data["log_id"])] += 1
        else:
            report.poison_dead_letters += 1
    report.dead_letters = sum(letters.values())
    failed = {i for i, s in status.items() if s in ("FAILED", "BOUNCED", "IN_DOUBT")}
    report.failed_without_dead_letter = sorted(failed - set(letters))
    report.duplicate_dead_letters = sorted(i for i, n in letters.items() if n > 1)
    report.dead_letters_for_healthy_logs = sorted(set(letters) - failed)
    return report
