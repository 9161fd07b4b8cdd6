"""Counting the DLQ by reason, channel, provider, error code and age (pure)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.dlq.entries import DlqEntry

AGE_BUCKETS: tuple[tuple[timedelta, str], ...] = (
    (timedelta(hours=1), "< 1h"),
    (timedelta(days=1), "1h - 24h"),
    (timedelta(days=7), "1d - 7d"),
    (timedelta(days=30), "7d - 30d"),
)
OLDEST_BUCKET = "> 30d"
UNKNOWN_AGE = "unknown"


def age_bucket(dead_lettered_at: datetime | None, now: datetime) -> str:
    if dead_lettered_at is None:
        return UNKNOWN_AGE
    age = now - dead_lettered_at
    for limit, name in AGE_BUCKETS:
        if age < limit:
            return name
    return OLDEST_BUCKET


@dataclass(slots=True)
class DlqStats:
    total: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)
    by_provider: Counter[str] = field(default_factory=Counter)
    by_error_code: Counter[str] = field(default_factory=Counter)
    by_age: Counter[str] = field(default_factory=Counter)
    oldest: datetime | None = None
    newest: datetime | None = None

    def add(self, entry: DlqEntry, now: datetime) -> None:
        self.total += 1
        self.by_kind[entry.kind.value] += 1
        self.by_reason[entry.reason] += 1
        self.by_channel[entry.channel or "-"] += 1
        self.by_provider[entry.provider or "-"] += 1
        self.by_error_code[entry.error_code or "-"] += 1
        self.by_age[age_bucket(entry.dead_lettered_at, now)] += 1
        when = entry.dead_lettered_at
        if when is not None:
            self.oldest = when if self.oldest is None or when < self.oldest else self.oldest
            self.newest = when if self.newest is None or when > self.newest else self.newest

    def dimensions(self) -> dict[str, Counter[str]]:
        return {
            "kind": self.by_kind,
            "reason": self.by_reason,
            "channel": self.by_channel,
            "provider": self.by_provider,
            "error code": self.by_error_code,
            "age": self.by_age,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            **{
                name.replace(" ", "_"): dict(counter.most_common())
                for name, counter in self.dimensions().items()
            },
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "newest": self.newest.isoformat() if self.newest else None,
        }
