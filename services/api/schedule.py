"""Campaign schedules (pure): cron validation and next run, and the campaign state machine."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped]


class ScheduleError(ValueError):
    """A cron expression or a time zone that cannot be used."""


class CampaignStatus(StrEnum):
    DRAFT = "DRAFT"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class Action(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    SEND = "send"


_ALLOWED: dict[Action, frozenset[CampaignStatus]] = {
    Action.PAUSE: frozenset({CampaignStatus.SCHEDULED, CampaignStatus.RUNNING}),
    Action.RESUME: frozenset({CampaignStatus.PAUSED}),
    Action.CANCEL: frozenset(
        {CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED}
    ),
    Action.SEND: frozenset({CampaignStatus.DRAFT}),
}


class TransitionError(ValueError):
    """An action that the campaign's status does not allow."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {name!r}") from exc


def validate_cron(expression: str) -> str:
    """A five-field cron expression (minute hour day month weekday), normalised for storage."""
    fields = expression.split()
    if len(fields) != 5:
        raise ScheduleError("a cron expression has five fields: minute hour day-of-month month day-of-week")
    normalised = " ".join(fields)
    if not croniter.is_valid(normalised):
        raise ScheduleError(f"invalid cron expression {expression!r}")
    gap = shortest_interval_s(normalised)
    if gap < MIN_CRON_INTERVAL_S:
        raise ScheduleError(
            f"cron {expression!r} runs every {int(gap)} s at times; campaigns run at most every "
            f"{MIN_CRON_INTERVAL_S // 60} minutes (each run sends to the whole list)"
        )
    return normalised


# Each run of a cron campaign sends to its whole contact list: a schedule of every minute would be
# an amplifier (one request, 1 440 sends a day per contact).
MIN_CRON_INTERVAL_S = 15 * 60
_SAMPLED_RUNS = 200


def shortest_interval_s(expression: str) -> float:
    """The shortest time between two consecutive runs among the first runs from a fixed date."""
    runs = croniter(expression, datetime(2030, 1, 1, tzinfo=UTC))
    times: list[datetime] = [runs.get_next(datetime) for _ in range(_SAMPLED_RUNS)]
    return min((b - a).total_seconds() for a, b in itertools.pairwise(times))


def next_run(expression: str, timezone: str, after: datetime) -> datetime:
    """The first run strictly after ``after``, in UTC; the cron is read in ``timezone``."""
    local = after.astimezone(zone(timezone))
    following: datetime = croniter(expression, local).get_next(datetime)
    return following.astimezone(UTC)


def transition(status: CampaignStatus, action: Action) -> None:
    """Raise :class:`TransitionError` unless ``action`` is allowed from ``status``."""
    if status not in _ALLOWED[action]:
        raise TransitionError(f"cannot {action.value} a campaign that is {status.value}")


def resumed_status(start_at: datetime | None, cron: str | None, runs: int, now: datetime) -> CampaignStatus:
    """After a resume: SCHEDULED while nothing has started yet, else RUNNING."""
    if cron is not None:
        return CampaignStatus.RUNNING if runs > 0 else CampaignStatus.SCHEDULED
    if start_at is not None and start_at > now:
        return CampaignStatus.SCHEDULED
    return CampaignStatus.RUNNING


def initial_status(start_at: datetime | None, cron: str | None, now: datetime) -> CampaignStatus:
    if cron is not None or (start_at is not None and start_at > now):
        return CampaignStatus.SCHEDULED
    return CampaignStatus.RUNNING
