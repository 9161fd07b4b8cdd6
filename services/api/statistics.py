"""Statistics (pure): the time range to report on, and the merge of outcome and attempt figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from services.api.schemas.stats import StatsRow

DEFAULT_RANGE = timedelta(hours=24)


def resolve_range(
    start: datetime | None, end: datetime | None, now: datetime, max_days: int
) -> tuple[datetime, datetime]:
    """[start, end): by default the 24 hours before ``now``; raises ValueError when it makes no sense."""
    end = end or (start + DEFAULT_RANGE if start is not None and start + DEFAULT_RANGE < now else now)
    start = start or end - DEFAULT_RANGE
    if start >= end:
        raise ValueError("`start` must be before `end`")
    if end - start > timedelta(days=max_days):
        raise ValueError(f"the range may span at most {max_days} days")
    return start, end


def merge(outcomes: Sequence[Mapping[str, Any]], attempts: Sequence[Mapping[str, Any]]) -> list[StatsRow]:
    """One row per key present in either; figures without data are zero (latencies null)."""
    by_key: dict[str, dict[str, Any]] = {}
    for row in outcomes:
        by_key.setdefault(row["key"], {}).update(row)
    for row in attempts:
        by_key.setdefault(row["key"], {}).update(row)
    rows = []
    for key in sorted(by_key):
        data = by_key[key]
        total_attempts = int(data.get("attempts") or 0)
        retries = int(data.get("retries") or 0)
        succeeded = int(data.get("attempts_succeeded") or 0)
        rows.append(
            StatsRow(
                key=key,
                total=int(data.get("total") or 0),
                pending=int(data.get("pending") or 0),
                sent=int(data.get("sent") or 0),
                delivered=int(data.get("delivered") or 0),
                failed=int(data.get("failed") or 0),
                bounced=int(data.get("bounced") or 0),
                cancelled=int(data.get("cancelled") or 0),
                in_doubt=int(data.get("in_doubt") or 0),
                receipts_overdue=int(data.get("receipts_overdue") or 0),
                attempts=total_attempts,
                attempts_succeeded=succeeded,
                attempts_failed=total_attempts - succeeded,
                success_rate=round(succeeded / total_attempts, 4) if total_attempts else 0.0,
                fallbacks=int(data.get("fallbacks") or 0),
                retry_rate=round(retries / total_attempts, 4) if total_attempts else 0.0,
                latency_avg_ms=_float(data.get("latency_avg_ms")),
                latency_p95_ms=_float(data.get("latency_p95_ms")),
                cost=round(float(data.get("cost") or 0.0), 6),
            )
        )
    return rows


def _float(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)
