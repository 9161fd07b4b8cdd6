"""Which DLQ entries a command acts on (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.dlq.entries import DlqEntry, EntryKind

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``7d``, ``1w`` or a combination such as ``1d12h``."""
    cleaned = text.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not parts or _DURATION.sub("", cleaned).strip():
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 2h, 7d, 1w)")
    return timedelta(seconds=sum(float(n) * _UNITS[unit] for n, unit in parts))


def _lower(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.lower() for v in values)


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """Every given criterion must hold; within one criterion any of the values may match.

    An entry whose dead-lettering time is unknown never matches an age criterion: a command does
    not act on what it cannot date.
    """

    log_ids: frozenset[int] = field(default_factory=frozenset)
    keys: frozenset[str] = field(default_factory=frozenset)
    kinds: frozenset[EntryKind] = field(default_factory=frozenset)
    reasons: frozenset[str] = field(default_factory=frozenset)
    error_classes: frozenset[str] = field(default_factory=frozenset)
    error_codes: frozenset[str] = field(default_factory=frozenset)
    channels: frozenset[str] = field(default_factory=frozenset)
    providers: frozenset[str] = field(default_factory=frozenset)
    tenants: frozenset[str] = field(default_factory=frozenset)
    campaigns: frozenset[int] = field(default_factory=frozenset)
    older_than: timedelta | None = None
    newer_than: timedelta | None = None

    @classmethod
    def build(
        cls,
        *,
        ids: Iterable[str] = (),
        kinds: Iterable[str] = (),
        reasons: Iterable[str] = (),
        error_classes: Iterable[str] = (),
        error_codes: Iterable[str] = (),
        channels: Iterable[str] = (),
        providers: Iterable[str] = (),
        tenants: Iterable[str] = (),
        campaigns: Iterable[int] = (),
        older_than: str | None = None,
        newer_than: str | None = None,
    ) -> EntryFilter:
        """From command-line values; an id is a log id (digits) or a message key (``dl-...``, ``sha-...``)."""
        id_list = list(ids)
        return cls(
            log_ids=frozenset(int(i) for i in id_list if i.isdigit()),
            keys=frozenset(i for i in id_list if not i.isdigit()),
            kinds=frozenset(EntryKind(k) for k in kinds),
            reasons=_lower(reasons),
            error_classes=_lower(error_classes),
            error_codes=frozenset(c.upper() for c in error_codes),
            channels=_lower(channels),
            providers=_lower(providers),
            tenants=frozenset(tenants),
            campaigns=frozenset(campaigns),
            older_than=parse_duration(older_than) if older_than else None,
            newer_than=parse_duration(newer_than) if newer_than else None,
        )

    def is_empty(self) -> bool:
        return self == EntryFilter()

    def matches(self, entry: DlqEntry, now: datetime) -> bool:
        if (self.log_ids or self.keys) and not (entry.log_id in self.log_ids or entry.key in self.keys):
            return False
        checks: list[tuple[frozenset[str] | frozenset[int] | frozenset[EntryKind], object]] = [
            (self.kinds, entry.kind),
            (self.reasons, entry.reason.lower()),
            (self.error_classes, (entry.error_class or "").lower()),
            (self.error_codes, (entry.error_code or "").upper()),
            (self.channels, (entry.channel or "").lower()),
            (self.providers, (entry.provider or "").lower()),
            (self.tenants, entry.tenant),
            (self.campaigns, entry.campaign_id),
        ]
        if any(wanted and value not in wanted for wanted, value in checks):
            return False
        if self.older_than is not None or self.newer_than is not None:
            if entry.dead_lettered_at is None:
                return False
            age = now - entry.dead_lettered_at
            if self.older_than is not None and age < self.older_than:
                return False
            if self.newer_than is not None and age > self.newer_than:
                return False
        return True
