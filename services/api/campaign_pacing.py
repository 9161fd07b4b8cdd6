"""Pacing a campaign (pure): the due time of each of its messages, a random gap apart.

A paced campaign's logs are not all due at once: each is due a gap after the previous one of the
same sender identity, the gap drawn inside the preset's range (shared.core.routing.PACING_RANGES_S). The
schedule starts at the identity's next free slot (``campaign_pacing``), so that two paced campaigns
of one identity queue behind each other instead of interleaving. The last due time is the ETA.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.core.routing import PACING_RANGES_S, Pacing, pacing_gap


@dataclass(frozen=True, slots=True)
class Schedule:
    due: list[datetime]  # one per message, in order
    next_slot: datetime  # when the identity's next message may go


def schedule(start: datetime, count: int, preset: Pacing, rng: random.Random) -> Schedule:
    """``count`` due times from ``start``, consecutive ones a gap of ``preset`` apart."""
    low, high = PACING_RANGES_S[preset]
    due: list[datetime] = []
    at = start
    for _ in range(count):
        due.append(at)
        at += timedelta(seconds=pacing_gap(low, high, rng))
    return Schedule(due, at)


def sender_identity(channel: str, content: Mapping[str, Any]) -> str:
    """Who a campaign's messages are from: the template's ``from`` (or ``sender``), else the channel's
    default sender; pacing is kept per identity."""
    for key in ("from", "sender"):
        value = content.get(key)
        if isinstance(value, str) and value.strip():
            return f"{channel}:{value.strip()}"
    return f"{channel}:default"
